"""Hostile and odd input, as a matrix: every case is either accepted (and then equals the
float64 reference on the same float32 values) or refused with a ValueError / TypeError /
MemoryError whose message names the argument, what was expected and what was given.

The rule these cases pin down is written in the README ("Input rules").
"""
import re

import numpy as np
import pytest

import fastlstm
from fastlstm import reference

from conftest import assert_close, assert_states_close

I, H, B, T = 3, 4, 2, 5


@pytest.fixture(scope="module")
def model():
    return fastlstm.LSTM(I, H, num_layers=2, seed=0)


@pytest.fixture(scope="module")
def x32():
    return np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)


def _expect(model, x, **kwargs):
    """The reference on exactly the float32 values fastlstm computes with."""
    x = np.asarray(x, np.float32)
    return reference.run(model, x, **kwargs)


def _check(got, want):
    (y, state), (yr, state_r) = got, want
    assert y.dtype == np.float32
    assert_close(y, yr)
    assert_states_close(state, state_r)


def _refused(exc, call, *fragments):
    """The call raises exc and the message holds every fragment (regexes)."""
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert re.search(fragment, message), f"{fragment!r} not in {message!r}"
    return message


# --- x: accepted -------------------------------------------------------------------------

def _with_nan(x):
    x = x.copy()
    x[0, 2, 1] = np.nan
    return x


def _with_inf(x):
    x = x.copy()
    x[1, 1, 0] = np.inf
    x[0, 3, 2] = -np.inf
    return x


def _big_but_finite(x):
    x = x.astype(np.float64)
    x[0, 0, 0] = 1e30  # within float32 range: saturates the gates, stays finite
    return x


def _broadcast(x):
    return np.broadcast_to(x[:1], x.shape)


def _readonly(x):
    x = x.copy()
    x.flags.writeable = False
    return x


def _wide_slice(x):
    wide = np.zeros(x.shape[:2] + (7,), np.float32)
    wide[..., 2:5] = x
    return wide[..., 2:5]


def _odd_strides(x):
    big = np.zeros((x.shape[0] * 3, x.shape[1] * 2, x.shape[2]), np.float64)
    big[::3, ::2] = x
    return big[::3, ::2]


def _unaligned(x):
    """A float32 copy of x at an odd address, as a view of a byte buffer read at offset 1:
    C-contiguous float32, but not aligned."""
    x = np.asarray(x, np.float32)
    out = np.frombuffer(bytearray(x.nbytes + 1), np.float32, x.size, offset=1).reshape(x.shape)
    out[...] = x
    assert out.flags.c_contiguous and not out.flags.aligned
    return out


ACCEPTED_X = {
    "float32": lambda x: x,
    "float16": lambda x: x.astype(np.float16),
    "float64": lambda x: x.astype(np.float64),
    "longdouble": lambda x: x.astype(np.longdouble),
    "big_endian_float32": lambda x: x.astype(">f4"),
    "big_endian_float64": lambda x: x.astype(">f8"),
    "fortran_order": lambda x: np.asfortranarray(x),
    "negative_strides": lambda x: x[::-1, ::-1, ::-1],
    "odd_strides": _odd_strides,
    "slice_of_wider_last_axis": _wide_slice,
    "read_only": _readonly,
    "unaligned_float32": _unaligned,
    "broadcast_view": _broadcast,
    "nested_list_of_floats": lambda x: x.tolist(),
    "nested_tuple": lambda x: tuple(tuple(tuple(r) for r in s) for s in x.tolist()),
    "nested_list_of_ints": lambda x: np.rint(x).astype(int).tolist(),
    "numpy_float_scalars_in_list": lambda x: [[[np.float64(v) for v in r] for r in s]
                                              for s in x],
    "nan": _with_nan,
    "inf": _with_inf,
    "large_finite": _big_but_finite,
    "all_zero": lambda x: np.zeros_like(x),
    "matrix_of_subnormals": lambda x: np.full_like(x, 1e-40),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED_X))
def test_accepted_x(model, x32, case):
    x = ACCEPTED_X[case](x32)
    got = model(x)
    _check(got, _expect(model, x))
    # the same values in float32 C order give bitwise the same result
    same = model(np.ascontiguousarray(np.asarray(x, np.float32)))
    np.testing.assert_array_equal(got[0], same[0])


@pytest.mark.parametrize("shape", [(0, T, I), (B, 0, I), (0, 0, I)])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_zero_sized_batch_or_time(model, shape, return_sequences):
    x = np.zeros(shape, np.float32)
    y, (h, c) = model(x, return_sequences=return_sequences)
    yr, (hr, cr) = reference.run(model, x, return_sequences=return_sequences)
    assert y.shape == yr.shape and h.shape == (2, shape[0], H)
    assert_close(y, yr)
    assert_close(h, hr)
    assert_close(c, cr)


def test_nan_propagates_where_ieee_says(model, x32):
    x = _with_nan(x32)
    y, (h, c) = model(x)
    # step 2 of sequence 0 and everything after it in that sequence is NaN; sequence 1 is not
    assert np.isnan(y[0, 2:]).all()
    assert np.isfinite(y[0, :2]).all() and np.isfinite(y[1]).all()
    assert np.isnan(h[:, 0]).all() and np.isfinite(h[:, 1]).all()


def test_time_major_model_accepts_the_same_odd_layouts(x32):
    model = fastlstm.LSTM(I, H, batch_first=False, bidirectional=True, seed=3)
    xt = np.asfortranarray(x32.transpose(1, 0, 2))[::-1]
    _check(model(xt), _expect(model, xt))


# --- x: refused ----------------------------------------------------------------------------

DTYPE_REFUSED = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                 np.uint64, np.bool_, np.complex64, np.complex128, np.clongdouble, object,
                 "U3", "S3", "datetime64[s]", "timedelta64[s]", [("a", np.float32)]]


