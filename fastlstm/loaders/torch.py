"""PyTorch: ``torch.nn.LSTM`` / ``torch.nn.LSTMCell`` modules or their state dicts.

PyTorch's names and layouts are fastlstm's own (gate order i, f, g, o; ``bias_ih`` and
``bias_hh`` kept apart; ``weight_hr`` for ``proj_size``), so this loader only reads the
structure out of the parameter names. A state dict of NumPy arrays needs no torch at all; a
module or tensors mean torch is already imported by the caller.
"""
import re

import numpy as np

from .._checks import check_bool
from .._spec import CellOptions, check_sizes, make_layer

_LSTM_KEY = re.compile(r"^(.*?)(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")
_CELL_KEY = re.compile(r"^(.*?)(weight_ih|weight_hh|bias_ih|bias_hh)$")


def _to_numpy(value, name):
    if hasattr(value, "detach"):  # a torch tensor: torch is imported already
        return value.detach().to("cpu").float().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"state dict entry {name!r} must be a tensor or a real array, "
                        f"got {type(value).__name__}")
    return arr


def _state_dict(obj, kind):
    """The parameters of a torch module, or the mapping itself; plus the module's config."""
    if isinstance(obj, dict) or (hasattr(obj, "keys") and not hasattr(obj, "state_dict")):
        return dict(obj), None
    if hasattr(obj, "state_dict") and type(obj).__module__.startswith("torch"):
        import torch  # already imported: the caller holds a torch object

        wanted = torch.nn.LSTM if kind == "LSTM" else torch.nn.LSTMCell
        if not isinstance(obj, wanted):
            raise TypeError(f"expected a torch.nn.{kind} or its state dict, "
                            f"got {type(obj).__name__}")
        return dict(obj.state_dict()), obj
    raise TypeError(f"expected a torch.nn.{kind} or a state dict (a mapping of parameter names "
                    f"to tensors or arrays), got {type(obj).__name__}")


def _single_prefix(found, keys, prefix):
    prefixes = sorted({p for p, *_ in found})
    if prefix is not None:
        if prefix not in prefixes:
            raise ValueError(f"prefix {prefix!r} matches no LSTM parameters; "
                             f"prefixes found: {prefixes}")
        return prefix
    if not prefixes:
        raise ValueError(f"the state dict holds no LSTM parameters (weight_ih_l0, ...); "
                         f"keys: {sorted(keys)[:10]}")
    if len(prefixes) > 1:
        raise ValueError(f"the state dict holds several LSTMs, prefixes {prefixes}; "
                         f"choose one with prefix=...")
    return prefixes[0]


def _check_given(config, name, inferred):
    if name in config and config[name] is not None and config[name] != inferred:
        raise ValueError(f"{name}={config[name]!r} was given but the weights say {inferred!r}")


_LSTM_CONFIG = {"batch_first", "prefix", "input_size", "hidden_size", "num_layers",
                "bidirectional", "proj_size", "bias"}


