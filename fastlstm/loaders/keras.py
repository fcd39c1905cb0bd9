"""Keras: ``LSTM``, ``RNN(LSTMCell)``, ``RNN(StackedRNNCells([LSTMCell, ...]))``,
``Bidirectional(LSTM)`` and Keras 2's ``CuDNNLSTM``, from Keras 3 or Keras 2 (``tf_keras`` /
``tf.keras``) layers and models, live or saved.

Layouts: a cell holds ``kernel`` ``(input, 4H)``, ``recurrent_kernel`` ``(H, 4H)`` and one
``bias`` ``(4H,)``, gate order i, f, c, o (c is fastlstm's g), so the weights are transposed
and the bias becomes ``bias_ih`` (``bias_hh`` is zero). ``unit_forget_bias`` only sets the
initial bias, which the saved bias already contains. A ``CuDNNLSTM`` (Keras 2) keeps cuDNN's
own layout: its ``bias`` is ``(8H,)``, the input then the recurrent biases, and each gate's
block of ``kernel`` / ``recurrent_kernel`` is the row-major buffer cuDNN reads as its
``(H, input)`` / ``(H, H)`` matrix (Keras's own CuDNNLSTM -> LSTM weight conversion says the
same); its activations are fixed, tanh and sigmoid.

Activations keep the meaning of the Keras that wrote them: ``hard_sigmoid`` is
``clip(0.2 x + 0.5, 0, 1)`` in Keras 2 and ``relu6(x + 3) / 6`` in Keras 3 (a legacy ``.h5``
says which in its ``keras_version``); ``leaky_relu`` has slope 0.2, ``elu`` alpha 1; an
activation fastlstm lacks is an error, not an approximation.

Files and what reads them (only the chosen layer's weights are read):

- ``.keras`` (Keras 3): ``zipfile``, ``json``, ``h5py``; its config carries activations,
  ``merge_mode``, ``go_backwards``.
- ``.weights.h5`` (Keras 3) and legacy ``.h5`` weight files (Keras 2 ``save_weights``): ``h5py``.
  There is no config, so the Keras defaults are assumed (tanh, sigmoid, concat) unless
  ``activation=`` / ``recurrent_activation=`` say otherwise; layer types come from the weight
  names and shapes (a bias of 8H is a CuDNNLSTM).
- legacy ``.h5`` full models (Keras 2 ``model.save("m.h5")``): ``h5py``; the layer configs
  come from the file's ``model_config`` attribute.
- SavedModel directories (Keras 2 ``model.save("dir")``): need TensorFlow, for its checkpoint
  reader: the layer configs come from ``keras_metadata.pb`` (decoded here, no Keras import),
  each layer's variables from the checkpoint's object graph, whose node ids are the
  metadata's; no model is loaded and no graph is run. A SavedModel without
  ``keras_metadata.pb`` (Keras 3 ``model.export``, ``tf.saved_model.save``) has no layer
  configs and is refused.

No TensorFlow or Keras import happens for files other than SavedModels. A model or file
holding several LSTM layers needs ``layer=`` (the Keras layer name); the error lists the
names. ``GRU``, ``SimpleRNN``, ``ConvLSTM2D`` and RNNs of other cells are listed by ``find``
with the reason they cannot be loaded.

Masks: fastlstm's ``lengths`` is a right-padded Keras mask (``lengths = mask.sum(axis=1)``).
At masked steps fastlstm outputs zeros, whereas a Keras ``LSTM`` / ``RNN`` layer repeats its
last valid output (``Bidirectional`` outputs zeros, like fastlstm); final states and
``return_sequences=False`` outputs agree. ``repeat_last_output(y, lengths)`` turns
fastlstm's ``y`` into the Keras layer's. Keras runs batch-major (the model has
``batch_first=True``) except a Keras 2 layer with ``time_major=True``.
"""
import contextlib
import io
import json
import os
import re
import sys
import zipfile
import zlib

import numpy as np

from .._checks import check_memory
from .._spec import CellOptions, Layer, check_sizes, make_layer
from .found import Found
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
# Keras 2 (tf_keras): hard_sigmoid is clip(0.2 x + 0.5, 0, 1); there is no leaky_relu name
_KERAS2_ACTIVATIONS = dict(_ACTIVATIONS, hard_sigmoid=("hard_sigmoid", 0.2, 0.5))
del _KERAS2_ACTIVATIONS["leaky_relu"]

