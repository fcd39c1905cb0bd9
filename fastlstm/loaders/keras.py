"""Keras 3: ``LSTM``, ``RNN(LSTMCell)``, ``RNN(StackedRNNCells([LSTMCell, ...]))`` and
``Bidirectional(LSTM)`` layers, live or from a saved ``.keras`` / ``.weights.h5`` file.

Layouts: a cell holds ``kernel`` ``(input, 4H)``, ``recurrent_kernel`` ``(H, 4H)`` and one
``bias`` ``(4H,)``, gate order i, f, c, o (c is fastlstm's g), so the weights are transposed
and the bias becomes ``bias_ih`` (``bias_hh`` is zero). ``unit_forget_bias`` only sets the
initial bias, which the saved bias already contains. Activations keep Keras 3's meaning:
``hard_sigmoid`` is ``relu6(x + 3) / 6`` (fastlstm's default), ``leaky_relu`` has slope 0.2,
``elu`` alpha 1; an activation fastlstm lacks is an error, not an approximation.

Files are read with ``zipfile``, ``json`` and ``h5py``: no TensorFlow or Keras import. A
``.keras`` file carries the config (activations, ``merge_mode``, ``go_backwards``); a bare
``.weights.h5`` file does not, so the Keras defaults are assumed (tanh, sigmoid, concat) unless
``activation=`` / ``recurrent_activation=`` say otherwise. A model or file holding several
LSTM layers needs ``layer=`` (the Keras layer name); the error lists the names.

Masks: fastlstm's ``lengths`` is a right-padded Keras mask (``lengths = mask.sum(axis=1)``).
At masked steps fastlstm outputs zeros, whereas a Keras ``LSTM`` / ``RNN`` layer repeats its
last valid output (``Bidirectional`` outputs zeros, like fastlstm); final states and
``return_sequences=False`` outputs agree. ``repeat_last_output(y, lengths)`` turns
fastlstm's ``y`` into the Keras layer's. Keras always runs batch-major: the model has
``batch_first=True``.
"""
import io
import json
import os
import re
import zipfile
import zlib

import numpy as np

from .._checks import check_memory
from .._spec import CellOptions, Layer, check_sizes, make_layer
from ._layouts import reorder_gates

# Keras 3 activation name -> fastlstm spec, with Keras's own parameters.
_ACTIVATIONS = {
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "relu": "relu",
    "hard_sigmoid": ("hard_sigmoid", 1.0 / 6.0, 0.5),
    "linear": "linear",
    "softsign": "softsign",
    "softplus": "softplus",
    "elu": ("elu", 1.0),
    "leaky_relu": ("leaky_relu", 0.2),
}


