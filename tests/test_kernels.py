"""The kernel's own pieces: SIMD activations against float64, and the portable (non-AVX2)
code path against the reference in a fresh process."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastlstm import _core, activations

from conftest import run_portable

GRID = np.concatenate([
    np.linspace(-20, 20, 200001),
    np.linspace(-0.6, 0.6, 20001),          # around tanh's switch between its two formulas
    [0.0, -0.0, 1e-30, -1e-30, 1e-8, 88.0, -88.0, 100.0, -100.0, 1e30, -1e30],
]).astype(np.float32)


@pytest.mark.parametrize("name,bound", [("sigmoid", 1.5e-7), ("tanh", 2.5e-7)])
def test_vectorized_activation_error_bound(name, bound):
    """The activations of the kernel table in use (fl_activate calls them), against float64:
    csrc/fl_simd_internal.h states 1e-7 for the SIMD tables; libm's serve the portable one."""
    spec = activations.resolve(name)
    values = GRID.copy()
    _core.apply_activation(spec, values)
    exact = activations.apply(spec, GRID.astype(np.float64))
    assert np.abs(values - exact).max() < bound
    assert np.all(np.abs(values) <= 1.0)


def test_activation_special_values():
    for name in ("sigmoid", "tanh"):
        v = np.array([np.nan, np.inf, -np.inf, 0.0], np.float32)
        _core.apply_activation(activations.resolve(name), v)
        assert np.isnan(v[0])
        assert v[1] == 1.0 and abs(v[2] - (0.0 if name == "sigmoid" else -1.0)) < 1e-30
        assert v[3] == (0.5 if name == "sigmoid" else 0.0)


@pytest.mark.parametrize("name", sorted(activations.TABLE))
def test_every_activation_kernel_matches_the_table(name):
    spec = activations.resolve(name)
    x = np.linspace(-6, 6, 1001).astype(np.float32)
    got = x.copy()
    _core.apply_activation(spec, got)
    np.testing.assert_allclose(got, activations.apply(spec, x.astype(np.float64)),
                               rtol=1e-6, atol=3e-7)


def test_portable_path_matches_reference(tmp_path):
    """FASTLSTM_SIMD=portable forces the plain C kernels, as on a CPU without AVX2/FMA."""
    code = """
        import numpy as np, fastlstm
        from fastlstm import reference, show_config
        assert fastlstm.runtime.config()["simd"].startswith("portable")
        for kw in ({}, {"bidirectional": True, "num_layers": 2, "proj_size": 3, "peepholes": True}):
            m = fastlstm.LSTM(7, 13, seed=1, **kw)
            x = np.random.default_rng(0).standard_normal((5, 6, 7)).astype(np.float32)
            lengths = np.array([6, 0, 3, 6, 1])
            y, (h, c) = m(x, lengths=lengths)
            yr, (hr, cr) = reference.run(m, x, lengths=lengths)
            assert np.abs(y - yr).max() < 2e-6, np.abs(y - yr).max()
            assert np.abs(c - cr).max() < 2e-6
            s = m.stream(1) if not kw else None
            if s is not None:
                y1 = s.step(x[:1, 0])
                assert np.abs(y1 - yr[:1, 0]).max() < 2e-6
        print("portable ok")
    """
    assert "portable ok" in run_portable(code, tmp_path)


def test_portable_sgemm_projection_is_the_same_for_any_thread_count(tmp_path):
    """The portable build projects the inputs with BLAS sgemm, in row chunks cut at fixed
    places (several chunks, several K blocks here, with and without lengths): 1, 2 and 3
    threads give the same bits, whatever kernel OpenBLAS picks, and match the reference."""
    code = """
        import numpy as np, fastlstm
        from fastlstm import reference
        assert fastlstm.runtime.config()["blas_used"]
        m = fastlstm.LSTM(300, 24, seed=2)
        x = np.random.default_rng(0).standard_normal((6, 400, 300)).astype(np.float32)
        lengths = np.array([400, 17, 399, 0, 250, 1])
        for kw in ({}, {"lengths": lengths}):
            runs = []
            for n in (1, 2, 3):
                fastlstm.set_num_threads(n)
                runs.append(m(x, **kw))
            for y, (h, c) in runs[1:]:
                assert np.array_equal(y, runs[0][0]) and np.array_equal(c, runs[0][1][1])
            yr, _ = reference.run(m, x, **kw)
            assert np.abs(runs[0][0] - yr).max() < 2e-6, np.abs(runs[0][0] - yr).max()
        print("sgemm ok")
    """
    assert "sgemm ok" in run_portable(code, tmp_path, timeout=300)


def test_wide_and_narrow_simd_kernels_give_identical_bits(tmp_path):
    """The AVX-512 and AVX2 tiles run the same FMA chains: results must not depend on which
    one the CPU gets (on a CPU without AVX-512 both runs use AVX2 and agree trivially)."""
    code = textwrap.dedent("""
        import sys, numpy as np, fastlstm
        m = fastlstm.LSTM(37, 45, num_layers=2, proj_size=11, seed=3)
        x = np.random.default_rng(1).standard_normal((13, 5, 37)).astype(np.float32)
        y, (h, c) = m(x, lengths=np.arange(13) % 6)
        s = m.stream(4)
        ys = s.step(x[:4, 0])
        # no projection, batches of 4 and 20: AVX-512 fuses the last K block with the cell
        plain = fastlstm.LSTM(37, 150, num_layers=2, bidirectional=True, seed=5)
        x2 = np.random.default_rng(2).standard_normal((20, 6, 37)).astype(np.float32)
        y2, (h2, c2) = plain(x2, lengths=np.arange(20) % 7)
        y3, _ = plain(x2[:4])
        # every row count of a tile (1..6; the AVX2 tile takes four gates in one pass up to
        # three rows, two passes of two from four), inputs projected first and step by step
        one = fastlstm.LSTM(37, 40, seed=6, proj_size=9)
        rows = {f"rows{b}_{t}": one(x2[:b, :t])[0] for b in (1, 2, 3, 4, 5, 6, 11, 13, 20)
                for t in (5, 6)}
        np.savez(sys.argv[1], y=y, h=h, c=c, ys=ys, y2=y2, h2=h2, c2=c2, y3=y3, **rows)
    """)
    outs = []
    for simd in ("avx2", "avx512"):
        path = tmp_path / f"{simd}.npz"
        env = dict(os.environ, FASTLSTM_SIMD=simd)
        run = subprocess.run([sys.executable, "-c", code, str(path)], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        outs.append(np.load(path))
    assert len(outs[0].files) == 26
    for key in outs[0].files:
        np.testing.assert_array_equal(outs[0][key], outs[1][key])
