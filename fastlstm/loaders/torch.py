"""PyTorch: ``nn.LSTM`` / ``nn.LSTMCell``, any module holding them, state dicts, their files
(``.pt`` / ``.pth`` / ``.bin`` from ``torch.save``, ``.safetensors``) and TorchScript.

PyTorch's names and layouts are fastlstm's own (gate order i, f, g, o; ``bias_ih`` and
``bias_hh`` kept apart; ``weight_hr`` for ``proj_size``), so this loader only reads the
structure out of the parameter names and shapes: ``{prefix}weight_hh_l0`` of shape (4H, out)
is an LSTM, (3H, H) a GRU, (H, H) an RNN; without ``_l{k}`` they are cells.

Sources, and what each costs:

- a module (``nn.LSTM``, a model holding LSTMs, a ``torch.jit`` scripted or traced module):
  ``module="encoder.rnn"`` picks one by its dotted name in ``named_modules()``; a model with
  exactly one LSTM needs no name. ``batch_first`` is the module's own (a traced module keeps
  it in its graph).
- a state dict (tensors or NumPy arrays; nested dicts are joined with "."): ``module=`` is the
  dotted name the keys start with (``prefix=`` the raw key prefix). It has no ``batch_first``:
  the default is False, as ``nn.LSTM``'s.
- ``.pt`` / ``.pth`` / ``.bin``: a TorchScript archive is opened with ``torch.jit.load``;
  anything else with ``torch.load(weights_only=True, mmap=True)``, which maps the file and
  reads only the chosen LSTM's tensors. A pickled whole module is refused: unpickling runs code
  from the file; ``trust_pickle=True`` allows it for files you trust.
- ``.safetensors``: read with the ``safetensors`` package (no torch): the header for the
  names and shapes, then only the chosen LSTM's tensors.
"""
import os
import re
import sys
import zipfile
from collections.abc import Mapping

import numpy as np

from .._checks import check_bool
from .._spec import CellOptions, check_sizes, make_layer
from .found import Found

_LSTM_KEY = re.compile(r"^(.*?)(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")
_CELL_KEY = re.compile(r"^(.*?)(weight_ih|weight_hh|bias_ih|bias_hh)$")

# the recurrent modules a state dict can hold, by the rows of weight_hh per column
_WHY_NOT = {
    "GRU": "a GRU (reset and update gates, no cell state) is not an LSTM",
    "RNN": "an Elman RNN (one tanh/relu layer, no gates) is not an LSTM",
    "GRUCell": "a GRU cell (reset and update gates, no cell state) is not an LSTM cell",
    "RNNCell": "an Elman RNN cell (one tanh/relu layer, no gates) is not an LSTM cell",
}
_RECURRENT = ("LSTM", "LSTMCell", "GRU", "RNN", "GRUCell", "RNNCell")
_TORCH_SUFFIXES = (".pt", ".pth", ".bin")


def _to_numpy(value, name):
    if hasattr(value, "detach"):  # a torch tensor: torch is imported already
        if getattr(value.dtype, "is_complex", False) or not (
                value.dtype.is_floating_point or str(value.dtype).startswith(("torch.int",
                                                                            "torch.uint"))):
            raise TypeError(f"state dict entry {name!r} must hold real numbers, got "
                            f"{value.dtype}")
        return value.detach().to("cpu").float().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"state dict entry {name!r} must be a tensor or a real array, "
                        f"got {type(value).__name__}")
    return arr


def _shape(value):
    shape = getattr(value, "shape", None)
    if shape is None or not all(isinstance(n, (int, np.integer)) for n in tuple(shape)):
        return None
    return tuple(int(n) for n in shape)


class _Tensors:
    """Parameter names and shapes of a state dict or file; values read only when asked."""

    def __init__(self, shapes, read, label):
        self.shapes = shapes    # name -> shape tuple
        self.read = read        # name -> np.ndarray
        self.label = label      # "the state dict", "PyTorch file 'x.pt'", ...


def _flatten(mapping, prefix, out, depth=0):
    """Nested mappings (a training checkpoint's {"model": state_dict, ...}) joined with ".";
    bounded, since no checkpoint nests deeper and a crafted one could."""
    if depth > 8:
        return
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten(value, name + ".", out, depth + 1)
        elif _shape(value) is not None:
            out[name] = value


def _from_mapping(mapping, label="the state dict"):
    values = {}
    _flatten(mapping, "", values)
    return _Tensors({k: _shape(v) for k, v in values.items()},
                    lambda k: _to_numpy(values[k], k), label)


