"""Reduced precision: ``quantize(model, "int8" | "bfloat16" | "float32")``.

What is quantized, and how (the design of the error; the measured errors are in the README):

- The products' weights, W_ih, W_hh and W_hr. int8: symmetric, one float32 scale per row
  (per gate unit), ``scale = max|w_row| / 127``, codes ``rint(w / scale)``; a row's error is
  then at most half its own step, however the rows differ. bfloat16: float32 rounded to
  nearest even (8 significant bits).
- The rows they multiply, at run time, in the kernels (csrc/fl_quant.c): int8 quantizes each
  row of inputs and of h on its own, every step, with its own scale ``max|row| / 127`` (a
  row's range is its own, not the batch's, so one loud sequence costs the others nothing and
  a row's result never depends on the batch); bfloat16 rounds them to nearest even.
- Everything else stays float32: biases (and ``forget_bias``), peepholes, the gate math, the
  cell state, the outputs and the state handed back. int8 sums are exact (int32), bfloat16
  sums are float32.

A quantized model is a model of the same class with the same API. Its ``layers`` carry
``precision``, the ``codes`` (per direction, per weight: int8 codes and their row scales, or
bfloat16 bit patterns as uint16 and None) and, as ``directions``, the float32 values the
codes stand for, which is what ``weights``, the NumPy reference and the float32 loaders see.
"""
from dataclasses import replace

import numpy as np

PRECISIONS = ("float32", "bfloat16", "int8")
QUANTIZED = ("weight_ih", "weight_hh", "weight_hr")
# int8 keeps W_ih in two parts: "weight_ih" and, of what it misses, "weight_ih_lo"
SECOND_PART = {"weight_ih_lo": "weight_ih"}


def check_precision(precision, name="precision"):
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, PRECISIONS))}, "
                         f"got {precision!r}")
    return precision


def int8_codes(w):
    """Row-wise symmetric int8: (codes int8, scales float32) with w ~ codes * scales[:, None]."""
    w = np.asarray(w, np.float32)
    scales = (np.abs(w).max(axis=1) / np.float32(127)).astype(np.float32)
    safe = np.where(scales > 0, scales, np.float32(1))
    codes = np.clip(np.rint(w / safe[:, None]), -127, 127).astype(np.int8)
    return codes, scales


def bf16_codes(w):
    """float32 to bfloat16 bit patterns (uint16), rounded to nearest even; a finite value
    that would round to infinity (|w| > 3.39e38) saturates at the largest bfloat16."""
    w = np.ascontiguousarray(w, np.float32)
    bits = w.view(np.uint32).astype(np.uint64)
    codes = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    overflow = np.isfinite(w) & ((codes & 0x7FFF) == 0x7F80)
    codes[overflow] = (codes[overflow] & 0x8000) | 0x7F7F
    return codes


def values(precision, codes, scales):
    """The float32 values that codes stand for."""
    if precision == "int8":
        return (codes.astype(np.float32) * scales[:, None]).astype(np.float32)
    return (codes.astype(np.uint32) << 16).view(np.float32)


def weight_values(precision, coded, name):
    """The float32 values of weight `name` in a direction's codes (both parts when it has a
    second)."""
    first = values(precision, *coded[name])
    for second, of in SECOND_PART.items():
        if of == name and second in coded:
            first = (first + values(precision, *coded[second])).astype(np.float32)
    return first


def check_codes(precision, name, codes, scales, shape, where):
    """Codes read from a file or a pickle: dtype, shape, and finite values."""
    dtype = np.int8 if precision == "int8" else np.uint16
    codes = np.asarray(codes)
    if codes.dtype != dtype or codes.shape != shape:
        raise ValueError(f"{where} {name}: {precision} codes must be {np.dtype(dtype)} of shape "
                         f"{shape}, got {codes.dtype} {codes.shape}")
    if precision == "int8":
        scales = np.asarray(scales)
        if scales.dtype != np.float32 or scales.shape != shape[:1]:
            raise ValueError(f"{where} {name}: int8 scales must be float32 of shape "
                             f"{shape[:1]}, got {scales.dtype} {scales.shape}")
        if not np.all(np.isfinite(scales)) or np.any(scales < 0):
            raise ValueError(f"{where} {name}: int8 scales must be finite and >= 0")
        if np.any(codes == -128):
            raise ValueError(f"{where} {name}: int8 codes must be within -127..127")
    else:
        scales = None
        if not np.all(np.isfinite(values(precision, codes, None))):
            raise ValueError(f"{where} {name}: bfloat16 codes contain NaN or Inf")
    codes = np.array(codes, order="C")
    codes.flags.writeable = False
    if scales is not None:
        scales = np.array(scales, order="C")
        scales.flags.writeable = False
    return codes, scales


def with_codes(layer, precision, codes):
    """``layer`` holding ``codes`` (per direction, name -> (codes, scales)), its weights the
    values they stand for."""
    if precision == "float32":
        return replace(layer, precision="float32", codes=())
    directions = []
    for params, coded in zip(layer.directions, codes):
        params = dict(params)
        for name in coded:
            if name in QUANTIZED:
                arr = weight_values(precision, coded, name)
                arr.flags.writeable = False
                params[name] = arr
        directions.append(params)
    return replace(layer, directions=tuple(directions), precision=precision, codes=tuple(codes))


def quantize_layer(layer, precision):
    """``layer`` in ``precision``, from its float32 weights (a quantized layer's values)."""
    check_precision(precision)
    if precision == layer.precision:
        return layer
    if precision == "float32":
        return replace(layer, precision="float32", codes=())
    codes = []
    for params in layer.directions:
        coded = {}
        for name in QUANTIZED:
            if name in params:
                w = params[name]
                if precision == "int8":
                    c, s = int8_codes(w)
                else:
                    c, s = bf16_codes(w), None
                coded[name] = (c, s)
                if precision == "int8" and name in SECOND_PART.values():
                    second = next(k for k, v in SECOND_PART.items() if v == name)
                    coded[second] = int8_codes(w - values("int8", c, s))
        for c, s in coded.values():
            for a in (c, s):
                if a is not None:
                    a.flags.writeable = False
        codes.append(coded)
    return with_codes(layer, precision, codes)


def unpickle_codes(precision, name, shape, raw, where):
    """A pickled (shape, dtype, codes bytes, scales bytes) back to checked (codes, scales)."""
    if (name not in QUANTIZED and not (name in SECOND_PART and precision == "int8")) \
            or shape is None:
        raise ValueError(f"{where}: {name!r} is not a {precision} weight of the layer")
    if not isinstance(raw, (tuple, list)) or len(raw) != 4:
        raise ValueError(f"{where} {name}: malformed codes (shape, dtype, codes and scales "
                         f"expected)")
    code_shape, dtype, data, scale_data = raw
    if dtype not in ("|i1", "<u2"):
        raise ValueError(f"{where} {name}: codes of dtype {dtype!r}")
    codes = np.frombuffer(data, np.dtype(dtype)).reshape(code_shape)
    scales = None if scale_data is None else np.frombuffer(scale_data, "<f4")
    return check_codes(precision, name, codes, scales, tuple(shape), where)