# recurrent layers fastlstm cannot run, by Keras class name
_WHY_NOT = {
    "GRU": "a GRU (reset and update gates, no cell state) is not an LSTM",
    "CuDNNGRU": "a GRU (reset and update gates, no cell state) is not an LSTM",
    "SimpleRNN": "a SimpleRNN (one activation, no gates) is not an LSTM",
    "ConvLSTM1D": "a convolutional LSTM (convolutions, not matrix products)",
    "ConvLSTM2D": "a convolutional LSTM (convolutions, not matrix products)",
    "ConvLSTM3D": "a convolutional LSTM (convolutions, not matrix products)",
}


def _activation(spec, where, table=_ACTIVATIONS):
    if spec is None:
        return "linear"
    if isinstance(spec, dict):  # a serialized function: {"class_name": "function", "config": name}
        spec = spec.get("config") if isinstance(spec.get("config"), str) else repr(spec)
    if not isinstance(spec, str) or spec not in table:
        raise ValueError(f"{where}: Keras activation {spec!r} has no exact fastlstm "
                         f"equivalent; supported: {sorted(table)}")
    return table[spec]


def _table(keras_version):
    """The activation table of the Keras that wrote a layer ("2.15.0", "3.4.1", 2, 3)."""
    major = str(keras_version).split(".")[0].strip()
    return _KERAS2_ACTIVATIONS if major in ("1", "2") else _ACTIVATIONS


class _Lazy:
    """A saved array's shape and dtype kind, read only when ``read()`` is called."""

    def __init__(self, shape, kind, read):
        self.shape, self.kind, self._read = tuple(int(n) for n in shape), kind, read

    def read(self):
        try:
            arr = np.asarray(self._read())
        except (ValueError, TypeError, MemoryError):
            raise
        except Exception as exc:   # h5py's OSError, TensorFlow's DataLossError, ...
            raise ValueError(f"cannot read a saved array: {type(exc).__name__}: "
                             f"{str(exc)[:300]}") from None
        if arr.shape != self.shape:
            raise ValueError(f"a saved array declares shape {self.shape} but holds {arr.shape}")
        return arr


def _value(w):
    return w.read() if isinstance(w, _Lazy) else np.asarray(w)


def _kind(w):
    return w.kind if isinstance(w, _Lazy) else np.asarray(w).dtype.kind


def _from_cudnn(kernel, recurrent, bias, H):
    """A CuDNNLSTM's weights in Keras LSTM layout: (kernel, recurrent_kernel, b_ih, b_hh)."""
    I = kernel.shape[0]
    # cuDNN reads each gate's (I, H) block as the row-major buffer of its (H, I) matrix
    kernel = np.hstack([block.reshape(H, I).T for block in np.hsplit(kernel, 4)])
    recurrent = np.hstack([block.T for block in np.hsplit(recurrent, 4)])
    return kernel, recurrent, bias[:4 * H], bias[4 * H:]


# ---------------------------------------------------------------------------------------
# The common description live layers and files are read into:
#   cell = {"weights": [kernel, recurrent_kernel(, bias)], "config": {...}, "cudnn": bool}
#   rnn  = {"kind": "rnn", "name", "cells": [cell, ...], "config": {...}}
#   bi   = {"kind": "bidirectional", "name", "forward": rnn, "backward": rnn, "config": {...}}
#   not an LSTM = {"kind": "unsupported", "name", "type", "reason", "weights": [...]}
# plus "keras" (2 or 3: the activations' meaning) and "type" (for find) at the top level.
# Weights are arrays or _Lazy (read when the layer is built).
# ---------------------------------------------------------------------------------------

def _cell_shapes(cell, where):
    """(input, H) of a cell, from the shapes alone; raises when it is not an LSTM cell."""
    weights = cell["weights"]
    if len(weights) not in (2, 3):
        raise ValueError(f"{where}: expected kernel, recurrent_kernel and bias, got "
                         f"{len(weights)} arrays")
    shapes = [tuple(w.shape) for w in weights]
    kernel, recurrent = shapes[:2]
    if len(kernel) != 2 or len(recurrent) != 2 or recurrent[1] != 4 * recurrent[0] \
            or kernel[1] != recurrent[1]:
        raise ValueError(f"{where}: not an LSTM cell (kernel {kernel}, recurrent_kernel "
                         f"{recurrent}; an LSTM has (input, 4H) and (H, 4H))")
    input_size, H = check_sizes(kernel[0], recurrent[0])
    want = (8 * H,) if cell.get("cudnn") else (4 * H,)
    if len(shapes) == 3 and shapes[2] != want:
        raise ValueError(f"{where}: bias must have shape {want}, got {shapes[2]}")
    if any(_kind(w) not in "fiu" for w in weights):
        raise ValueError(f"{where}: the weights are not real numbers")
    check_memory(8 * sum(int(np.prod(sh)) for sh in shapes), f"the weights of {where}")
    return input_size, H


