"""Shared test helpers: the one float32 tolerance table, model/input builders and a fresh
process on the portable kernels."""
import os
import subprocess
import sys
import textwrap

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


# torch.onnx.export's own warnings: the legacy exporter warns about itself and calls its own
# deprecated helpers; torch.export (dynamo=True) calls a pytree helper it deprecates itself
_TORCH_EXPORT_WARNINGS = [
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export"
                               ":DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed. Please remove usage of "
                               "this function:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Exporting a model to ONNX with a batch_size other than 1"
                               ":UserWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"
                               ":FutureWarning"),
]


def torch_export_warnings(test):
    """Decorator: the test may call torch.onnx.export, whose own warnings are not errors."""
    for mark in _TORCH_EXPORT_WARNINGS:
        test = mark(test)
    return test


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


def run_portable(code, cwd, timeout=120):
    """Run ``code`` in a fresh interpreter under FASTLSTM_SIMD=portable (the plain C kernels,
    as on a CPU without AVX2/FMA; the kernel table is chosen once per process) with this
    folder importable (``from conftest import ...``); return its stdout, failing on an error."""
    env = dict(os.environ, FASTLSTM_SIMD="portable")
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(autouse=True)
def _restore_threads():
    n = fastlstm.get_num_threads()
    yield
    fastlstm.set_num_threads(n)
