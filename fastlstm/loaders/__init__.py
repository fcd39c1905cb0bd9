"""Loaders: each turns one framework's LSTM into fastlstm's layers (``fastlstm._spec.Layer``).

``torch`` (nn.LSTM / nn.LSTMCell, modules holding them, state dicts and their files,
TorchScript), ``keras`` (Keras 3 and Keras 2 layers and saved files), ``tf1`` (tf.compat.v1
cell variables and checkpoints) and ``onnx`` (LSTM nodes and chains of them); the gate orders
of all of them live in ``_layouts``. Each module has ``find(source)`` for
``fastlstm.inspect``. The public entry points are the ``from_*`` classmethods of
``fastlstm.LSTM`` / ``fastlstm.LSTMCell``; ``load`` below picks one by the source's kind.

A loader imports its framework only when it is handed that framework's object.
"""
import importlib
import os
from collections.abc import Mapping

# kind -> the keyword its loader takes to pick one LSTM out of many
SELECTORS = {"torch": "module", "keras": "layer", "onnx": "node", "tf1": "scope"}

_SUFFIXES = {".onnx": "onnx", ".pt": "torch", ".pth": "torch", ".bin": "torch",
             ".safetensors": "torch", ".keras": "keras", ".h5": "keras", ".hdf5": "keras"}


def kind_of(source):
    """Which loader reads ``source``: "torch", "keras", "onnx" or "tf1"."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            if os.path.exists(os.path.join(path, "saved_model.pb")):
                return "keras"
            if os.path.exists(os.path.join(path, "checkpoint")):
                return "tf1"
            raise ValueError(f"{path!r} is a directory that is neither a SavedModel (no "
                             f"saved_model.pb) nor a TF1 checkpoint directory (no 'checkpoint')")
        suffix = os.path.splitext(path)[1].lower()
        if suffix in _SUFFIXES:
            return _SUFFIXES[suffix]
        if suffix == ".index" or os.path.exists(path + ".index"):
            return "tf1"
        if not os.path.exists(path):
            raise ValueError(f"{path!r} does not exist")
        raise ValueError(f"cannot tell which framework wrote {path!r}: expected a .onnx, "
                         f".pt/.pth/.bin/.safetensors, .keras/.h5 file, a SavedModel directory "
                         f"or a TF1 checkpoint prefix")
    root = type(source).__module__.split(".")[0]
    if root == "torch":
        return "torch"
    if root in ("keras", "tf_keras", "tensorflow"):
        return "keras"
    if root == "onnx":
        return "onnx"
    if isinstance(source, Mapping):
        return "torch"
    raise TypeError(f"expected a model file path or a torch, Keras or ONNX object, "
                    f"got {type(source).__name__}")


def module_for(kind):
    return importlib.import_module(f"{__name__}.{kind}")


def load(source, name=None):
    """The model in ``source`` (see ``kind_of``), ``name`` picking one LSTM among several as
    ``fastlstm.inspect`` lists them."""
    from ..models import LSTM

    kind = kind_of(source)
    # By name, so that only the loader asked for needs to exist.
    loader = getattr(LSTM, {"torch": "from_torch", "keras": "from_keras", "onnx": "from_onnx",
                            "tf1": "from_tf1_checkpoint"}[kind])
    return loader(source, **({SELECTORS[kind]: name} if name is not None else {}))