def _from_safetensors(path):
    from safetensors import safe_open

    label = f"safetensors file {path!r}"
    try:
        handle = safe_open(path, framework="numpy")
        shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    except Exception as exc:  # safetensors raises its own SafetensorError (and OSError)
        raise ValueError(f"cannot read {label}: {type(exc).__name__}: {exc}") from None

    def read(key):
        try:
            return handle.get_tensor(key)
        except Exception as exc:
            raise ValueError(f"cannot read tensor {key!r} of {label}: "
                             f"{type(exc).__name__}: {exc}") from None

    return _Tensors(shapes, read, label)


def _is_torchscript(path):
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n or n.endswith("/constants.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def _from_torch_file(path, trust_pickle):
    import torch

    label = f"PyTorch file {path!r}"
    if _is_torchscript(path):
        try:
            return torch.jit.load(path, map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError and its own C++ errors
            raise ValueError(f"cannot read TorchScript {label}: {type(exc).__name__}: "
                             f"{exc}") from None
    try:
        # mmap: tensors stay in the file until the chosen ones are converted
        obj = torch.load(path, map_location="cpu", weights_only=True,
                         mmap=zipfile.is_zipfile(path))
    except Exception as exc:
        if "Weights only load failed" in str(exc):
            if not trust_pickle:
                raise ValueError(
                    f"{label} holds pickled Python objects (a whole nn.Module, say), not just "
                    f"tensors: unpickling it would run code from the file. Save "
                    f"model.state_dict() instead, or pass trust_pickle=True if you trust the "
                    f"file") from None
            try:
                obj = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as exc2:
                raise ValueError(f"cannot read {label}: {type(exc2).__name__}: "
                                 f"{exc2}") from None
        else:
            raise ValueError(f"cannot read {label}: {type(exc).__name__}: "
                             f"{str(exc)[:300]}") from None
    if isinstance(obj, Mapping):
        return _from_mapping(obj, label)
    if isinstance(obj, torch.nn.Module):
        return obj
    raise ValueError(f"{label} holds a {type(obj).__name__}, not a state dict or a module")


def _open(source, trust_pickle=False):
    """A torch module (live, scripted or traced) or a ``_Tensors``."""
    trust_pickle = check_bool(trust_pickle, "trust_pickle")
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise ValueError(f"PyTorch file {path!r} does not exist")
        suffix = os.path.splitext(path)[1].lower()
        if suffix == ".safetensors":
            return _from_safetensors(path)
        if suffix in _TORCH_SUFFIXES:
            return _from_torch_file(path, trust_pickle)
        raise ValueError(f"{path!r}: expected a .pt/.pth/.bin (torch.save, TorchScript) or "
                         f".safetensors file")
    torch = sys.modules.get("torch")  # a module means torch is imported already
    if torch is not None and isinstance(source, torch.nn.Module):
        return source
    if isinstance(source, Mapping):
        return _from_mapping(source)
    raise TypeError(f"expected a torch.nn.Module, a state dict (a mapping of parameter names "
                    f"to tensors or arrays) or the path of a .pt/.pth/.bin/.safetensors file, "
                    f"got {type(source).__name__}")


# --- what a source holds ----------------------------------------------------------------

class _Entry:
    """One recurrent module of a source: its type ("LSTM", "GRUCell", ...), dotted name,
    the prefix of its keys, and its parameter shapes (keys without the prefix)."""

    def __init__(self, type_, name, prefix, shapes, tensors, batch_first=None):
        self.type, self.name, self.prefix = type_, name, prefix
        self.shapes, self.tensors, self.batch_first = shapes, tensors, batch_first
        # the prefix its keys have in the whole model's state dict
        self.key_prefix = prefix or (f"{name}." if name else "")


def _classify(shapes, layered):
    """The recurrent type of one group of parameters, by weight_hh's shape."""
    hh = shapes.get("weight_hh_l0" if layered else "weight_hh")
    suffix = "" if layered else "Cell"
    if layered and "weight_hr_l0" in shapes:
        return "LSTM"
    if hh is None or len(hh) != 2 or hh[1] == 0:
        return "LSTM" + suffix   # incomplete: the LSTM reader says what is missing
    for rows, kind in ((4, "LSTM"), (3, "GRU"), (1, "RNN")):
        if hh[0] == rows * hh[1]:
            return kind + suffix
    return "LSTM" + suffix


def _tensor_entries(tensors):
    groups = {}
    for key in tensors.shapes:
        m = _LSTM_KEY.match(key) or _CELL_KEY.match(key)
        if m:
            layered = m.re is _LSTM_KEY
            groups.setdefault((m.group(1), layered), {})[key[len(m.group(1)):]] = \
                tensors.shapes[key]
    entries = []
    for (prefix, layered), shapes in sorted(groups.items()):
        name = prefix[:-1] if prefix.endswith(".") else prefix
        entries.append(_Entry(_classify(shapes, layered), name, prefix, shapes, tensors))
    return entries


def _traced_batch_first(module):
    """batch_first of a traced nn.LSTM, read from the aten::lstm call in its graph."""
    try:
        for node in module.graph.nodes():
            if node.kind() == "aten::lstm" and len(list(node.inputs())) == 9:
                value = node.inputsAt(8).toIValue()
                return value if isinstance(value, bool) else None
    except (RuntimeError, AttributeError):
        pass
    return None


def _module_entries(root):
    import torch

    entries = []
    for name, sub in root.named_modules():
        type_ = next((t for t in _RECURRENT if isinstance(sub, getattr(torch.nn, t))), None)
        if type_ is None and isinstance(sub, torch.jit.ScriptModule):
            type_ = getattr(sub, "original_name", None)
            type_ = type_ if type_ in _RECURRENT else None
        if type_ is None:
            continue
        tensors = _from_mapping(sub.state_dict(), f"module {name!r}")
        batch_first = getattr(sub, "batch_first", None) if not type_.endswith("Cell") else None
        if batch_first is None and not type_.endswith("Cell") and \
                isinstance(sub, torch.jit.ScriptModule):
            batch_first = _traced_batch_first(sub)
        entries.append(_Entry(type_, name, "", dict(tensors.shapes), tensors,
                              bool(batch_first) if batch_first is not None else None))
    return entries


def _entries(opened):
    return _tensor_entries(opened) if isinstance(opened, _Tensors) else _module_entries(opened)


def _label(opened):
    if isinstance(opened, _Tensors):
        return opened.label
    return f"the {type(opened).__name__} module"


def _choose(opened, want, module, prefix):
    """The one entry of type ``want`` ("LSTM" or "LSTMCell") that module= / prefix= name."""
    entries = _entries(opened)
    label = _label(opened)
    listing = [f"{e.name!r} ({e.type})" for e in entries]
    if module is not None and prefix is not None:
        raise TypeError("pass module= or prefix=, not both")
    if module is not None or prefix is not None:
        if module is not None and not isinstance(module, str):
            raise TypeError(f"module must be a dotted module name (str), got "
                            f"{type(module).__name__}")
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        matches = [e for e in entries if (e.name == module if module is not None
                                          else e.key_prefix == prefix)]
        asked = f"module={module!r}" if module is not None else f"prefix={prefix!r}"
        if not matches:
            what = "prefixes found: " + str(sorted(e.key_prefix for e in entries)) \
                if prefix is not None else "recurrent modules: " + ", ".join(listing)
            raise ValueError(f"{asked} names no recurrent module of {label}; "
                             f"{what if entries else 'it holds none'}")
        mine = [e for e in matches if e.type == want]
        if not mine:
            e = matches[0]
            if e.type in _WHY_NOT:
                raise ValueError(f"{asked} is an nn.{e.type}, which fastlstm.{want} cannot "
                                 f"load: {_WHY_NOT[e.type]}")
            raise ValueError(f"{asked} is an nn.{e.type}: load it with "
                             f"fastlstm.{e.type}.from_torch")
        return mine[0]
    mine = [e for e in entries if e.type == want]
    if len(mine) == 1:
        return mine[0]
    if not mine:
        if len(entries) == 1 and entries[0].type in _WHY_NOT:
            e = entries[0]
            raise ValueError(f"{label} holds an nn.{e.type} ({e.name!r}), which fastlstm.{want} "
                             f"cannot load: {_WHY_NOT[e.type]}")
        others = f"; it holds {', '.join(listing)}" if entries else ""
        raise ValueError(f"{label} holds no nn.{want} (no {want} parameters such as "
                         f"{'weight_ih_l0' if want == 'LSTM' else 'weight_ih'}){others}")
    mine.sort(key=lambda e: e.name)
    raise ValueError(f"{label} holds {len(mine)} nn.{want} modules {[e.name for e in mine]} "
                     f"(key prefixes {[e.key_prefix for e in mine]}); choose one with "
                     f"module=...")


def _check_given(config, name, inferred):
    if name in config and config[name] is not None and config[name] != inferred:
        raise ValueError(f"{name}={config[name]!r} was given but the weights say {inferred!r}")


_LSTM_CONFIG = {"batch_first", "prefix", "module", "trust_pickle", "input_size", "hidden_size",
                "num_layers", "bidirectional", "proj_size", "bias"}


def _layers_of(entry, config):
    """(layers, bidirectional) of an LSTM entry; sizes given in ``config`` are checked."""
    where = entry.key_prefix
    mine = {}
    for key in entry.shapes:
        m = _LSTM_KEY.match(key)
        if m:
            mine[(m.group(2), int(m.group(3)), bool(m.group(4)))] = key
    num_layers = max(k for _, k, _ in mine) + 1
    bidirectional = any(rev for *_, rev in mine)
    D = 2 if bidirectional else 1
    for k in range(num_layers):
        for rev in (False, True)[:D]:
            for name in ("weight_ih", "weight_hh"):
                if (name, k, rev) not in mine:
                    raise ValueError(f"state dict is missing {where}{name}_l{k}"
                                     f"{'_reverse' if rev else ''}")
    shapes = {t: entry.shapes[key] for t, key in mine.items()}
    w_hh0, w_ih0 = shapes[("weight_hh", 0, False)], shapes[("weight_ih", 0, False)]
    if len(w_hh0) != 2 or w_hh0[0] % 4 or len(w_ih0) != 2:
        raise ValueError(f"{where}weight_hh_l0 must be (4*hidden, out) and weight_ih_l0 "
                         f"(4*hidden, input); got {w_hh0} and {w_ih0}")
    hidden_size = w_hh0[0] // 4
    proj_size = w_hh0[1] if ("weight_hr", 0, False) in shapes else 0
    has_bias = ("bias_ih", 0, False) in shapes
    for name, value in (("input_size", w_ih0[1]), ("hidden_size", hidden_size),
                        ("num_layers", num_layers), ("bidirectional", bidirectional),
                        ("proj_size", proj_size), ("bias", has_bias)):
        _check_given(config, name, value)
    check_sizes(w_ih0[1], hidden_size)
    opts = CellOptions.make(hidden_size, proj_size=proj_size)
    # every shape is checked before any tensor is read, so a crafted header cannot make us
    # read (or allocate) more than this LSTM's weights
    out = proj_size or hidden_size
    for (name, k, rev), shape in shapes.items():
        want = {"weight_ih": (4 * hidden_size, w_ih0[1] if k == 0 else D * out),
                "weight_hh": (4 * hidden_size, out), "bias_ih": (4 * hidden_size,),
                "bias_hh": (4 * hidden_size,), "weight_hr": (out, hidden_size)}[name]
        if shape != want:
            raise ValueError(f"{where}{name}_l{k}{'_reverse' if rev else ''} must have shape "
                             f"{want}, got {shape}")
    layers = []
    for k in range(num_layers):
        dirs = []
        for rev in (False, True)[:D]:
            p = {name: _checked_read(entry, key, where)
                 for (name, kk, rr), key in mine.items() if kk == k and rr == rev}
            if not has_bias:
                p.setdefault("bias_ih", np.zeros(4 * hidden_size, np.float32))
                p.setdefault("bias_hh", np.zeros(4 * hidden_size, np.float32))
            dirs.append(p)
        layers.append(make_layer(shapes[("weight_ih", k, False)][1], hidden_size, opts, dirs,
                                 where=f"{where}layer {k}"))
    return layers, bidirectional


def _checked_read(entry, key, where):
    arr = entry.tensors.read(entry.prefix + key)
    if tuple(arr.shape) != tuple(entry.shapes[key]):
        raise ValueError(f"{where}{key}: the file declares shape {entry.shapes[key]} but "
                         f"holds {arr.shape}")
    return arr


def lstm_layers(source, config):
    """Read an ``nn.LSTM`` out of ``source`` (see the module docstring) into
    (layers, bidirectional, batch_first).

    ``config``: ``module`` / ``prefix`` pick one LSTM; ``batch_first`` completes a source that
    lacks it (default False, as nn.LSTM) and must agree with a module that has it;
    ``trust_pickle`` allows a pickled module file; sizes, when given, are checked.
    """
    unknown = set(config) - _LSTM_CONFIG
    if unknown:
        raise TypeError(f"from_torch got unexpected keyword arguments {sorted(unknown)}; "
                        f"accepted: {sorted(_LSTM_CONFIG)}")
    opened = _open(source, config.get("trust_pickle", False))
    entry = _choose(opened, "LSTM", config.get("module"), config.get("prefix"))
    given = config.get("batch_first")
    if given is not None:
        given = check_bool(given, "batch_first")
    if entry.batch_first is not None and given is not None and given != entry.batch_first:
        raise ValueError(f"batch_first={given!r} was given but the module has "
                         f"batch_first={entry.batch_first}")
    batch_first = entry.batch_first if entry.batch_first is not None else bool(given)
    layers, bidirectional = _layers_of(entry, config)
    return layers, bidirectional, batch_first


def cell_layer(source, *, module=None, prefix=None, trust_pickle=False):
    """Read an ``nn.LSTMCell`` out of ``source`` (the same kinds as ``lstm_layers``)."""
    opened = _open(source, trust_pickle)
    entry = _choose(opened, "LSTMCell", module, prefix)
    where = entry.key_prefix
    shapes = entry.shapes
    if "weight_ih" not in shapes or "weight_hh" not in shapes:
        raise ValueError(f"an LSTMCell state dict needs {where}weight_ih and {where}weight_hh; "
                         f"got {sorted(where + k for k in shapes)}")
    w_ih, w_hh = shapes["weight_ih"], shapes["weight_hh"]
    if len(w_ih) != 2 or len(w_hh) != 2 or w_hh[0] % 4 or w_hh[0] != 4 * w_hh[1]:
        raise ValueError(f"{where}weight_ih must be (4*hidden, input) and weight_hh "
                         f"(4*hidden, hidden); got {w_ih} and {w_hh}")
    hidden_size = w_hh[0] // 4
    input_size, hidden_size = check_sizes(w_ih[1], hidden_size)
    for key, shape in shapes.items():
        if len(shape) not in (1, 2) or shape[0] != 4 * hidden_size:
            raise ValueError(f"{where}{key} has shape {shape}, not an LSTM cell parameter of "
                             f"hidden size {hidden_size}")
    params = {k: _checked_read(entry, k, where) for k in shapes}
    if "bias_ih" not in params:
        params["bias_ih"] = np.zeros(4 * hidden_size, np.float32)
        params["bias_hh"] = np.zeros(4 * hidden_size, np.float32)
    return make_layer(input_size, hidden_size, CellOptions.make(hidden_size), [params],
                      where=where or "weights")


def find(source, *, trust_pickle=False):
    """The recurrent modules of ``source`` as ``fastlstm.loaders.found.Found`` entries (sizes
    from the shapes alone: no tensor is read)."""
    found = []
    for e in _entries(_open(source, trust_pickle)):
        reason = _WHY_NOT.get(e.type, "")
        info = dict(kind="torch", name=e.name, selector="module", type=f"nn.{e.type}",
                    reason=reason)
        s = e.shapes
        options = {}
        if e.type == "LSTM" and "weight_ih_l0" in s and "weight_hh_l0" in s:
            layers = {int(m.group(3)) for m in map(_LSTM_KEY.match, s) if m}
            info.update(input_size=s["weight_ih_l0"][-1], hidden_size=s["weight_hh_l0"][0] // 4,
                        num_layers=max(layers) + 1,
                        bidirectional=any(k.endswith("_reverse") for k in s),
                        proj_size=s["weight_hh_l0"][-1] if "weight_hr_l0" in s else 0)
            if e.batch_first:
                options["batch_first"] = True
            if "bias_ih_l0" not in s:
                options["bias"] = False
        elif e.type in ("LSTMCell", "GRUCell", "RNNCell") and "weight_hh" in s \
                and "weight_ih" in s:
            info.update(input_size=s["weight_ih"][-1], hidden_size=s["weight_hh"][-1])
            if "bias_ih" not in s:
                options["bias"] = False
        elif e.type in ("GRU", "RNN") and "weight_hh_l0" in s and "weight_ih_l0" in s:
            layers = {int(m.group(3)) for m in map(_LSTM_KEY.match, s) if m}
            info.update(input_size=s["weight_ih_l0"][-1], hidden_size=s["weight_hh_l0"][-1],
                        num_layers=max(layers) + 1,
                        bidirectional=any(k.endswith("_reverse") for k in s))
        found.append(Found(options=options, **info))
    return found