def _cell_layer(cell, where, overrides, table):
    input_size, H = _cell_shapes(cell, where)
    weights = [np.asarray(_value(w), dtype=np.float64) for w in cell["weights"]]
    kernel, recurrent = weights[:2]
    if cell.get("cudnn"):
        bias = weights[2] if len(weights) == 3 else np.zeros(8 * H)
        kernel, recurrent, bias_ih, bias_hh = _from_cudnn(kernel, recurrent, bias, H)
    else:
        bias_ih = weights[2] if len(weights) == 3 else np.zeros(4 * H)
        bias_hh = np.zeros(4 * H)
    config = cell["config"]
    acts = {}
    for key, default in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
        given = overrides.get(key)
        # a Keras name given for a weights-only file means what it means in that Keras
        acts[key] = table[given] if isinstance(given, str) and given in table else \
            given or _activation(config.get(key, default), where, table)
    opts = CellOptions.make(H, **acts)
    params = {"weight_ih": reorder_gates(kernel.T, "keras", "fastlstm"),
              "weight_hh": reorder_gates(recurrent.T, "keras", "fastlstm"),
              "bias_ih": reorder_gates(bias_ih, "keras", "fastlstm"),
              "bias_hh": reorder_gates(bias_hh, "keras", "fastlstm")}
    return make_layer(input_size, H, opts, [params], where=where)


def _config_problem(desc):
    """Why a described LSTM layer cannot be loaded, judged from its config alone ("" if it
    can); ``_layers`` raises the same messages."""
    name = desc["name"]
    if desc["kind"] == "rnn":
        if desc["config"].get("go_backwards"):
            return (f"Keras layer {name!r} has go_backwards=True: it returns its outputs in "
                    f"reversed time order, which fastlstm models only as the backward half of "
                    f"Bidirectional")
        return ""
    merge_mode = desc["config"].get("merge_mode", "concat")
    if merge_mode != "concat":
        return (f"Keras Bidirectional {name!r} has merge_mode={merge_mode!r}; fastlstm "
                f"concatenates the directions (merge_mode='concat')")
    for label, backwards in (("forward", False), ("backward", True)):
        side = desc[label]
        if len(side["cells"]) != 1:
            return (f"Keras Bidirectional {name!r}: the {label} layer is a stack of "
                    f"{len(side['cells'])} cells, which runs the whole stack in each "
                    f"direction; fastlstm needs Bidirectional(LSTM) per layer")
        if bool(side["config"].get("go_backwards", backwards)) != backwards:
            return (f"Keras Bidirectional {name!r}: the {label} layer has "
                    f"go_backwards={not backwards}")
    return ""


def _layers(desc, overrides):
    """The fastlstm layers of a description: (layers, bidirectional)."""
    name = desc["name"]
    if desc["kind"] == "unsupported":
        raise ValueError(f"Keras layer {name!r} is a {desc['type']}, which fastlstm cannot "
                         f"load: {desc['reason']}")
    problem = _config_problem(desc)
    if problem:
        raise ValueError(problem)
    table = _table(desc.get("keras", 3))
    if desc["kind"] == "rnn":
        layers = [_cell_layer(c, f"Keras layer {name!r} cell {k}", overrides, table)
                  for k, c in enumerate(desc["cells"])]
        return layers, False
    fw, bw = (_cell_layer(desc[label]["cells"][0], f"Keras Bidirectional {name!r} {label}",
                          overrides, table) for label in ("forward", "backward"))
    if (fw.input_size, fw.hidden_size, fw.options) != (bw.input_size, bw.hidden_size,
                                                       bw.options):
        raise ValueError(f"Keras Bidirectional {name!r}: the forward and backward layers "
                         f"differ in size or activations")
    return [Layer(fw.input_size, fw.hidden_size, fw.options,
                  (fw.directions[0], bw.directions[0]))], True


def _batch_first(desc):
    config = desc["forward"]["config"] if desc["kind"] == "bidirectional" else desc["config"]
    return not config.get("time_major", False)


# --- live Keras objects -----------------------------------------------------------------

def _is(obj, *class_names):
    """Whether ``obj``'s class or a base has one of these names: the same test for Keras 3,
    tf_keras and tf.keras classes, without importing any of them."""
    return any(c.__name__ in class_names for c in type(obj).__mro__)


def _live_version(obj):
    package = sys.modules.get(type(obj).__module__.split(".")[0])
    if package is None or package.__name__ in ("tf_keras", "tensorflow"):
        return 2
    return int(str(getattr(package, "__version__", "3")).split(".")[0] or 3)