@pytest.mark.parametrize("dtype", DTYPE_REFUSED, ids=str)
def test_refused_x_dtypes(model, dtype):
    x = np.zeros((B, T, I), dtype=dtype)
    _refused(TypeError, lambda: model(x), r"^x must have a real floating dtype",
             r"float16/32/64", re.escape(str(x.dtype)))


REFUSED_X = {
    # value, exception, fragments
    "none": (None, TypeError, [r"^x must be a real floating array", "NoneType"]),
    "string": ("abc", TypeError, [r"^x must be a real floating array", "str"]),
    "bytes": (b"abc", TypeError, [r"^x must be a real floating array", "bytes"]),
    "ragged_list": ([[[0.0] * I] * T, [[0.0] * I] * (T - 1)], TypeError,
                    [r"^x must be a real floating array", "list", "NumPy cannot read"]),
    "ragged_inner": ([[[0.0] * I, [0.0] * (I - 1)]], TypeError,
                     [r"^x must be a real floating array"]),
    "list_of_strings": ([[["a", "b", "c"]]], TypeError, [r"^x must have a real floating dtype",
                                                         "<U1"]),
    "list_with_none": ([[[0.0, None, 1.0]]], TypeError, [r"^x .*real floating", "object"]),
    "dict": ({"x": 1}, TypeError, [r"^x must have a real floating dtype", "object"]),
    "masked_array": (np.ma.masked_array(np.zeros((B, T, I)), mask=False), TypeError,
                     [r"^x must be a plain array", "masked array", "lengths="]),
    "rank0": (np.float32(1.0), ValueError, [r"^x must have 3 dimensions",
                                            re.escape("(batch, time, input_size)"),
                                            re.escape("got shape ()")]),
    "rank1": (np.zeros(I, np.float32), ValueError, [r"^x must have 3 dimensions",
                                                    re.escape("got shape (3,)")]),
    "rank2": (np.zeros((T, I), np.float32), ValueError, [r"^x must have 3 dimensions",
                                                         re.escape("got shape (5, 3)")]),
    "rank4": (np.zeros((1, B, T, I), np.float32), ValueError,
              [r"^x must have 3 dimensions", re.escape("got shape (1, 2, 5, 3)")]),
    "wrong_width": (np.zeros((B, T, I + 1), np.float32), ValueError,
                    [r"^x must have shape \(batch, time, input_size\) = \(\*, \*, 3\)",
                     re.escape("got (2, 5, 4)")]),
    "beyond_float32": (np.full((B, T, I), 1e39), ValueError,
                       [r"^x holds finite values beyond float32's range", "1e\\+39"]),
    "beyond_float32_longdouble": (np.full((B, T, I), 1e39, np.longdouble), ValueError,
                                  [r"^x holds finite values beyond float32's range"]),
    "zero_width": (np.zeros((B, T, 0), np.float32), ValueError,
                   [r"^x must have shape", re.escape("(*, *, 3)"), re.escape("got (2, 5, 0)")]),
}


@pytest.mark.parametrize("case", sorted(REFUSED_X))
def test_refused_x(model, case):
    value, exc, fragments = REFUSED_X[case]
    _refused(exc, lambda: model(value), *fragments)


def test_huge_broadcast_x_is_refused_before_allocating(model):
    x = np.broadcast_to(np.float64(0), (1 << 20, 1 << 20, I))  # 12 TiB as float32
    _refused(MemoryError, lambda: model(x), r"^x of shape \(1048576, 1048576, 3\)",
             "GiB", "available")


def test_huge_float32_broadcast_is_refused_before_the_kernel(model):
    # already float32 but not contiguous: the copy is what is refused
    x = np.broadcast_to(np.float32(0), (1 << 20, 1 << 16, I))
    _refused(MemoryError, lambda: model(x), r"^x of shape", "GiB")


# --- initial_state -----------------------------------------------------------------------

def _state(model, batch=B, seed=1):
    rng = np.random.default_rng(seed)
    h, c = model.zero_state(batch)
    return (0.5 * rng.standard_normal(h.shape), 0.5 * rng.standard_normal(c.shape))


ACCEPTED_STATES = {
    "float64": lambda h, c: (h, c),
    "float32": lambda h, c: (h.astype(np.float32), c.astype(np.float32)),
    "float16": lambda h, c: (h.astype(np.float16), c.astype(np.float16)),
    "list_pair": lambda h, c: [h, c],
    "fortran": lambda h, c: (np.asfortranarray(h), np.asfortranarray(c)),
    "negative_strides": lambda h, c: (h[:, ::-1][:, ::-1].copy()[::-1][::-1],
                                      c[::-1].copy()[::-1]),
    "read_only": lambda h, c: tuple(_readonly(a) for a in (h, c)),
    "unaligned_float32": lambda h, c: (_unaligned(h), _unaligned(c)),
    "unaligned_h_only": lambda h, c: (_unaligned(h), c.astype(np.float32)),
    "unaligned_per_layer": lambda h, c: (tuple(map(_unaligned, h)), tuple(map(_unaligned, c))),
    "broadcast": lambda h, c: (np.broadcast_to(h[:, :1], h.shape),
                               np.broadcast_to(c[:1], c.shape)),
    "nested_lists": lambda h, c: (h.tolist(), c.tolist()),
    "per_layer_tuple": lambda h, c: (tuple(h), tuple(c)),
    "nan_in_c": lambda h, c: (h, np.where(np.arange(H) == 2, np.nan, c)),
    "inf_in_h": lambda h, c: (np.where(np.arange(H) == 1, np.inf, h), c),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED_STATES))
def test_accepted_states(model, x32, case):
    state = ACCEPTED_STATES[case](*_state(model))
    ref_state = tuple(np.asarray(np.asarray(s, np.float32), np.float64) for s in state)
    _check(model(x32, initial_state=state), _expect(model, x32, initial_state=ref_state))


