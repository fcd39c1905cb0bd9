"""Shared test helpers: the one float32 tolerance table and model/input builders."""
import numpy as np
import pytest

import fastlstm

# Native float32 against the float64 reference. Bounded activations keep values O(1), so an
# absolute bound is meaningful; unbounded ones (relu, affine...) are compared relatively too.
TOLERANCE = {"atol": 2e-6, "rtol": 2e-5}


def assert_close(actual, expected, **overrides):
    tol = dict(TOLERANCE, **overrides)
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               **tol)


def assert_states_close(got, want):
    (h, c), (hr, cr) = got, want
    if isinstance(h, tuple):
        for a, b in zip(h + c, hr + cr):
            assert_close(a, b)
    else:
        assert_close(h, hr)
        assert_close(c, cr)


def random_input(model, batch, steps, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    shape = (batch, steps, model.input_size) if model.batch_first else \
        (steps, batch, model.input_size)
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def random_state(model, batch, seed=1):
    rng = np.random.default_rng(seed)
    h, c = model.zero_state(batch)
    return ((0.5 * rng.standard_normal(h.shape)).astype(np.float32),
            (0.5 * rng.standard_normal(c.shape)).astype(np.float32))


@pytest.fixture(autouse=True)
def _restore_threads():
    n = fastlstm.get_num_threads()
    yield
    fastlstm.set_num_threads(n)