def _live_type(layer):
    if _is(layer, "CuDNNLSTM"):
        return "CuDNNLSTM"
    name = type(layer).__name__
    if name in ("LSTM", "LSTMV1"):
        return "LSTM"
    cell = getattr(layer, "cell", None)
    if _is(cell, "StackedRNNCells"):
        return f"RNN(StackedRNNCells[{', '.join(type(c).__name__ for c in cell.cells)}])"
    return f"{name}({type(cell).__name__})" if name == "RNN" else name


def _live_rnn(layer):
    """Describe a live keras RNN layer whose cell is an LSTMCell or a stack of them, or a
    CuDNNLSTM; None for another RNN."""
    if _is(layer, "CuDNNLSTM"):
        cells = [layer]
    else:
        cell = getattr(layer, "cell", None)
        cells = cell.cells if _is(cell, "StackedRNNCells") else [cell]
        if not all(_is(c, "LSTMCell") for c in cells):
            return None
    if not layer.built:
        raise ValueError(f"Keras layer {layer.name!r} is not built yet (call it on an input "
                         f"or build it first): it has no weights")
    return {"kind": "rnn", "name": layer.name, "config": layer.get_config(),
            "cells": [{"weights": c.get_weights(), "cudnn": _is(c, "CuDNNLSTM"),
                       "config": {} if _is(c, "CuDNNLSTM") else c.get_config()}
                      for c in cells]}


def _unsupported(name, type_, reason, weights=()):
    return {"kind": "unsupported", "name": name, "type": type_, "reason": reason,
            "weights": list(weights)}


def _live(obj):
    """Every recurrent layer's description in a live layer or model, in model order."""
    if _is(obj, "Bidirectional"):
        fw, bw = _live_rnn(obj.forward_layer), _live_rnn(obj.backward_layer)
        type_ = f"Bidirectional({_live_type(obj.forward_layer)})"
        if fw and bw:
            yield {"kind": "bidirectional", "name": obj.name, "forward": fw, "backward": bw,
                   "config": obj.get_config(), "type": type_, "keras": _live_version(obj)}
        else:
            inner = type(obj.forward_layer).__name__
            yield _unsupported(obj.name, type_, _WHY_NOT.get(inner, f"{type_} is not an LSTM"),
                               obj.get_weights() if obj.built else ())
    elif type(obj).__name__ in _WHY_NOT:
        yield _unsupported(obj.name, type(obj).__name__, _WHY_NOT[type(obj).__name__],
                           obj.get_weights() if obj.built else ())
    elif _is(obj, "RNN"):
        desc = _live_rnn(obj)
        if desc:
            yield dict(desc, type=_live_type(obj), keras=_live_version(obj))
        else:
            yield _unsupported(obj.name, _live_type(obj),
                               f"its cell, {type(obj.cell).__name__}, is not an LSTMCell",
                               obj.get_weights() if obj.built else ())
    elif _is(obj, "Model", "Functional", "Sequential"):
        for sub in obj.layers:
            yield from _live(sub)


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
    desc["type"] = _type_of(serialized)
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


def _read_keras3_file(path):
    """The descriptions in a Keras 3 .keras / .weights.h5 file (read whole: Keras 3 files
    interleave their layers' groups)."""
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
        try:
            descs += _unsupported_in_config(config, {d["name"] for d in descs})
        except (TypeError, AttributeError, KeyError, IndexError, RecursionError) as exc:
            raise ValueError(f"Keras file {path!r}: its config.json is malformed "
                             f"({type(exc).__name__}: {exc})") from None
    return descs


def _serialized_layers(tree):
    """Every serialized layer ({"class_name", "config": {"name", ...}}) in a config tree."""
    if isinstance(tree, dict):
        if "class_name" in tree and isinstance(tree.get("config"), dict) \
                and isinstance(tree["config"].get("name"), str):
            yield tree
        children = tree.values()
    elif isinstance(tree, list):
        children = tree
    else:
        return
    for child in children:
        yield from _serialized_layers(child)


def _unsupported_in_config(config, known):
    """The recurrent layers of a .keras config that are not LSTMs (their weights are not
    read: the sizes come from the config)."""
    found = []
    for serialized in _serialized_layers(config):
        name = serialized["config"]["name"]
        cls = serialized.get("class_name")
        if name in known or cls not in _RECURRENT_CLASSES:
            continue
        inner = (serialized["config"].get("layer") or {}) if cls == "Bidirectional" \
            else serialized
        reason = _cell_configs(inner)
        if not isinstance(reason, str):
            continue   # an LSTM: it is listed when the file holds its weights
        desc = _unsupported(name, _type_of(serialized), reason)
        units = (inner.get("config") or {}).get("units", (inner.get("config") or {}).get(
            "filters"))
        desc["hidden_size"] = units if isinstance(units, int) else 0
        known.add(name)
        found.append(desc)
    return found