REFUSED_STATES = {
    "not_a_pair": (lambda h, c: h, TypeError, [r"^initial_state must be a pair \(h0, c0\)",
                                               "ndarray"]),
    "triple": (lambda h, c: (h, c, c), TypeError, [r"^initial_state must be a pair",
                                                   "of length 3"]),
    "string": (lambda h, c: "hc", TypeError, [r"^initial_state must be a pair", "str"]),
    "none_inside": (lambda h, c: (h, None), TypeError,
                    [r"^initial_state c0 must be a real floating array", "NoneType"]),
    "int_dtype": (lambda h, c: (h.astype(np.int64), c), TypeError,
                  [r"^initial_state h0 must have a real floating dtype", "int64"]),
    "complex": (lambda h, c: (h, c.astype(complex)), TypeError,
                [r"^initial_state c0 must have a real floating dtype", "complex128"]),
    "wrong_layers": (lambda h, c: (h[:1], c[:1]), ValueError,
                     [r"^initial_state h0 has 1 layers\*directions but the model has 2"]),
    "too_many_layers": (lambda h, c: (np.concatenate([h, h]), c), ValueError,
                        [r"^initial_state h0 has 4 layers\*directions but the model has 2"]),
    "wrong_batch": (lambda h, c: (h[:, :1], c[:, :1]), ValueError,
                    [r"^initial_state h0 has batch 1 but x has batch 2"]),
    "wrong_batch_c_only": (lambda h, c: (h, c[:, :1]), ValueError,
                           [r"^initial_state c0 has batch 1 but x has batch 2"]),
    "wrong_width": (lambda h, c: (h[..., :3], c), ValueError,
                    [r"^initial_state h0 has width 3 but the model's output size is 4"]),
    "wrong_cell_width": (lambda h, c: (h, np.zeros((2, B, 5))), ValueError,
                         [r"^initial_state c0 has width 5 but the model's cell size is 4"]),
    "rank2": (lambda h, c: (h[0], c[0]), ValueError,
              [r"^initial_state h0 must have 3 dimensions", r"\(layers\*directions, batch, "
               r"features\)", re.escape("got shape (2, 4)")]),
    "rank4": (lambda h, c: (h[None], c), ValueError,
              [r"^initial_state h0 must have 3 dimensions", re.escape("(1, 2, 2, 4)")]),
    "ragged_layers": (lambda h, c: ([h[0], h[1, :1]], c), TypeError,
                      [r"^initial_state h0 must be a real floating array"]),
}


@pytest.mark.parametrize("case", sorted(REFUSED_STATES))
def test_refused_states(model, x32, case):
    make, exc, fragments = REFUSED_STATES[case]
    state = make(*_state(model))
    _refused(exc, lambda: model(x32, initial_state=state), *fragments)


# --- lengths -----------------------------------------------------------------------------

LENGTH_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                 np.uint64]


@pytest.mark.parametrize("dtype", LENGTH_DTYPES, ids=lambda d: np.dtype(d).name)
def test_accepted_length_dtypes(model, x32, dtype):
    lengths = np.array([T, 2], dtype)
    _check(model(x32, lengths=lengths), _expect(model, x32, lengths=np.array([T, 2])))


ACCEPTED_LENGTHS = {
    "list": [3, 0],
    "tuple": (5, 1),
    "all_zero": [0, 0],
    "all_full": [T, T],
    "read_only": _readonly(np.array([1, 4])),
    "unaligned_int32": np.frombuffer(bytearray(9), np.int32, 2, offset=1),
    "strided": np.array([4, 9, 2, 9])[::2],
    "numpy_scalars": [np.int64(2), np.uint8(5)],
}


@pytest.mark.parametrize("case", sorted(ACCEPTED_LENGTHS))
@pytest.mark.parametrize("return_sequences", [True, False])
def test_accepted_lengths(model, x32, case, return_sequences):
    lengths = ACCEPTED_LENGTHS[case]
    _check(model(x32, lengths=lengths, return_sequences=return_sequences),
           _expect(model, x32, lengths=np.asarray(lengths), return_sequences=return_sequences))


REFUSED_LENGTHS = {
    "float": ([1.0, 2.0], TypeError, [r"^lengths must have an integer dtype, got float64"]),
    "float32": (np.array([1, 2], np.float32), TypeError, [r"^lengths .* integer dtype",
                                                          "float32"]),
    "bool": (np.array([True, False]), TypeError, [r"^lengths must have an integer dtype",
                                                  "bool"]),
    "complex": (np.array([1, 2], complex), TypeError, [r"^lengths .* integer dtype",
                                                       "complex128"]),
    "object": (np.array([1, None], object), TypeError, [r"^lengths .* integer dtype",
                                                        "object"]),
    "string": ("12", TypeError, [r"^lengths must be an integer array of shape \(2,\)", "str"]),
    "none_in_list": ([1, None], TypeError, [r"^lengths .* integer dtype", "object"]),
    "ragged": ([[1], [1, 2]], TypeError, [r"^lengths must be an integer array"]),
    "scalar": (3, ValueError, [r"^lengths must have shape \(2,\)", re.escape("got ()")]),
    "two_d": (np.array([[1, 2]]), ValueError, [r"^lengths must have shape \(2,\)",
                                               re.escape("got (1, 2)")]),
    "column": (np.array([[1], [2]]), ValueError, [r"^lengths must have shape \(2,\)",
                                                  re.escape("got (2, 1)")]),
    "wrong_batch": ([1, 2, 3], ValueError, [r"^lengths must have shape \(2,\)",
                                            re.escape("got (3,)")]),
    "empty": ([], TypeError, [r"^lengths must have an integer dtype, got float64"]),
    "negative": ([-1, 2], ValueError, [r"^lengths must lie in \[0, 5\]", "got -1"]),
    "past_time": ([6, 2], ValueError, [r"^lengths must lie in \[0, 5\]", "got 6"]),
    "int64_overflow": (np.array([2**40, 1]), ValueError, [r"^lengths must lie in \[0, 5\]",
                                                          str(2**40)]),
    "uint64_huge": (np.array([2**64 - 1, 1], np.uint64), ValueError,
                    [r"^lengths must lie in \[0, 5\]", str(2**64 - 1)]),
}


