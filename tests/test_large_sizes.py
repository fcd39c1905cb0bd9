"""Sizes past 32-bit BLAS indices.

``scipy.linalg.cython_blas.sgemm`` takes 32-bit ints, so the kernel does the input projection
Gx = X . W_ih^T in slices of at most FL_GEMM_MAX_ELEMS = 2**30 elements (csrc/fastlstm.c):
``chunk = 2**30 // max(input_size, 4*hidden)`` rows per sgemm call, per thread. All offsets
into x, Gx and y are computed in 64 bits.

Crossing a chunk needs more than 2**30 elements in x or Gx (4 GiB); on a CI VM merely touching
that memory takes ~20 s, so the real sizes are opt-in:

- ``test_input_projection_crosses_the_sgemm_chunk`` (``FASTLSTM_TEST_LARGE=1``, 4 GiB, ~25 s):
  one thread, input_size 2**14, so a chunk is 65536 rows; 65569 rows make a second sgemm call
  that starts inside a sequence.
- ``test_offsets_past_2_31_elements`` (``FASTLSTM_TEST_HUGE=1``, ~9 GiB, a minute or two):
  element offsets into x past 2**31, with 1 and 2 threads.
- ``test_small_chunks`` (CI) exercises the same slicing at tiny sizes through a test-only hook
  ``_core.set_gemm_max_elems(n)``; it is skipped until the native core provides that hook.
- Requests the kernel could not index or that would not fit are refused in Python before any
  allocation (also covered in test_bad_input.py).
"""
import os

import numpy as np
import pytest

import fastlstm
from fastlstm import reference
from fastlstm._checks import available_memory

from conftest import assert_close

GEMM_MAX_ELEMS = 1 << 30  # FL_GEMM_MAX_ELEMS in csrc/fastlstm.c
GIB = 1 << 30

# A dot product over 2**14 inputs rounds more than the table's typical sizes.
LONG_SUM_TOL = {"atol": 2e-5, "rtol": 2e-4}


def _fill(shape, seed=0):
    """A large float32 array quickly: a prime-length random pattern repeated by doubling
    copies, so neighbouring rows (and the rows either side of a chunk boundary) differ."""
    x = np.empty(int(np.prod(shape)), np.float32)
    n = min(100003, x.size)
    x[:n] = 0.05 * np.random.default_rng(seed).standard_normal(n)
    while n < x.size:
        k = min(n, x.size - n)
        x[n:n + k] = x[:k]
        n += k
    return x.reshape(shape)


def _needs(gib):
    if available_memory() < gib * GIB:
        pytest.skip(f"needs {gib} GiB of free memory")


def _check_rows(model, x, y, h, c, sequences):
    yr, (hr, cr) = reference.run(model, x[sequences])
    assert_close(y[sequences], yr, **LONG_SUM_TOL)
    assert_close(h[:, sequences], hr, **LONG_SUM_TOL)
    assert_close(c[:, sequences], cr, **LONG_SUM_TOL)


@pytest.mark.skipif(os.environ.get("FASTLSTM_TEST_LARGE") != "1",
                    reason="opt-in: FASTLSTM_TEST_LARGE=1 (4 GiB, ~25 s)")
def test_input_projection_crosses_the_sgemm_chunk():
    _needs(6)
    I, T = 1 << 14, 17
    chunk = GEMM_MAX_ELEMS // I               # 65536 rows per sgemm call
    B = chunk // T + 2                         # 3857 sequences, 65569 rows
    boundary = chunk // T                      # sequence 3855 holds rows 65535..65551
    assert B * T > chunk and boundary * T < chunk < (boundary + 1) * T
    model = fastlstm.LSTM(I, 1, seed=0)
    x = _fill((B, T, I))
    fastlstm.set_num_threads(1)                # one thread: its rows span the boundary
    y, (h, c) = model(x)
    _check_rows(model, x, y, h, c, slice(boundary - 1, B))
    _check_rows(model, x, y, h, c, slice(0, 2))


@pytest.mark.skipif(os.environ.get("FASTLSTM_TEST_HUGE") != "1",
                    reason="opt-in: FASTLSTM_TEST_HUGE=1 (about 9 GiB, a minute or two)")
def test_offsets_past_2_31_elements():
    _needs(10)
    I, T = 1 << 14, 8
    B = (1 << 31) // (I * T) + 3               # x holds 2**31 + 3*I*T elements
    model = fastlstm.LSTM(I, 2, seed=1)
    x = _fill((B, T, I))
    for threads in (1, 2):
        fastlstm.set_num_threads(threads)
        y, (h, c) = model(x)
        _check_rows(model, x, y, h, c, slice(B - 4, B))
        _check_rows(model, x, y, h, c, slice(B // 2 - 1, B // 2 + 1))


@pytest.fixture
def small_chunks():
    """The test-only hook: the kernel's sgemm slice limit (elements), restored afterwards."""
    from fastlstm import _core

    if not hasattr(_core, "set_gemm_max_elems"):
        pytest.skip("needs the test-only hook _core.set_gemm_max_elems (see the module doc)")
    before = _core.set_gemm_max_elems(1)
    yield _core.set_gemm_max_elems
    _core.set_gemm_max_elems(before)


@pytest.mark.parametrize("limit", [1, 7, 64, 1000])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("config", [
    dict(input_size=5, hidden_size=3),
    dict(input_size=2, hidden_size=9, num_layers=2, bidirectional=True),
    dict(input_size=33, hidden_size=4, proj_size=2, batch_first=False),
])
def test_small_chunks(small_chunks, limit, threads, config):
    small_chunks(limit)
    fastlstm.set_num_threads(threads)
    model = fastlstm.LSTM(seed=2, **config)
    shape = (7, 11, model.input_size) if model.batch_first else (11, 7, model.input_size)
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    lengths = np.array([11, 0, 3, 11, 5, 1, 10])
    for kwargs in ({}, {"lengths": lengths}):
        y, (h, c) = model(x, **kwargs)
        yr, (hr, cr) = reference.run(model, x, **kwargs)
        assert_close(y, yr)
        assert_close(h, hr)
        assert_close(c, cr)


def test_memory_check_counts_the_workspace():
    model = fastlstm.LSTM(1, 256, seed=0)
    # x is small (tens of MB as float32); the input projection (rows x 4H floats) is what
    # would not fit
    rows = 2 * available_memory() // (4 * 4 * 256) + 1
    x = np.broadcast_to(np.zeros((1, 1, 1), np.float32), (int(rows), 1, 1))
    with pytest.raises(MemoryError, match=r"^x of shape|^a call on x with batch"):
        model(x)
    with pytest.raises(MemoryError, match=r"^a call on x with batch \d+ and time 1 \(input "
                                          r"projection \d+ x 1024 floats"):
        model._check_call_size(int(rows), 1, True)


@pytest.mark.parametrize("B,T", [(2**31, 1), (1, 2**31), (2**40, 2**40)])
def test_sizes_past_the_kernels_int_are_refused(B, T):
    model = fastlstm.LSTM(2, 3)
    with pytest.raises(ValueError, match=r"^x has (batch|time) size \d+; fastlstm supports at "
                                         r"most 2147483647 \(2\*\*31 - 1\)"):
        model._check_call_size(B, T, True)


def test_stream_batch_past_int_is_refused():
    model = fastlstm.LSTM(2, 3)
    with pytest.raises(ValueError, match=r"^batch_size must be <= 2147483647"):
        model.stream(batch_size=2**31)