# --- legacy HDF5 (.h5) and SavedModel: per-layer weight lists and serialized configs --------

def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _type_of(serialized):
    """The type a serialized layer is listed under: "LSTM", "Bidirectional(LSTM)", ..."""
    cls = str(serialized.get("class_name"))
    cfg = serialized.get("config") if isinstance(serialized.get("config"), dict) else {}
    if cls == "Bidirectional" and isinstance(cfg.get("layer"), dict):
        return f"Bidirectional({_type_of(cfg['layer'])})"
    if cls == "RNN" and isinstance(cfg.get("cell"), dict):
        cell = cfg["cell"]
        inner = cell.get("config") if isinstance(cell.get("config"), dict) else {}
        if cell.get("class_name") == "StackedRNNCells" and isinstance(inner.get("cells"), list):
            names = ", ".join(str(c.get("class_name")) for c in inner["cells"]
                              if isinstance(c, dict))
            return f"RNN(StackedRNNCells[{names}])"
        return f"RNN({cell.get('class_name')})"
    return "LSTM" if cls == "LSTMV1" else cls


_RECURRENT_CLASSES = {"LSTM", "LSTMV1", "CuDNNLSTM", "RNN", "Bidirectional"} | set(_WHY_NOT)


def _cell_configs(serialized):
    """([cell config, ...], cudnn) of a serialized LSTM / CuDNNLSTM / RNN layer, or the reason
    it is not an LSTM (a str)."""
    cls = serialized.get("class_name")
    cfg = serialized.get("config") or {}
    if cls in ("LSTM", "LSTMV1"):
        return [cfg], False
    if cls == "CuDNNLSTM":
        return [{}], True
    if cls == "RNN":
        cell = cfg.get("cell") or {}
        cells = (cell.get("config") or {}).get("cells") or [] \
            if cell.get("class_name") == "StackedRNNCells" else [cell]
        others = sorted({str(c.get("class_name")) for c in cells
                         if c.get("class_name") not in ("LSTMCell", "LSTMCellV1")})
        if others or not cells:
            return f"its cells ({', '.join(others) or 'none'}) are not LSTMCells"
        return [c.get("config") or {} for c in cells], False
    return _WHY_NOT.get(cls, f"a {cls} is not an LSTM")


def _rnn_from(name, serialized, weights):
    """An rnn description from a serialized LSTM / CuDNNLSTM / RNN layer and its weights in
    saved order, or the reason it is not an LSTM (a str)."""
    configs = _cell_configs(serialized)
    if isinstance(configs, str):
        return configs
    cell_configs, cudnn = configs
    cfg = serialized.get("config") or {}
    cells, k = [], 0
    for cell_cfg in cell_configs:
        n = 2 + bool(cudnn or cell_cfg.get("use_bias", True))
        cells.append({"weights": weights[k:k + n], "config": cell_cfg, "cudnn": cudnn})
        k += n
    if k != len(weights):
        return f"it holds {len(weights)} arrays where its config says {k}"
    return {"kind": "rnn", "name": name, "config": cfg, "cells": cells}


def _from_serialized(name, serialized, weights, version):
    """The description of one saved layer; None when it is not recurrent."""
    cls = serialized.get("class_name")
    if cls not in _RECURRENT_CLASSES:
        return None
    type_ = _type_of(serialized)
    common = {"type": type_, "keras": version}
    if cls == "Bidirectional":
        cfg = serialized.get("config") or {}
        sides = (cfg.get("layer") or {}, cfg.get("backward_layer") or cfg.get("layer") or {})
        half = len(weights) // 2     # the forward layer's weights come first
        fw = _rnn_from(name, sides[0], weights[:half])
        bw = _rnn_from(name, sides[1], weights[half:])
        if isinstance(fw, str) or isinstance(bw, str):
            return dict(_unsupported(name, type_, fw if isinstance(fw, str) else bw, weights),
                        **common)
        fw["config"] = dict(fw["config"], go_backwards=False)
        bw["config"] = dict(bw["config"], go_backwards=True)
        return dict({"kind": "bidirectional", "name": name, "forward": fw, "backward": bw,
                     "config": cfg}, **common)
    desc = _rnn_from(name, serialized, weights)
    if isinstance(desc, str):
        return dict(_unsupported(name, type_, desc, weights), **common)
    return dict(desc, **common)