@pytest.mark.parametrize("case", sorted(REFUSED_LENGTHS))
def test_refused_lengths(model, x32, case):
    value, exc, fragments = REFUSED_LENGTHS[case]
    _refused(exc, lambda: model(x32, lengths=value), *fragments)


@pytest.mark.parametrize("value", [1, "yes", None, np.array([True])])
def test_refused_return_sequences(model, x32, value):
    _refused(TypeError, lambda: model(x32, return_sequences=value),
             r"^return_sequences must be True or False", re.escape(type(value).__name__))


# --- constructor arguments -----------------------------------------------------------------

REFUSED_CONSTRUCTOR = {
    "input_zero": ({"input_size": 0}, ValueError, [r"^input_size must be >= 1, got 0"]),
    "input_negative": ({"input_size": -3}, ValueError, [r"^input_size must be >= 1, got -3"]),
    "input_float": ({"input_size": 3.0}, TypeError, [r"^input_size must be an integer",
                                                     "float 3.0"]),
    "input_string": ({"input_size": "3"}, TypeError, [r"^input_size must be an integer",
                                                      "str '3'"]),
    "input_bool": ({"input_size": True}, TypeError, [r"^input_size must be an integer",
                                                     "bool True"]),
    "input_none": ({"input_size": None}, TypeError, [r"^input_size must be an integer",
                                                     "NoneType"]),
    "input_huge": ({"input_size": 10**9}, ValueError, [r"^input_size must be <= 16777216",
                                                       "got 1000000000"]),
    "hidden_zero": ({"hidden_size": 0}, ValueError, [r"^hidden_size must be >= 1, got 0"]),
    "hidden_negative": ({"hidden_size": -1}, ValueError, [r"^hidden_size must be >= 1"]),
    "hidden_float": ({"hidden_size": 4.5}, TypeError, [r"^hidden_size must be an integer"]),
    "hidden_nan": ({"hidden_size": float("nan")}, TypeError, [r"^hidden_size must be an "
                                                              r"integer"]),
    "hidden_huge": ({"hidden_size": 10**9}, ValueError, [r"^hidden_size must be <= 16777216",
                                                         "got 1000000000"]),
    "hidden_array": ({"hidden_size": np.array([4])}, TypeError, [r"^hidden_size must be an "
                                                                 r"integer", "ndarray"]),
    "layers_zero": ({"num_layers": 0}, ValueError, [r"^num_layers must be >= 1, got 0"]),
    "layers_huge": ({"num_layers": 10**9}, ValueError, [r"^num_layers must be <= 1024"]),
    "layers_float": ({"num_layers": 2.0}, TypeError, [r"^num_layers must be an integer"]),
    "proj_equal_hidden": ({"proj_size": 4}, ValueError,
                          [r"^proj_size must be smaller than hidden_size \(4\), got 4"]),
    "proj_larger": ({"proj_size": 9}, ValueError, [r"^proj_size must be smaller", "got 9"]),
    "proj_negative": ({"proj_size": -1}, ValueError, [r"^proj_size must be >= 0, got -1"]),
    "proj_float": ({"proj_size": 2.0}, TypeError, [r"^proj_size must be an integer"]),
    "activation_unknown": ({"activation": "swish"}, ValueError,
                           [r"^activation must be one of", "'tanh'", "got 'swish'"]),
    "activation_empty": ({"activation": ""}, ValueError, [r"^activation must be one of",
                                                          "got ''"]),
    "activation_none": ({"activation": None}, TypeError, [r"^activation must be an "
                                                          r"activation name", "None"]),
    "activation_callable": ({"activation": np.tanh}, TypeError,
                            [r"^activation must be an activation name"]),
    "activation_bad_alpha": ({"activation": ("elu", "x")}, TypeError,
                             [r"^activation parameter alpha must be a real number", "'x'"]),
    "activation_nan_alpha": ({"activation": ("elu", float("nan"))}, ValueError,
                             [r"^activation parameter alpha must be finite", "nan"]),
    "activation_huge_beta": ({"activation": ("scaled_tanh", 1.0, 1e300)}, ValueError,
                             [r"^activation parameter beta must be within float32 range",
                              "1e\\+300"]),
    "activation_too_many": ({"activation": ("elu", 1.0, 2.0, 3.0)}, TypeError,
                            [r"^activation must be an activation name or \(name, alpha"]),
    "recurrent_unknown": ({"recurrent_activation": "gelu"}, ValueError,
                          [r"^recurrent_activation must be one of", "got 'gelu'"]),
    "output_unknown": ({"output_activation": "x"}, ValueError,
                       [r"^output_activation must be one of"]),
    "cell_clip_negative": ({"cell_clip": -1.0}, ValueError, [r"^cell_clip must be > 0, got "
                                                             r"-1.0"]),
    "cell_clip_zero": ({"cell_clip": 0}, ValueError, [r"^cell_clip must be > 0, got 0.0"]),
    "cell_clip_nan": ({"cell_clip": float("nan")}, ValueError, [r"^cell_clip must be finite, "
                                                                r"got nan"]),
    "cell_clip_inf": ({"cell_clip": float("inf")}, ValueError, [r"^cell_clip must be finite, "
                                                                r"got inf"]),
    "cell_clip_string": ({"cell_clip": "1"}, TypeError, [r"^cell_clip must be a real number "
                                                         r"or None", "str '1'"]),
    "cell_clip_huge": ({"cell_clip": 1e39}, ValueError, [r"^cell_clip must be within float32 "
                                                         r"range", "1e\\+39"]),
    "gate_clip_negative": ({"gate_clip": -0.5}, ValueError, [r"^gate_clip must be > 0"]),
    "gate_clip_nan": ({"gate_clip": float("nan")}, ValueError, [r"^gate_clip must be finite"]),
    "gate_clip_complex": ({"gate_clip": 1j}, TypeError, [r"^gate_clip must be a real number"]),
    "proj_clip_without_proj": ({"proj_clip": 1.0}, ValueError, [r"^proj_clip needs a "
                                                                r"projection"]),
    "proj_clip_negative": ({"proj_size": 2, "proj_clip": -1.0}, ValueError,
                           [r"^proj_clip must be > 0, got -1.0"]),
    "proj_clip_inf": ({"proj_size": 2, "proj_clip": float("-inf")}, ValueError,
                      [r"^proj_clip must be finite"]),
    "forget_bias_string": ({"forget_bias": "1"}, TypeError, [r"^forget_bias must be a real "
                                                             r"number"]),
    "forget_bias_nan": ({"forget_bias": float("nan")}, ValueError, [r"^forget_bias must be "
                                                                    r"finite"]),
    "forget_bias_huge": ({"forget_bias": -1e300}, ValueError, [r"^forget_bias must be within "
                                                               r"float32 range"]),
    "peepholes_int": ({"peepholes": 1}, TypeError, [r"^peepholes must be True or False",
                                                    "int 1"]),
    "input_forget_string": ({"input_forget": "no"}, TypeError, [r"^input_forget must be True "
                                                                r"or False"]),
    "bidirectional_none": ({"bidirectional": None}, TypeError, [r"^bidirectional must be True "
                                                                r"or False", "NoneType"]),
    "batch_first_int": ({"batch_first": 0}, TypeError, [r"^batch_first must be True or "
                                                        r"False"]),
    "seed_negative": ({"seed": -1}, ValueError, [r"^seed must be a non-negative integer, got "
                                                 r"-1"]),
    "seed_string": ({"seed": "abc"}, TypeError, [r"^seed must be None, a non-negative integer",
                                                 "str 'abc'"]),
    "seed_float": ({"seed": 1.5}, TypeError, [r"^seed must be None", "float 1.5"]),
    "seed_bool": ({"seed": True}, TypeError, [r"^seed must be None", "bool"]),
}


