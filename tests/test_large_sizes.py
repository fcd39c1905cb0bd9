"""Sizes past 32-bit BLAS indices.

``scipy.linalg.cython_blas.sgemm`` takes 32-bit ints. The kernel (csrc/fl_run.c,
``input_projection``) never hands it a size that grows with the input: each call covers at
most FL_PROJ_ROWS = 1024 rows and FL_K_CHUNK = 64 inputs, and every offset into x, Gx and y
is computed in 64 bits, in the tile kernels too (which project the inputs wherever AVX2 or
AVX-512 is available; the sgemm path runs on the portable build, test_kernels.py). These
tests run the real thing: many row and input blocks at small sizes, and an input whose
element offsets pass 2**31 (8 GiB of x, about half a minute).
Requests the kernel could not index or that would not fit are refused in Python before any
allocation (also covered in test_bad_input.py).
"""
import numpy as np
import pytest

import fastlstm
from fastlstm import reference

from fastlstm._checks import available_memory

from conftest import assert_close

PROJ_ROWS, K_CHUNK = 1024, 64    # FL_PROJ_ROWS, FL_K_CHUNK in csrc/

# A dot product over 2**14 inputs rounds more than the table's typical sizes.
LONG_SUM_TOL = {"atol": 2e-5, "rtol": 2e-4}


def _fill(shape, seed=0):
    """A large float32 array quickly: a prime-length random pattern repeated by doubling
    copies, so neighbouring rows (and the rows either side of a block boundary) differ."""
    x = np.empty(int(np.prod(shape)), np.float32)
    n = min(100003, x.size)
    x[:n] = 0.05 * np.random.default_rng(seed).standard_normal(n)
    while n < x.size:
        k = min(n, x.size - n)
        x[n:n + k] = x[:k]
        n += k
    return x.reshape(shape)


def _check_rows(model, x, y, h, c, sequences):
    yr, (hr, cr) = reference.run(model, x[sequences])
    assert_close(y[sequences], yr, **LONG_SUM_TOL)
    assert_close(h[:, sequences], hr, **LONG_SUM_TOL)
    assert_close(c[:, sequences], cr, **LONG_SUM_TOL)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("config", [
    dict(input_size=3 * K_CHUNK + 5, hidden_size=3),
    dict(input_size=K_CHUNK + 1, hidden_size=9, num_layers=2, bidirectional=True),
    dict(input_size=2 * K_CHUNK, hidden_size=4, proj_size=2, batch_first=False),
])
def test_input_projection_in_many_row_and_input_blocks(threads, config):
    """More rows than one sgemm call takes (per thread) and several input blocks."""
    fastlstm.set_num_threads(threads)
    model = fastlstm.LSTM(seed=2, **config)
    B, T = 5, (2 * threads * PROJ_ROWS) // 5 + 7
    shape = (B, T, model.input_size) if model.batch_first else (T, B, model.input_size)
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    lengths = np.array([T, 0, 3, T - 1, T // 2])
    for kwargs in ({}, {"lengths": lengths}):
        y, (h, c) = model(x, **kwargs)
        yr, (hr, cr) = reference.run(model, x, **kwargs)
        assert_close(y, yr, **LONG_SUM_TOL)
        assert_close(h, hr, **LONG_SUM_TOL)
        assert_close(c, cr, **LONG_SUM_TOL)


def test_offsets_past_2_31_elements():
    """x holds more than 2**31 elements (8 GiB): rows past that offset, on 2 threads, give
    the reference's numbers."""
    I, T = 1 << 14, 8
    B = (1 << 31) // (I * T) + 3
    model = fastlstm.LSTM(I, 2, seed=1)
    x = _fill((B, T, I))
    fastlstm.set_num_threads(2)
    y, (h, c) = model(x)
    _check_rows(model, x, y, h, c, slice(B - 4, B))
    _check_rows(model, x, y, h, c, slice(B // 2 - 1, B // 2 + 1))
    del x, y


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
        model.engine.plan(int(rows), 1)


@pytest.mark.parametrize("B,T", [(2**31, 1), (1, 2**31), (2**40, 2**40)])
def test_sizes_past_the_kernels_int_are_refused(B, T):
    model = fastlstm.LSTM(2, 3)
    with pytest.raises(ValueError, match=r"^x has (batch|time) size \d+; fastlstm supports at "
                                         r"most 2147483647 \(2\*\*31 - 1\)"):
        model.engine.plan(B, T)


def test_stream_batch_past_int_is_refused():
    model = fastlstm.LSTM(2, 3)
    with pytest.raises(ValueError, match=r"^batch_size must be <= 2147483647"):
        model.stream(batch_size=2**31)