def _guess(names, weights):
    """A serialized config for a layer of a weights-only file, from its weight names and
    shapes; None when the layer is not recurrent."""
    cells = {}
    for name, w in zip(names, weights):
        cells.setdefault(name.rsplit("/", 1)[0], []).append(w)
    groups = list(cells.values())
    kinds = set()
    for group in groups:
        shapes = [tuple(w.shape) for w in group]
        if len(shapes) < 2 or len(shapes[1]) != 2:
            return None
        if len(shapes[0]) > 2:
            kinds.add("ConvLSTM2D")
            continue
        H, G = shapes[1]
        bias = shapes[2] if len(shapes) > 2 else None
        kinds.add({4 * H: "CuDNNLSTM" if bias == (8 * H,) else "LSTM", 3 * H: "GRU",
                   H: "SimpleRNN"}.get(G, "?"))
    if len(kinds) != 1 or "?" in kinds:
        return None
    cls = kinds.pop()
    if cls not in ("LSTM", "CuDNNLSTM"):
        return {"class_name": cls, "config": {}}
    configs = [{"use_bias": len(g) > 2} for g in groups]
    joined = " ".join(names)
    if len(groups) == 2 and "forward_" in joined and "backward_" in joined:
        return {"class_name": "Bidirectional", "config": {
            "merge_mode": "concat", "layer": {"class_name": cls, "config": configs[0]}}}
    if len(groups) == 1:
        return {"class_name": cls, "config": configs[0]}
    return {"class_name": "RNN", "config": {"cell": {"class_name": "StackedRNNCells", "config": {
        "cells": [{"class_name": "LSTMCell", "config": c} for c in configs]}}}}


def _h5_lazy(group, name):
    d = group.get(name)
    if d is None or not hasattr(d, "shape") or not hasattr(d, "dtype"):
        raise ValueError(f"weight {name!r} of {group.name!r} is missing or not an array")
    return _Lazy(d.shape, d.dtype.kind, lambda: d[()])


def _legacy_h5(f):
    """The descriptions in a Keras 2 HDF5 file: ``model.save("m.h5")`` (``model_weights``
    group and ``model_config``) or ``model.save_weights("w.h5")``. Lazy: the caller keeps the
    file open while it reads the chosen layer."""
    root = f["model_weights"] if "model_weights" in f else f
    version = _text(f.attrs.get("keras_version", root.attrs.get("keras_version", "2")))
    config = f.attrs.get("model_config")
    tree = json.loads(_text(config)) if config is not None else None
    for layer_name in (_text(n) for n in root.attrs["layer_names"]):
        group = root[layer_name]
        names = [_text(n) for n in group.attrs.get("weight_names", [])]
        weights = [_h5_lazy(group, n) for n in names]
        yield from _legacy_layer(layer_name, names, weights, tree, version)


_MODEL_CLASSES = ("Sequential", "Functional", "Model")


def _legacy_layer(layer_name, names, weights, tree, version):
    """The descriptions of one layer group of a legacy file. A nested model's group holds its
    layers' weights, each weight name scoped by its layer's name: split by that scope."""
    serialized = _find_config(tree, layer_name) if tree is not None else None
    heads = [n.split("/", 1)[0] for n in names]
    nested = serialized.get("class_name") in _MODEL_CLASSES if serialized is not None else \
        tree is None and any(h != layer_name for h in heads)
    if nested:
        for head in dict.fromkeys(heads):
            mine = [k for k, h in enumerate(heads) if h == head]
            if head != layer_name:
                yield from _legacy_layer(head, [names[k] for k in mine],
                                         [weights[k] for k in mine], tree, version)
        return
    if tree is None:
        serialized = _guess(names, weights)
    if serialized is not None:
        desc = _from_serialized(layer_name, serialized, weights, version)
        if desc is not None:
            yield desc


def _is_legacy_h5(f):
    return "layer_names" in f.attrs or ("model_weights" in f and "model_config" in f.attrs)


def _proto_fields(buf):
    """(field number, value) of a serialized protobuf message: ints for varints, bytes for
    length-delimited fields (enough for keras_metadata.pb)."""
    def varint(pos):
        value = shift = 0
        while True:
            if pos >= len(buf) or shift > 63:
                raise ValueError("truncated or malformed protobuf")
            byte = buf[pos]
            value |= (byte & 0x7F) << shift
            pos, shift = pos + 1, shift + 7
            if not byte & 0x80:
                return value, pos

    pos = 0
    while pos < len(buf):
        key, pos = varint(pos)
        wire = key & 7
        if wire == 0:
            value, pos = varint(pos)
        elif wire == 2:
            n, pos = varint(pos)
            if pos + n > len(buf):
                raise ValueError("truncated or malformed protobuf")
            value, pos = bytes(buf[pos:pos + n]), pos + n
        elif wire in (1, 5):
            value, pos = None, pos + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
        yield key >> 3, value