@pytest.mark.parametrize("case", sorted(REFUSED_CONSTRUCTOR))
def test_refused_constructor_arguments(case):
    kwargs, exc, fragments = REFUSED_CONSTRUCTOR[case]
    args = dict(input_size=I, hidden_size=H)
    args.update(kwargs)
    _refused(exc, lambda: fastlstm.LSTM(**args), *fragments)


@pytest.mark.parametrize("case", sorted(k for k, v in REFUSED_CONSTRUCTOR.items()
                                        if "num_layers" not in v[0] and "batch_first" not in
                                        v[0] and "bidirectional" not in v[0]))
def test_refused_cell_arguments(case):
    kwargs, exc, fragments = REFUSED_CONSTRUCTOR[case]
    args = dict(input_size=I, hidden_size=H)
    args.update(kwargs)
    _refused(exc, lambda: fastlstm.LSTMCell(**args), *fragments)


@pytest.mark.parametrize("kwargs", [
    {"input_size": 1 << 24, "hidden_size": 1 << 24},
    {"input_size": 1 << 20, "hidden_size": 1 << 20},
    {"input_size": 3, "hidden_size": 1 << 24},
    {"input_size": 4, "hidden_size": 1 << 16, "num_layers": 1024},
    {"input_size": 1 << 24, "hidden_size": 1 << 12, "bidirectional": True},
])
def test_absurd_sizes_are_refused_before_allocating(kwargs):
    _refused(MemoryError, lambda: fastlstm.LSTM(**kwargs), r"^a model with input_size=",
             "parameters", "GiB", "available")


def test_absurd_cell_size_is_refused_before_allocating():
    _refused(MemoryError, lambda: fastlstm.LSTMCell(1 << 24, 1 << 24), r"^a model with",
             "GiB")


ACCEPTED_CONSTRUCTOR = {
    "numpy_ints": {"input_size": np.int64(I), "hidden_size": np.uint8(H),
                   "num_layers": np.int32(2), "seed": np.int64(3)},
    "numpy_reals": {"cell_clip": np.float32(0.5), "gate_clip": np.int64(3),
                    "forget_bias": np.float16(1.0)},
    "hidden_one": {"hidden_size": 1},
    "projection_one": {"hidden_size": 2, "proj_size": 1, "proj_clip": 0.1},
    "activation_case_and_aliases": {"activation": "Softsign", "recurrent_activation":
                                    "HardSigmoid", "output_activation": "linear"},
    "activation_params": {"activation": ["leaky_relu", 0.1], "recurrent_activation":
                          ("hard_sigmoid", np.float32(0.2), 0.5)},
    "seed_generator": {"seed": np.random.default_rng(1)},
    "tiny_clips": {"cell_clip": 1e-30, "gate_clip": 1e-30},
}


@pytest.mark.parametrize("case", sorted(ACCEPTED_CONSTRUCTOR))
def test_accepted_constructor_arguments(x32, case):
    args = dict(input_size=I, hidden_size=H)
    args.update(ACCEPTED_CONSTRUCTOR[case])
    m = fastlstm.LSTM(**args)
    x = x32 if m.batch_first else x32.transpose(1, 0, 2)
    _check(m(x), _expect(m, x))


# --- LSTMCell calls ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cell():
    return fastlstm.LSTMCell(I, H, proj_size=2, seed=4)


