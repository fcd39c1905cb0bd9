"""Threads: settings, validation, and bitwise-identical results for 1 and N threads."""
import glob
import os

import numpy as np
import pytest

import fastlstm

from conftest import random_input


@pytest.mark.parametrize("shape", [(1, 20, 16, 256), (5, 7, 12, 200), (4, 6, 32, 1024),
                                   (1, 4, 16, 2048), (33, 10, 24, 96), (64, 5, 8, 300),
                                   (16, 4, 256, 512)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_one_and_many_threads_are_bitwise_identical(shape, bidirectional):
    """Small steps run on one thread, small batches with big steps split each step by hidden
    blocks (the 1024 and 2048 shapes), large batches split rows, and large batches whose
    weights outgrow a core's L2 split blocks again (the 512 shape): the same bits every way."""
    batch, steps, inp, hidden = shape
    model = fastlstm.LSTM(inp, hidden, num_layers=2, proj_size=hidden // 4,
                          bidirectional=bidirectional, seed=0)
    x = random_input(model, batch, steps)
    lengths = np.random.default_rng(0).integers(0, steps + 1, batch)
    results = []
    for n in (1, 2, 4):
        fastlstm.set_num_threads(n)
        assert fastlstm.get_num_threads() == n
        results.append(model(x, lengths=lengths))
    for y, (h, c) in results[1:]:
        np.testing.assert_array_equal(y, results[0][0])
        np.testing.assert_array_equal(h, results[0][1][0])
        np.testing.assert_array_equal(c, results[0][1][1])


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-1, ValueError), (100000, ValueError),
                                     (1.5, TypeError), ("2", TypeError), (True, TypeError)])
def test_thread_count_validation(bad, exc):
    with pytest.raises(exc, match="num_threads"):
        fastlstm.set_num_threads(bad)


def test_show_config_reports_the_runtime(capsys):
    cfg = fastlstm.show_config()
    out = capsys.readouterr().out
    assert cfg["version"] == fastlstm.__version__ in out
    assert "OpenMP" in out and "BLAS" in out and "SIMD" in out
    assert cfg["threads"] == fastlstm.get_num_threads()


def test_show_config_names_the_openmp_runtime_the_core_calls(capsys):
    """The runtime is the one the core's omp_get_max_threads resolves to: loaded in this
    process, and the wheel's vendored copy (auditwheel's fastlstm.libs/) when there is one."""
    cfg = fastlstm.show_config()
    out = capsys.readouterr().out
    if not cfg["openmp"]:
        assert cfg["openmp_runtime"] is None and "off (serial build)" in out
        return
    path = cfg["openmp_runtime"]
    assert os.path.isfile(path) and path in out
    with open("/proc/self/maps") as fh:
        assert path in {os.path.realpath(line.split()[-1]) for line in fh if "/" in line}
    assert cfg["openmp_runtime_family"] == "GNU libgomp" and "gomp" in os.path.basename(path)
    site = os.path.dirname(os.path.dirname(os.path.abspath(fastlstm.__file__)))
    vendored = glob.glob(os.path.join(site, "fastlstm.libs", "libgomp*"))
    if vendored:   # an installed manylinux wheel
        assert path == os.path.realpath(vendored[0]) and cfg["openmp_runtime_vendored"]
        assert "vendored in the wheel" in out
    else:
        assert not cfg["openmp_runtime_vendored"] and "vendored" not in out


@pytest.mark.parametrize("proj_size", [0, 5])
def test_row_split_with_one_sequence_left(proj_size):
    """Large batches split by rows; when one sequence outlives the rest, its last steps run
    alone (the one-row kernel) on one thread: same bits as one thread, and nothing else
    touched."""
    model = fastlstm.LSTM(16, 64, proj_size=proj_size, seed=0)
    x = random_input(model, 32, 40)
    lengths = np.full(32, 5)
    lengths[7] = 40
    results = []
    for n in (1, 2, 3):
        fastlstm.set_num_threads(n)
        results.append(model(x, lengths=lengths))
    for y, (h, c) in results[1:]:
        np.testing.assert_array_equal(y, results[0][0])
        np.testing.assert_array_equal(h, results[0][1][0])
        np.testing.assert_array_equal(c, results[0][1][1])
    y_ref, _ = fastlstm.reference.run(model, x, lengths=lengths)
    np.testing.assert_allclose(results[0][0], y_ref, atol=2e-6, rtol=2e-5)