def _keras_metadata(data):
    """keras_metadata.pb (tf_keras ``SavedMetadata``): [(node_id, node_path, metadata dict)]."""
    nodes = []
    for field, node in _proto_fields(data):
        if field != 1 or not isinstance(node, bytes):
            continue
        entry = {2: 0, 3: b"", 5: b"{}"}
        entry.update((f, v) for f, v in _proto_fields(node) if f in entry)
        nodes.append((entry[2], _text(entry[3]), json.loads(_text(entry[5]))))
    return nodes


def _saved_model(path):
    """The descriptions in a Keras 2 SavedModel directory; see the module docstring."""
    try:
        import tensorflow as tf
        from tensorflow.core.protobuf import trackable_object_graph_pb2
    except ImportError:
        raise ValueError(f"{path!r} is a SavedModel directory: reading its variables needs "
                         f"TensorFlow (pip install tensorflow-cpu), which is not "
                         f"installed") from None
    meta = os.path.join(path, "keras_metadata.pb")
    if not os.path.isfile(meta):
        raise ValueError(f"SavedModel {path!r} has no keras_metadata.pb, so no Keras layer "
                         f"configs: it was not written by Keras 2 model.save (Keras 3 "
                         f"model.export and tf.saved_model.save write none). Load the model "
                         f"and pass its layer, or save it as .keras / .h5")
    with open(meta, "rb") as fh:
        data = fh.read()
    try:
        nodes = _keras_metadata(data)
    except (ValueError, RecursionError) as exc:   # json and unicode errors are ValueErrors
        raise ValueError(f"cannot read SavedModel {path!r}: its keras_metadata.pb is damaged "
                         f"({exc})") from None
    reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
    graph = trackable_object_graph_pb2.TrackableObjectGraph.FromString(
        reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()

    def variables(node_id):
        """A layer's variables in its ``layer.weights`` order (the checkpoint object graph
        and keras_metadata.pb share node ids)."""
        children = {c.local_name: c.node_id for c in graph.nodes[node_id].children}
        if "variables" not in children:
            return []
        listed = sorted(graph.nodes[children["variables"]].children,
                        key=lambda c: int(c.local_name))
        out = []
        for child in listed:
            keys = [a.checkpoint_key for a in graph.nodes[child.node_id].attributes
                    if a.name == "VARIABLE_VALUE"]
            if not keys or keys[0] not in shapes:
                raise ValueError(f"variable {child.local_name} of node {node_id} is not in "
                                 f"the checkpoint")
            key = keys[0]
            out.append(_Lazy(shapes[key], np.dtype(dtypes[key].as_numpy_dtype).kind,
                             lambda key=key: reader.get_tensor(key)))
        return out

    layers = [(i, p, m) for i, p, m in nodes if isinstance(m, dict)
              and m.get("class_name") in _RECURRENT_CLASSES]
    paths = [p for _, p, _ in layers]
    for node_id, node_path, meta in layers:
        if any(node_path.startswith(other + ".") for other in paths):
            continue   # the forward/backward layer of a Bidirectional listed already
        serialized = {"class_name": meta["class_name"], "config": meta.get("config") or {}}
        desc = _from_serialized(str(meta.get("name")), serialized, variables(node_id), "2")
        if desc is not None:
            yield desc


_FILE_ERRORS = (OSError, zipfile.BadZipFile, json.JSONDecodeError, KeyError, zlib.error,
                RecursionError, RuntimeError, TypeError, AttributeError, IndexError,
                UnicodeDecodeError, EOFError)


@contextlib.contextmanager
def _descriptions(source):
    """(descriptions, label) of a live layer/model or a file; a file stays open until the
    caller has read what it needs."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        label = f"Keras file {path!r}"
        if os.path.isdir(path):
            label = f"SavedModel {path!r}"
            try:
                descs = list(_saved_model(path))
            except ValueError:
                raise
            except Exception as exc:   # TensorFlow's own errors (NotFoundError, DataLossError)
                raise ValueError(f"cannot read {label}: {type(exc).__name__}: "
                                 f"{str(exc)[:300]}") from None
            yield descs, label
            return
        if not os.path.exists(path):
            raise ValueError(f"Keras file {path!r} does not exist")
        import h5py

        legacy = None
        try:
            if not zipfile.is_zipfile(path) and h5py.is_hdf5(path):
                legacy = h5py.File(path, "r")
                if not _is_legacy_h5(legacy):
                    legacy.close()
                    legacy = None
        except _FILE_ERRORS as exc:
            raise ValueError(f"cannot read {label}: {type(exc).__name__}: {exc}") from None
        if legacy is None:
            yield _read_keras3_file(path), label
            return
        with legacy:
            try:
                descs = list(_legacy_h5(legacy))
            except _FILE_ERRORS + (ValueError,) as exc:
                raise ValueError(f"cannot read {label}: {type(exc).__name__}: "
                                 f"{exc}") from None
            yield descs, label
        return
    if not _is(source, "Layer"):
        raise TypeError(f"expected a Keras 3 layer or model, or the path of a .keras / .h5 "
                        f"file or a SavedModel directory (Keras 2 / tf_keras layers and "
                        f"models too), got {type(source).__name__}")
    yield list(_live(source)), f"Keras {type(source).__name__} {source.name!r}"


def read(layer_or_path, *, layer=None, activation=None, recurrent_activation=None):
    """Read a Keras LSTM into (layers, bidirectional, batch_first); see the module docstring."""
    with _descriptions(layer_or_path) as (descs, source):
        lstms = [d for d in descs if d["kind"] != "unsupported"]
        names = sorted(d["name"] for d in lstms)
        others = ", ".join(f"{d['name']!r} ({d['type']})" for d in descs
                           if d["kind"] == "unsupported")
        if layer is None:
            if not lstms:
                raise ValueError(f"{source} holds no LSTM layer (LSTM, RNN(LSTMCell), "
                                 f"RNN(StackedRNNCells) of LSTMCells, CuDNNLSTM or "
                                 f"Bidirectional of those)" + (f"; it holds {others}"
                                                              if others else ""))
            if len(lstms) > 1:
                raise ValueError(f"{source} holds {len(lstms)} LSTM layers {names}; choose "
                                 f"one with layer=...")
            desc = lstms[0]
        else:
            matches = [d for d in descs if d["name"] == layer]
            if not matches:
                raise ValueError(f"layer={layer!r} is not an LSTM layer of {source}; LSTM "
                                 f"layers: {names}" + (f"; others: {others}" if others else ""))
            desc = matches[0]
        overrides = {"activation": activation, "recurrent_activation": recurrent_activation}
        if not isinstance(layer_or_path, (str, os.PathLike)):
            layers, bidirectional = _layers(desc, overrides)
        else:
            try:
                layers, bidirectional = _layers(desc, overrides)
            except (TypeError, AttributeError, KeyError, IndexError, OSError,
                    RuntimeError) as exc:
                # values of the wrong type or unreadable data: a damaged or crafted file
                raise ValueError(f"{source}: layer {desc['name']!r} is malformed "
                                 f"({type(exc).__name__}: {exc})") from None
        return layers, bidirectional, _batch_first(desc)


def _found(desc):
    """The ``Found`` entry of a description, from shapes and config only."""
    default_type = "Bidirectional(LSTM)" if desc["kind"] == "bidirectional" else \
        "LSTM" if len(desc.get("cells", ())) < 2 else "RNN(StackedRNNCells)"
    info = dict(kind="keras", name=desc["name"], selector="layer",
                type=desc.get("type") or default_type)
    if desc["kind"] == "unsupported":
        weights = desc["weights"]
        if len(weights) >= 2 and len(weights[1].shape) == 2:
            info.update(input_size=weights[0].shape[-2], hidden_size=weights[1].shape[0])
        elif desc.get("hidden_size"):
            info.update(hidden_size=desc["hidden_size"])
        return Found(reason=desc["reason"], **info)
    cells = desc["cells"] if desc["kind"] == "rnn" else desc["forward"]["cells"]
    options = {}
    try:
        input_size, hidden = _cell_shapes(cells[0], desc["name"])
        info.update(input_size=input_size, hidden_size=hidden, num_layers=len(cells),
                    bidirectional=desc["kind"] == "bidirectional")
        reason = _config_problem(desc)
        table = _table(desc.get("keras", 3))
        for key, default in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
            value = cells[0]["config"].get(key, default)
            _activation(value, desc["name"], table)
            if value != default:
                options[key] = value
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        reason = str(exc)
    if not _batch_first(desc):
        options["batch_first"] = False
    if _table(desc.get("keras", 3)) is _KERAS2_ACTIVATIONS:
        options["keras"] = 2
    return Found(options=options, reason=reason, **info)


def find(source):
    """The recurrent layers of ``source`` as ``fastlstm.loaders.found.Found`` entries (no
    weights are read)."""
    with _descriptions(source) as (descs, _):
        return [_found(d) for d in descs]


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
