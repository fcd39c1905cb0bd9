"""The one activation table: names, parameters and the float64 math the kernels must match.

An activation is written as a name (``"tanh"``), or with its parameters as ``(name, alpha)`` /
``(name, alpha, beta)``. Names are case-insensitive; ONNX spellings (``"HardSigmoid"``,
``"LeakyRelu"``...) are accepted. Every spec is normalised to ``(name, alpha, beta)``.
The native kernel implements the same kinds in ``csrc/fl_cell.c`` (``fl_activate``), sigmoid
and tanh by the kernel table's own (``csrc/fl_simd_*.c``).
"""
import numpy as np

from ._checks import FLOAT32_MAX


def _sigmoid(v, a, b):
    return 0.5 * (1.0 + np.tanh(0.5 * v))


def _softplus(v, a, b):
    return np.maximum(v, 0) + np.log1p(np.exp(-np.abs(v)))


def _elu(v, a, b):
    return np.where(v >= 0, v, a * np.expm1(np.minimum(v, 0)))


# name: (default alpha, default beta, math); alpha/beta are ignored where the math has none.
TABLE = {
    "tanh": (1.0, 0.0, lambda v, a, b: np.tanh(v)),
    "sigmoid": (1.0, 0.0, _sigmoid),
    "relu": (1.0, 0.0, lambda v, a, b: np.maximum(v, 0)),
    # Keras 3 and PyTorch: relu6(x + 3) / 6, i.e. clip(x/6 + 1/2, 0, 1). ONNX models carry
    # their own alpha (0.2 by default there), which the ONNX loader passes on.
    "hard_sigmoid": (1.0 / 6.0, 0.5, lambda v, a, b: np.clip(a * v + b, 0, 1)),
    "affine": (1.0, 0.0, lambda v, a, b: a * v + b),
    "softsign": (1.0, 0.0, lambda v, a, b: v / (1 + np.abs(v))),
    "softplus": (1.0, 0.0, _softplus),
    "elu": (1.0, 0.0, _elu),
    "leaky_relu": (0.01, 0.0, lambda v, a, b: np.where(v >= 0, v, a * v)),
    "thresholded_relu": (1.0, 0.0, lambda v, a, b: np.where(v > a, v, 0)),
    "scaled_tanh": (1.0, 1.0, lambda v, a, b: a * np.tanh(b * v)),
}

_ALIASES = {name.replace("_", ""): name for name in TABLE}
_ALIASES.update({"linear": "affine", "identity": "affine", "none": "affine"})


def resolve(spec, argname="activation"):
    """Normalise an activation spec to ``(name, alpha, beta)``; raise naming ``argname``."""
    if isinstance(spec, str):
        name, params = spec, ()
    elif isinstance(spec, (tuple, list)) and 1 <= len(spec) <= 3 and isinstance(spec[0], str):
        name, params = spec[0], tuple(spec[1:])
    else:
        raise TypeError(f"{argname} must be an activation name or (name, alpha[, beta]), "
                        f"got {spec!r}")
    key = _ALIASES.get(name.lower().replace("_", ""))
    if key is None:
        raise ValueError(f"{argname} must be one of {sorted(TABLE) + ['linear']}, got {name!r}")
    alpha, beta, _ = TABLE[key]
    if name.lower() in ("linear", "identity", "none"):
        alpha, beta = 1.0, 0.0
    values = [alpha, beta]
    for i, p in enumerate(params):
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
            raise TypeError(f"{argname} parameter {'alpha' if i == 0 else 'beta'} must be a real "
                            f"number, got {p!r}")
        if not np.isfinite(p):
            raise ValueError(f"{argname} parameter {'alpha' if i == 0 else 'beta'} must be finite, "
                             f"got {p!r}")
        if abs(float(p)) > FLOAT32_MAX:
            raise ValueError(f"{argname} parameter {'alpha' if i == 0 else 'beta'} must be within "
                             f"float32 range, got {p!r}")
        values[i] = float(p)
    return (key, values[0], values[1])


def apply(spec, v):
    """Apply a normalised spec to an array (any float dtype)."""
    name, alpha, beta = spec
    out = TABLE[name][2](v, alpha, beta)
    return np.asarray(out, dtype=v.dtype)