def _activation(spec, where):
    if spec is None:
        return "linear"
    if isinstance(spec, dict):  # a serialized function: {"class_name": "function", "config": name}
        spec = spec.get("config") if isinstance(spec.get("config"), str) else repr(spec)
    if not isinstance(spec, str) or spec not in _ACTIVATIONS:
        raise ValueError(f"{where}: Keras activation {spec!r} has no exact fastlstm "
                         f"equivalent; supported: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[spec]


# ---------------------------------------------------------------------------------------
# The common description both live layers and files are read into:
#   cell = {"name", "weights": [kernel, recurrent_kernel(, bias)], "config": {...}}
#   rnn  = {"kind": "rnn", "name", "cells": [cell, ...], "config": {...}}
#   bi   = {"kind": "bidirectional", "name", "forward": rnn, "backward": rnn, "config": {...}}
# ---------------------------------------------------------------------------------------

def _cell_layer(cell, where, overrides):
    weights = [np.asarray(w, dtype=np.float64) for w in cell["weights"]]
    if len(weights) not in (2, 3):
        raise ValueError(f"{where}: expected kernel, recurrent_kernel and bias, got "
                         f"{len(weights)} arrays")
    kernel, recurrent = weights[:2]
    if kernel.ndim != 2 or recurrent.ndim != 2 or recurrent.shape[1] != 4 * recurrent.shape[0] \
            or kernel.shape[1] != recurrent.shape[1]:
        raise ValueError(f"{where}: not an LSTM cell (kernel {kernel.shape}, recurrent_kernel "
                         f"{recurrent.shape}; an LSTM has (input, 4H) and (H, 4H))")
    H = recurrent.shape[0]
    input_size, H = check_sizes(kernel.shape[0], H)
    bias = weights[2] if len(weights) == 3 else np.zeros(4 * H)
    if bias.shape != (4 * H,):
        raise ValueError(f"{where}: bias must have shape ({4 * H},), got {bias.shape}")
    config = cell["config"]
    opts = CellOptions.make(
        H,
        activation=overrides.get("activation") or _activation(config.get("activation", "tanh"),
                                                              where),
        recurrent_activation=overrides.get("recurrent_activation") or _activation(
            config.get("recurrent_activation", "sigmoid"), where))
    params = {"weight_ih": reorder_gates(kernel.T, "keras", "fastlstm"),
              "weight_hh": reorder_gates(recurrent.T, "keras", "fastlstm"),
              "bias_ih": reorder_gates(bias, "keras", "fastlstm"),
              "bias_hh": np.zeros(4 * H)}
    return make_layer(input_size, H, opts, [params], where=where)


def _layers(desc, overrides):
    """The fastlstm layers of a description: (layers, bidirectional)."""
    name = desc["name"]
    if desc["kind"] == "rnn":
        if desc["config"].get("go_backwards"):
            raise ValueError(f"Keras layer {name!r} has go_backwards=True: it returns its "
                             f"outputs in reversed time order, which fastlstm models only "
                             f"as the backward half of Bidirectional")
        layers = [_cell_layer(c, f"Keras layer {name!r} cell {k}", overrides)
                  for k, c in enumerate(desc["cells"])]
        return layers, False
    merge_mode = desc["config"].get("merge_mode", "concat")
    if merge_mode != "concat":
        raise ValueError(f"Keras Bidirectional {name!r} has merge_mode={merge_mode!r}; "
                         f"fastlstm concatenates the directions (merge_mode='concat')")
    sides = []
    for label, side, backwards in (("forward", desc["forward"], False),
                                   ("backward", desc["backward"], True)):
        if len(side["cells"]) != 1:
            raise ValueError(f"Keras Bidirectional {name!r}: the {label} layer is a stack of "
                             f"{len(side['cells'])} cells, which runs the whole stack in each "
                             f"direction; fastlstm needs Bidirectional(LSTM) per layer")
        if bool(side["config"].get("go_backwards", backwards)) != backwards:
            raise ValueError(f"Keras Bidirectional {name!r}: the {label} layer has "
                             f"go_backwards={not backwards}")
        sides.append(_cell_layer(side["cells"][0], f"Keras Bidirectional {name!r} {label}",
                                 overrides))
    fw, bw = sides
    if (fw.input_size, fw.hidden_size, fw.options) != (bw.input_size, bw.hidden_size,
                                                       bw.options):
        raise ValueError(f"Keras Bidirectional {name!r}: the forward and backward layers "
                         f"differ in size or activations")
    return [Layer(fw.input_size, fw.hidden_size, fw.options,
                  (fw.directions[0], bw.directions[0]))], True


# --- live Keras objects -----------------------------------------------------------------

def _live_rnn(layer, keras):
    """Describe a live keras RNN layer whose cell is an LSTMCell or a stack of them."""
    cell = layer.cell
    cells = cell.cells if isinstance(cell, keras.layers.StackedRNNCells) else [cell]
    if not all(isinstance(c, keras.layers.LSTMCell) for c in cells):
        return None
    if not layer.built:
        raise ValueError(f"Keras layer {layer.name!r} is not built yet (call it on an input "
                         f"or build it first): it has no weights")
    return {"kind": "rnn", "name": layer.name, "config": layer.get_config(),
            "cells": [{"weights": c.get_weights(), "config": c.get_config()} for c in cells]}


def _live(obj, keras):
    """Every LSTM description in a live layer or model, in model order."""
    if isinstance(obj, keras.layers.Bidirectional):
        fw = _live_rnn(obj.forward_layer, keras)
        bw = _live_rnn(obj.backward_layer, keras)
        if fw and bw:
            yield {"kind": "bidirectional", "name": obj.name, "forward": fw, "backward": bw,
                   "config": obj.get_config()}
    elif isinstance(obj, keras.layers.RNN):
        desc = _live_rnn(obj, keras)
        if desc:
            yield desc
    elif isinstance(obj, keras.Model):
        for sub in obj.layers:
            yield from _live(sub, keras)


# --- saved files ---------------------------------------------------------------------------

def _natural(name):
    m = re.match(r"^(.*?)(?:_(\d+))?$", name)
    return m.group(1), int(m.group(2) or 0)


def _h5_cell(group):
    """[kernel, recurrent_kernel(, bias)] of a saved cell group (``.../vars/0, 1, 2``), or
    None when the group is not an LSTM cell. Shapes are checked before any data is read, so
    a crafted file cannot make us read (or allocate) more than an LSTM cell's weights."""
    vars_ = group.get("vars")
    if vars_ is None or not hasattr(vars_, "keys") or "0" not in vars_ or "1" not in vars_:
        return None
    n = len([k for k in vars_ if k.isdigit()])
    datasets = [vars_.get(str(i)) for i in range(n)]
    if n not in (2, 3) or not all(hasattr(d, "shape") and hasattr(d, "dtype")
                                  and d.dtype.kind in "fiu" for d in datasets):
        return None
    shapes = [tuple(d.shape) for d in datasets]
    k, r = shapes[0], shapes[1]
    if len(k) != 2 or len(r) != 2 or r[1] != 4 * r[0] or k[1] != r[1] \
            or (n == 3 and shapes[2] != (r[1],)):
        return None
    check_sizes(k[0], r[0])
    check_memory(8 * sum(int(np.prod(s)) for s in shapes), f"the weights of {group.name!r}")
    return [d[()] for d in datasets]


def _h5_name(group, fallback):
    vars_ = group.get("vars")
    name = vars_.attrs.get("name") if vars_ is not None else None
    if isinstance(name, bytes):
        name = name.decode()
    return str(name) if name is not None else fallback


def _h5_rnn(group, path):
    """Describe a saved RNN layer group (``cell/vars`` or ``cell/cells/<cell>/vars``)."""
    cell = group.get("cell")
    if cell is None or not hasattr(cell, "keys"):
        return None
    if "cells" in cell:
        names = sorted(cell["cells"], key=_natural)
        weights = [_h5_cell(cell["cells"][n]) for n in names]
    else:
        weights = [_h5_cell(cell)]
    if not weights or any(w is None or not _looks_lstm(w) for w in weights):
        return None
    return {"kind": "rnn", "name": _h5_name(group, path), "config": {},
            "cells": [{"weights": w, "config": {}} for w in weights]}


def _looks_lstm(weights):
    k, r = weights[0], weights[1]
    return k.ndim == 2 and r.ndim == 2 and r.shape[1] == 4 * r.shape[0] == k.shape[1]


def _h5_walk(group, path=""):
    for key in group:
        sub = group[key]
        if not hasattr(sub, "keys"):
            continue
        where = f"{path}/{key}" if path else key
        if "forward_layer" in sub and "backward_layer" in sub:
            fw = _h5_rnn(sub["forward_layer"], where + "/forward_layer")
            bw = _h5_rnn(sub["backward_layer"], where + "/backward_layer")
            if fw and bw:
                yield {"kind": "bidirectional", "name": _h5_name(sub, where), "forward": fw,
                       "backward": bw, "config": {}}
            continue
        desc = _h5_rnn(sub, where)
        if desc:
            yield desc
        elif key != "vars":
            yield from _h5_walk(sub, where)


def _find_config(tree, name):
    """The serialized layer named ``name`` anywhere in a Keras config tree."""
    if isinstance(tree, dict):
        cfg = tree.get("config")
        if "class_name" in tree and isinstance(cfg, dict) and cfg.get("name") == name:
            return tree
        children = tree.values()
    elif isinstance(tree, list):
        children = tree
    else:
        return None
    for child in children:
        found = _find_config(child, name)
        if found is not None:
            return found
    return None


def _rnn_configs(serialized):
    """(layer config, [cell configs]) of a serialized LSTM / RNN layer."""
    cfg = serialized["config"]
    if serialized["class_name"] == "LSTM":
        return cfg, [cfg]
    cell = cfg.get("cell", {})
    if cell.get("class_name") == "StackedRNNCells":
        return cfg, [c["config"] for c in cell["config"]["cells"]]
    return cfg, [cell.get("config", {})]


def _apply_config(desc, config_tree):
    serialized = _find_config(config_tree, desc["name"])
    if serialized is None:
        # the weights hold a layer the config does not describe: its activations are unknown
        raise KeyError(f"no layer named {desc['name']!r} in the config")
    if desc["kind"] == "bidirectional":
        desc["config"] = serialized["config"]
        inner = serialized["config"]
        sides = (("forward", inner.get("layer")),
                 ("backward", inner.get("backward_layer") or inner.get("layer")))
        for label, side in sides:
            if side is None:
                continue
            cfg, cells = _rnn_configs(side)
            desc[label]["config"] = dict(cfg, go_backwards=label == "backward")
            for cell, cell_cfg in zip(desc[label]["cells"], cells):
                cell["config"] = cell_cfg
    else:
        cfg, cells = _rnn_configs(serialized)
        desc["config"] = cfg
        for cell, cell_cfg in zip(desc["cells"], cells):
            cell["config"] = cell_cfg


def _read_file(path):
    import h5py  # only for files

    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as exc:
        raise ValueError(f"cannot read Keras file {path!r}: {exc}") from None
    try:
        if is_zip:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                if "config.json" not in names or "model.weights.h5" not in names:
                    raise ValueError(f"{path!r} is a zip file but not a .keras model (no "
                                     f"config.json / model.weights.h5; entries {names[:8]})")
                config = json.loads(z.read("config.json"))
                blob = io.BytesIO(z.read("model.weights.h5"))
            with h5py.File(blob, "r") as f:
                descs = list(_h5_walk(f))
        else:
            if not h5py.is_hdf5(path):
                raise ValueError(f"{path!r} is neither a .keras (zip) nor a .weights.h5 "
                                 f"(HDF5) file")
            config = None
            with h5py.File(path, "r") as f:
                descs = list(_h5_walk(f))
    except (OSError, zipfile.BadZipFile, json.JSONDecodeError, KeyError, zlib.error,
            RecursionError, RuntimeError, TypeError, AttributeError, IndexError,
            UnicodeDecodeError, EOFError) as exc:
        raise ValueError(f"cannot read Keras file {path!r}: {type(exc).__name__}: "
                         f"{exc}") from None
    if config is not None:
        for desc in descs:
            try:
                _apply_config(desc, config)
            except (TypeError, AttributeError, KeyError, IndexError, RecursionError) as exc:
                raise ValueError(f"Keras file {path!r}: its config.json does not describe "
                                 f"layer {desc['name']!r} as Keras does ({type(exc).__name__}: "
                                 f"{exc})") from None
    return descs


def read(layer_or_path, *, layer=None, activation=None, recurrent_activation=None):
    """Read a Keras LSTM into (layers, bidirectional); see the module docstring."""
    if isinstance(layer_or_path, (str, os.PathLike)):
        if not os.path.exists(layer_or_path):
            raise ValueError(f"Keras file {os.fspath(layer_or_path)!r} does not exist")
        descs = _read_file(os.fspath(layer_or_path))
        source = f"Keras file {os.fspath(layer_or_path)!r}"
    elif type(layer_or_path).__module__.split(".")[0] == "keras":
        import keras  # already imported: the caller holds a Keras object

        descs = list(_live(layer_or_path, keras))
        source = f"Keras {type(layer_or_path).__name__} {layer_or_path.name!r}"
    else:
        raise TypeError(f"expected a Keras 3 layer or model, or the path of a .keras / "
                        f".weights.h5 file, got {type(layer_or_path).__name__}")
    names = sorted(d["name"] for d in descs)
    if not descs:
        raise ValueError(f"{source} holds no LSTM layer (LSTM, RNN(LSTMCell), "
                         f"RNN(StackedRNNCells) of LSTMCells or Bidirectional of those)")
    if layer is None:
        if len(descs) > 1:
            raise ValueError(f"{source} holds {len(descs)} LSTM layers {names}; choose one "
                             f"with layer=...")
        desc = descs[0]
    else:
        matches = [d for d in descs if d["name"] == layer]
        if not matches:
            raise ValueError(f"layer={layer!r} is not an LSTM layer of {source}; LSTM layers: "
                             f"{names}")
        desc = matches[0]
    overrides = {"activation": activation, "recurrent_activation": recurrent_activation}
    if not isinstance(layer_or_path, (str, os.PathLike)):
        return _layers(desc, overrides)
    try:
        return _layers(desc, overrides)
    except (TypeError, AttributeError, KeyError, IndexError) as exc:
        # the file's config has values of the wrong type: a damaged or crafted file
        raise ValueError(f"{source}: layer {desc['name']!r} is malformed "
                         f"({type(exc).__name__}: {exc})") from None


def repeat_last_output(y, lengths):
    """Keras's masked output from fastlstm's: each sequence's steps past its length repeat
    its last valid output (zeros for a length-0 sequence). ``y`` is ``(batch, time, out)``."""
    y = np.array(y, copy=True)
    lengths = np.asarray(lengths)
    if y.ndim != 3 or lengths.shape != (y.shape[0],):
        raise ValueError(f"y must be (batch, time, out) and lengths (batch,), got y "
                         f"{y.shape} and lengths {lengths.shape}")
    for b, n in enumerate(lengths):
        if 0 < n < y.shape[1]:
            y[b, n:] = y[b, n - 1]
    return y