@pytest.mark.parametrize("layout", ["float64", "fortran", "reversed", "broadcast", "list",
                                    "zero_batch", "unaligned"])
def test_cell_accepts(cell, layout):
    x = np.random.default_rng(0).standard_normal((3, I))
    h = np.random.default_rng(1).standard_normal((3, 2))
    c = np.random.default_rng(2).standard_normal((3, H))
    x = {"float64": x, "fortran": np.asfortranarray(x), "reversed": x[::-1],
         "broadcast": np.broadcast_to(x[:1], x.shape), "list": x.tolist(),
         "zero_batch": x[:0], "unaligned": _unaligned(x)}[layout]
    n = len(x)
    state = (h[:n], c[:n])
    if layout == "unaligned":
        state = (_unaligned(h), _unaligned(c))
    y, (hn, cn) = cell(x, state)
    yr, (hr, cr) = reference.run(cell, np.asarray(x, np.float32).astype(np.float64),
                                 initial_state=tuple(np.asarray(s, np.float32) for s in state))
    assert_close(y, yr)
    assert_close(hn, hr)
    assert_close(cn, cr)


@pytest.mark.parametrize("x,state,exc,fragments", [
    (np.zeros((2, I, 1)), None, ValueError, [r"^x_t must have 2 dimensions \(batch, "
                                             r"input_size\)", re.escape("(2, 3, 1)")]),
    (np.zeros(I), None, ValueError, [r"^x_t must have 2 dimensions"]),
    (np.zeros((2, I + 1)), None, ValueError, [r"^x_t must have shape", re.escape("(2, 4)")]),
    (np.zeros((2, I), int), None, TypeError, [r"^x_t must have a real floating dtype",
                                              "int64"]),
    (np.zeros((2, I)), np.zeros((2, 2)), TypeError, [r"^state must be a pair \(h, c\)"]),
    (np.zeros((2, I)), (np.zeros((1, 2)), np.zeros((2, H))), ValueError,
     [r"^state h must have shape \(batch, output_size\) = \(2, 2\)", re.escape("(1, 2)")]),
    (np.zeros((2, I)), (np.zeros((2, 2)), np.zeros((2, H + 1))), ValueError,
     [r"^state c must have shape \(batch, hidden_size\) = \(2, 4\)", re.escape("(2, 5)")]),
    (np.zeros((2, I)), (np.zeros((2, 2)), "c"), TypeError, [r"^state c must be a real "
                                                            r"floating array"]),
])
def test_cell_refuses(cell, x, state, exc, fragments):
    _refused(exc, lambda: cell(x, state), *fragments)


@pytest.mark.parametrize("batch,exc,fragments", [
    (-1, ValueError, [r"^batch_size must be >= 0, got -1"]),
    (1.0, TypeError, [r"^batch_size must be an integer, got float"]),
    ("2", TypeError, [r"^batch_size must be an integer"]),
    (10**15, ValueError, [r"^batch_size must be <= 2147483647 \(2\*\*31 - 1\), got 10{15}"]),
    (2**31 - 1, MemoryError, [r"^a state for batch 2147483647 needs 128 GiB", "available"]),
])
def test_zero_state_refuses(model, batch, exc, fragments):
    _refused(exc, lambda: model.zero_state(batch), *fragments)


@pytest.mark.parametrize("weights,exc,fragments", [
    (None, TypeError, [r"^weights must be a mapping of names", "NoneType"]),
    ([1, 2], TypeError, [r"^weights must be a mapping", "list"]),
    ({}, ValueError, [r"^weights must hold 'weight_ih' of shape \(4\*hidden, input\)"]),
    ({"weight_ih": np.zeros(12)}, ValueError, [r"^weights must hold 'weight_ih'"]),
    ({"weight_ih": np.zeros((0, 3))}, ValueError, [r"^hidden_size must be >= 1, got 0"]),
    ({"weight_ih": np.zeros((8, 3)), "weight_hh": np.zeros((8, 2)), "bias_ih": np.zeros(8),
      "bias_hh": np.zeros(8), "evil": 1}, ValueError, [r"unexpected \['evil'\]"]),
    ({"weight_ih": np.zeros((8, 3)), "weight_hh": np.zeros((8, 2)), "bias_ih": np.zeros(8),
      "bias_hh": np.full(8, np.inf)}, ValueError, [r"bias_hh contains NaN or Inf"]),
    ({"weight_ih": np.zeros((8, 3)), "weight_hh": np.zeros((8, 2)), "bias_ih": np.zeros(8),
      "bias_hh": np.array(["a"] * 8)}, TypeError, [r"bias_hh must be a real array, got <U1"]),
    ({"weight_ih": np.zeros((8, 3)), "weight_hh": np.zeros((8, 3)), "bias_ih": np.zeros(8),
      "bias_hh": np.zeros(8)}, ValueError, [r"weight_hh must have shape \(8, 2\), got \(8, 3\)"]),
])
def test_cell_from_weights_refuses(weights, exc, fragments):
    _refused(exc, lambda: fastlstm.LSTMCell.from_weights(weights), *fragments)


# --- threads -------------------------------------------------------------------------------

@pytest.mark.parametrize("n,exc,fragments", [
    (0, ValueError, [r"^num_threads must be >= 1, got 0"]),
    (-4, ValueError, [r"^num_threads must be >= 1, got -4"]),
    (257, ValueError, [r"^num_threads must be <= 256, got 257"]),
    (10**9, ValueError, [r"^num_threads must be <= 256"]),
    (1.5, TypeError, [r"^num_threads must be an integer, got float 1.5"]),
    (2.0, TypeError, [r"^num_threads must be an integer, got float"]),
    ("2", TypeError, [r"^num_threads must be an integer, got str"]),
    (None, TypeError, [r"^num_threads must be an integer, got NoneType"]),
    (True, TypeError, [r"^num_threads must be an integer, got bool"]),
])
def test_refused_thread_counts(n, exc, fragments):
    before = fastlstm.get_num_threads()
    _refused(exc, lambda: fastlstm.set_num_threads(n), *fragments)
    assert fastlstm.get_num_threads() == before