def lstm_layers(obj, config):
    """Read a ``torch.nn.LSTM`` (or state dict) into (layers, bidirectional, batch_first).

    ``config`` completes a state dict: ``batch_first`` (default False, as nn.LSTM), ``prefix``
    when the state dict holds several LSTMs; sizes, when given, are checked against the weights.
    """
    unknown = set(config) - _LSTM_CONFIG
    if unknown:
        raise TypeError(f"from_torch got unexpected keyword arguments {sorted(unknown)}; "
                        f"accepted: {sorted(_LSTM_CONFIG)}")
    sd, module = _state_dict(obj, "LSTM")
    if module is not None:
        given = {"batch_first": module.batch_first}
        if "batch_first" in config and config["batch_first"] != module.batch_first:
            raise ValueError(f"batch_first={config['batch_first']!r} was given but the module "
                             f"has batch_first={module.batch_first}")
    else:
        given = {}
    batch_first = check_bool(config.get("batch_first", given.get("batch_first", False)),
                             "batch_first")
    found = {}
    for key in sd:
        m = _LSTM_KEY.match(str(key))
        if m:
            found[(m.group(1), m.group(2), int(m.group(3)), bool(m.group(4)))] = key
    prefix = _single_prefix(found, sd.keys(), config.get("prefix"))
    mine = {(name, k, rev): key for (p, name, k, rev), key in found.items() if p == prefix}
    num_layers = max(k for _, k, _ in mine) + 1
    bidirectional = any(rev for *_, rev in mine)
    D = 2 if bidirectional else 1
    for k in range(num_layers):
        for rev in (False, True)[:D]:
            for name in ("weight_ih", "weight_hh"):
                if (name, k, rev) not in mine:
                    raise ValueError(f"state dict is missing {prefix}{name}_l{k}"
                                     f"{'_reverse' if rev else ''}")
    params = {key_t: _to_numpy(sd[key], key) for key_t, key in mine.items()}
    w_hh0 = params[("weight_hh", 0, False)]
    w_ih0 = params[("weight_ih", 0, False)]
    if w_hh0.ndim != 2 or w_hh0.shape[0] % 4 or w_ih0.ndim != 2:
        raise ValueError(f"{prefix}weight_hh_l0 must be (4*hidden, out) and weight_ih_l0 "
                         f"(4*hidden, input); got {w_hh0.shape} and {w_ih0.shape}")
    hidden_size = w_hh0.shape[0] // 4
    proj_size = w_hh0.shape[1] if ("weight_hr", 0, False) in params else 0
    has_bias = ("bias_ih", 0, False) in params
    for name, value in (("input_size", w_ih0.shape[1]), ("hidden_size", hidden_size),
                        ("num_layers", num_layers), ("bidirectional", bidirectional),
                        ("proj_size", proj_size), ("bias", has_bias)):
        _check_given(config, name, value)
    check_sizes(w_ih0.shape[1], hidden_size)
    opts = CellOptions.make(hidden_size, proj_size=proj_size)
    layers = []
    for k in range(num_layers):
        dirs = []
        for rev in (False, True)[:D]:
            p = {name: arr for (name, kk, rr), arr in params.items() if kk == k and rr == rev}
            if not has_bias:
                p.setdefault("bias_ih", np.zeros(4 * hidden_size, np.float32))
                p.setdefault("bias_hh", np.zeros(4 * hidden_size, np.float32))
            dirs.append(p)
        w_ih = np.asarray(dirs[0]["weight_ih"])
        if w_ih.ndim != 2:
            raise ValueError(f"{prefix}weight_ih_l{k} must be (4*hidden, input), got {w_ih.shape}")
        layers.append(make_layer(w_ih.shape[1], hidden_size, opts, dirs,
                                 where=f"{prefix}layer {k}"))
    return layers, bidirectional, batch_first


def cell_layer(obj):
    """Read a ``torch.nn.LSTMCell`` (or its state dict) into one layer."""
    sd, _ = _state_dict(obj, "LSTMCell")
    params = {}
    for key, value in sd.items():
        m = _CELL_KEY.match(str(key))
        if m:
            if m.group(2) in params:
                raise ValueError(f"the state dict holds several cells ({key!r} and another "
                                 f"{m.group(2)}); pass one cell's parameters")
            params[m.group(2)] = _to_numpy(value, key)
    if "weight_ih" not in params or "weight_hh" not in params:
        raise ValueError(f"an LSTMCell state dict needs weight_ih and weight_hh; "
                         f"got keys {sorted(sd)}")
    w_ih, w_hh = params["weight_ih"], params["weight_hh"]
    if w_ih.ndim != 2 or w_hh.ndim != 2 or w_hh.shape[0] % 4:
        raise ValueError(f"weight_ih must be (4*hidden, input) and weight_hh (4*hidden, hidden); "
                         f"got {w_ih.shape} and {w_hh.shape}")
    hidden_size = w_hh.shape[0] // 4
    input_size, hidden_size = check_sizes(w_ih.shape[1], hidden_size)
    if "bias_ih" not in params:
        params["bias_ih"] = np.zeros(4 * hidden_size, np.float32)
        params["bias_hh"] = np.zeros(4 * hidden_size, np.float32)
    return make_layer(input_size, hidden_size, CellOptions.make(hidden_size), [params])