@pytest.mark.parametrize("n", [1, 2, 256, np.int64(3)])
def test_accepted_thread_counts(model, x32, n):
    fastlstm.set_num_threads(n)
    assert fastlstm.get_num_threads() == int(n)
    _check(model(x32), _expect(model, x32))


# --- streams -------------------------------------------------------------------------------

def test_stream_refuses_bidirectional():
    m = fastlstm.LSTM(I, H, bidirectional=True)
    _refused(ValueError, lambda: m.stream(), r"^stream\(\) needs a unidirectional model")


@pytest.mark.parametrize("kwargs,exc,fragments", [
    ({"batch_size": -1}, ValueError, [r"^batch_size must be >= 0, got -1"]),
    ({"batch_size": 2.0}, TypeError, [r"^batch_size must be an integer"]),
    ({"batch_size": None}, TypeError, [r"^batch_size must be an integer, got NoneType"]),
    ({"batch_size": 10**15}, ValueError, [r"^batch_size must be <= 2147483647"]),
    ({"batch_size": 2**31 - 1}, MemoryError, [r"^a state for batch 2147483647", "GiB"]),
    ({"batch_size": 3, "state": "hc"}, TypeError, [r"^state must be a pair"]),
    ({"batch_size": 3, "state": (np.zeros((2, 2, H)), np.zeros((2, 2, H)))}, ValueError,
     [r"^state has batch 2 but batch_size is 3"]),
    ({"batch_size": 2, "state": (np.zeros((2, 2, H)), np.zeros((2, 2, H + 1)))}, ValueError,
     [r"^state c0 has width 5 but the model's cell size is 4"]),
    ({"batch_size": 2, "state": (np.zeros((2, 2, H), int), np.zeros((2, 2, H)))}, TypeError,
     [r"^state h0 must have a real floating dtype", "got int64"]),
])
def test_stream_construction_refuses(model, kwargs, exc, fragments):
    _refused(exc, lambda: model.stream(**kwargs), *fragments)


def test_stream_step_and_feed_refuse_and_recover(model, x32):
    s = model.stream(batch_size=B)
    _refused(ValueError, lambda: s.step(np.zeros((3, I))), r"^x_t has batch 3 but this stream "
             r"has batch size 2", r"reset\(batch_size=3\)", "StreamPool")
    _refused(ValueError, lambda: s.step(np.zeros((B, I + 1))), r"^x_t must have shape")
    _refused(ValueError, lambda: s.step(np.zeros((B, 1, I))), r"^x_t must have 2 dimensions")
    _refused(TypeError, lambda: s.step(np.zeros((B, I), np.int32)), r"^x_t must have a real "
             r"floating dtype", "got int32")
    _refused(TypeError, lambda: s.step(None), r"^x_t must be a real floating array")
    _refused(ValueError, lambda: s.feed(np.zeros((3, T, I))), r"^x_chunk has batch 3")
    _refused(ValueError, lambda: s.feed(np.zeros((B, T))), r"^x_chunk must have 3 dimensions")
    _refused(ValueError, lambda: s.feed(x32, lengths=[T + 1, 0]), r"^lengths must lie in "
             r"\[0, 5\]")
    _refused(ValueError, lambda: s.reset(batch_size=-2), r"^batch_size must be >= 0")
    # none of the refusals touched the state: the stream still equals a full call
    y = np.stack([s.step(x32[:, t]) for t in range(T)], axis=1)
    assert_close(y, reference.run(model, x32)[0], atol=1e-5)


def test_stream_accepts_odd_layouts(model, x32):
    ref = reference.run(model, x32)[0]
    s = model.stream(batch_size=B)
    steps = [np.asfortranarray(x32[:, 0]), x32[:, 1].astype(np.float64),
             x32[::-1, 2][::-1], np.asarray(x32[:, 3], np.float16), x32[:, 4].tolist()]
    ys = [s.step(v) for v in steps]
    assert_close(ys[0], ref[:, 0])
    assert_close(ys[1], ref[:, 1])
    assert_close(ys[2], ref[:, 2])
    # float16 rounds the input at step 3: from there on compare with a float16-rounded run
    x16 = x32.copy()
    x16[:, 3] = x16[:, 3].astype(np.float16)
    assert_close(ys[3], reference.run(model, x16)[0][:, 3])
    assert_close(ys[4], reference.run(model, x16)[0][:, 4])


def test_stream_steps_unaligned_float32(model, x32):
    """A C-contiguous float32 x_t or state at an odd address (a view of a byte buffer) is
    copied, not refused by the kernel's fast path and handed back as None."""
    ref = reference.run(model, x32)[0]
    s = model.stream(batch_size=B)
    for t in range(T):
        y = s.step(_unaligned(x32[:, t]))
        assert isinstance(y, np.ndarray) and y.shape == (B, H)
        assert_close(y, ref[:, t])
    state = _state(model)
    s.reset(state=(_unaligned(state[0]), _unaligned(state[1])))
    aligned = model.stream(batch_size=B, state=tuple(np.float32(a) for a in state))
    np.testing.assert_array_equal(s.step(_unaligned(x32[:, 0])), aligned.step(x32[:, 0]))


def test_stream_step_raises_if_the_kernel_still_refuses(model, x32):
    """Past the conversion the kernel's fast path always takes x_t; if it ever returned
    nothing, step says so instead of returning None."""
    s = model.stream(batch_size=B)
    s._step = lambda x_t, threads: None
    _refused(RuntimeError, lambda: s.step(x32[:, 0]), r"^Stream.step: the kernel did not take "
             r"x_t", r"float32 \(2, 3\)")


def test_pool_takes_unaligned_inputs_and_states(model, x32):
    pool = fastlstm.StreamPool(model)
    h, c = _state(model, batch=1)
    pool.open("a", state=(_unaligned(h), _unaligned(c)))
    pool.open("b")
    ys = pool.step({"a": _unaligned(x32[0, 0]), "b": _unaligned(x32[1, :1])})
    ref_a = reference.run(model, x32[:1, :1], initial_state=(h, c))[0]
    assert_close(ys["a"], ref_a[0, 0])
    assert_close(ys["b"], reference.run(model, x32[1:, :1])[0][0])


# --- calls the kernel cannot index -----------------------------------------------------------

def test_batch_past_int32_is_refused(model):
    x = np.broadcast_to(np.float32(0), (2**31, 1, I))
    _refused(ValueError, lambda: model.engine.plan(2**31, 1),
             r"^x has batch size 2147483648", r"at most 2147483647")
    _refused(ValueError, lambda: model.engine.plan(1, 2**31),
             r"^x has time size 2147483648")
    _refused((MemoryError, ValueError), lambda: model(x))


def test_call_whose_buffers_do_not_fit_is_refused(model):
    # the input fits (a broadcast float32 view of 3 values), the workspace would not
    x = np.lib.stride_tricks.as_strided(np.zeros(I, np.float32), (1 << 20, 1 << 16, I),
                                        (0, 0, 4))
    _refused(MemoryError, lambda: model.engine.plan(1 << 20, 1 << 16),
             r"^a call on x with batch 1048576 and time 65536", "GiB", "available")
    _refused(MemoryError, lambda: model(x), "GiB")


# --- hypothesis: random arguments -> the reference's numbers or a clean refusal ---------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

FUZZ_MODELS = {
    "stack": lambda: fastlstm.LSTM(3, 4, num_layers=2, seed=0),
    "bidirectional_time_major_projection": lambda: fastlstm.LSTM(
        2, 5, bidirectional=True, batch_first=False, proj_size=3, peepholes=True, seed=1),
    "clipped_odd_activations": lambda: fastlstm.LSTM(
        3, 2, cell_clip=0.7, gate_clip=2.0, activation="relu", recurrent_activation="hard_sigmoid",
        input_forget=True, seed=2),
}
_FUZZ_BUILT = {}
FUZZ_DTYPES = [np.float16, np.float32, np.float64, np.longdouble, np.int32, np.uint8, np.bool_,
               np.complex64, object]
SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 1e-42, 1e39]


def _fuzz_model(name):
    if name not in _FUZZ_BUILT:
        _FUZZ_BUILT[name] = FUZZ_MODELS[name]()
    return _FUZZ_BUILT[name]


@st.composite
def _call_args(draw):
    model = _fuzz_model(draw(st.sampled_from(sorted(FUZZ_MODELS))))
    B, T = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    good = (B, T, model.input_size) if model.batch_first else (T, B, model.input_size)
    shape = draw(st.one_of(st.just(good), st.just(good), st.just(good),
                           st.lists(st.integers(0, 4), max_size=4).map(tuple)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.standard_normal(shape)
    if values.size and draw(st.booleans()):
        flat = values.reshape(-1)
        for _ in range(draw(st.integers(1, 3))):
            flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from(SPECIALS))
    dtype = draw(st.sampled_from(FUZZ_DTYPES))
    with np.errstate(all="ignore"):
        x = values.astype(dtype)
    layout = draw(st.sampled_from(["c", "fortran", "reversed", "list"]))
    if layout == "fortran":
        x = np.asfortranarray(x)
    elif layout == "reversed" and x.ndim:
        x = x[::-1]
    elif layout == "list":
        x = x.tolist()
    kwargs = {}
    which = draw(st.sampled_from(["none", "good", "bad_list", "floats", "bools", "2d"]))
    if which == "good":
        kwargs["lengths"] = draw(st.lists(st.integers(0, T), min_size=B, max_size=B))
    elif which == "bad_list":
        kwargs["lengths"] = draw(st.lists(st.integers(-2, T + 2), max_size=5))
    elif which == "floats":
        kwargs["lengths"] = np.full(B, T, np.float64)
    elif which == "bools":
        kwargs["lengths"] = np.ones(B, bool)
    elif which == "2d":
        kwargs["lengths"] = np.full((B, 1), T)
    state = draw(st.sampled_from(["none", "good", "float64", "wrong_batch", "nan", "tuple3"]))
    if state != "none":
        h, c = model.zero_state(B)
        h = rng.standard_normal(h.shape)
        c = rng.standard_normal(c.shape)
        if state == "good":
            h, c = h.astype(np.float32), c.astype(np.float32)
        elif state == "wrong_batch":
            h = h[:, :max(B - 1, 0)]
        elif state == "nan" and h.size:
            h.reshape(-1)[0] = np.nan
        kwargs["initial_state"] = (h, c, c) if state == "tuple3" else (h, c)
    kwargs["return_sequences"] = draw(st.sampled_from([True, False, True, 1]))
    return model, x, kwargs


@settings(max_examples=250, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(_call_args())
def test_fuzz_call_arguments(args):
    model, x, kwargs = args
    try:
        got = model(x, **kwargs)
    except (ValueError, TypeError) as exc:
        assert str(exc), "a refusal must say why"
        return
    ref_kwargs = dict(kwargs)
    if "initial_state" in kwargs:
        ref_kwargs["initial_state"] = tuple(np.asarray(s, np.float32)
                                            for s in kwargs["initial_state"])
    if "lengths" in kwargs:
        ref_kwargs["lengths"] = np.asarray(kwargs["lengths"])
    _check(got, _expect(model, x, **ref_kwargs))
