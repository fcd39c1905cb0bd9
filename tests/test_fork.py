"""A forked child after the parent ran OpenMP threads: GNU libgomp's thread pool does not
survive fork(), so a child that entered a parallel region would hang. fastlstm's child runs
single-threaded instead; these tests fork for real and time out rather than hang."""
import multiprocessing
import os
import pickle
import select
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

import fastlstm
from fastlstm import _core, reference

ATOL = RTOL = 2e-5
TIMEOUT = 60  # seconds; a healthy child answers in well under one
OPENMP = _core.runtime_facts()["openmp"]


@pytest.fixture
def parent_used_openmp_threads():
    """Run a batch big enough for the kernel's parallel region on two threads."""
    before = fastlstm.get_num_threads()
    fastlstm.set_num_threads(2)
    model = fastlstm.LSTM(32, 256, seed=5)
    x = np.random.default_rng(0).standard_normal((64, 4, 32)).astype(np.float32)
    y, _ = model(x)
    if OPENMP:
        assert _core.runtime_facts()["openmp_used_in_parallel"]
    yield model, x, y
    fastlstm.set_num_threads(before)


def child_report(model, x):
    """What a child sends back: its thread count after asking for two, and its outputs, first
    with the settings it inherited (OpenBLAS keeps the parent's), then after the request."""
    y, _ = model(x)
    fastlstm.set_num_threads(2)
    stream_y = model.stream(batch_size=x.shape[0]).feed(x)
    single = fastlstm.runtime.config()["forked_child_single_thread"]
    return fastlstm.get_num_threads(), single, y, stream_y


def fork_quietly():
    # Python 3.12+ warns that forking a process with threads (BLAS's, here) may deadlock the
    # child; that is exactly the situation under test.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "This process .* is multi-threaded",
                                DeprecationWarning)
        return os.fork()


def test_os_fork_child_runs_single_threaded_and_right(parent_used_openmp_threads):
    model, x, parent_y = parent_used_openmp_threads
    read_end, write_end = os.pipe()
    pid = fork_quietly()
    if pid == 0:   # the child: report and leave without running the parent's test machinery
        code = 1
        try:
            os.close(read_end)
            with os.fdopen(write_end, "wb") as out:
                pickle.dump(child_report(model, x), out)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    data = b""
    deadline = time.monotonic() + TIMEOUT
    with os.fdopen(read_end, "rb") as pipe:
        while True:
            ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"the forked child did not answer within {TIMEOUT} s (hung)")
            chunk = os.read(pipe.fileno(), 1 << 20)
            if not chunk:
                break
            data += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    threads, single_flag, y, stream_y = pickle.loads(data)
    if OPENMP:
        assert threads == 1 and single_flag
    want, _ = reference.run(model, x)
    np.testing.assert_allclose(y, want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(stream_y, want, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(y, parent_y)   # one thread or two: the same numbers


def score(args):
    """A multiprocessing task: the model arrives pickled by value, x is one chunk."""
    model, x = args
    return child_report(model, x)


def test_multiprocessing_fork_pool(parent_used_openmp_threads):
    model, x, parent_y = parent_used_openmp_threads
    chunks = [(model, x[k:k + 16]) for k in range(0, 64, 16)]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "This process .* is multi-threaded",
                                DeprecationWarning)
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(2) as pool:
            reports = pool.map_async(score, chunks).get(timeout=TIMEOUT)
    want, _ = reference.run(model, x)
    got = np.concatenate([y for _, _, y, _ in reports])
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    if OPENMP:
        assert all(threads == 1 for threads, *_ in reports)


CHILD_BEFORE_PARALLEL = textwrap.dedent("""
    import os, sys
    import numpy as np
    import fastlstm
    from fastlstm import _core
    fastlstm.set_num_threads(2)
    model = fastlstm.LSTM(32, 256, seed=5)
    x = np.random.default_rng(0).standard_normal((64, 4, 32)).astype(np.float32)
    pid = os.fork()    # before any parallel region: the child may use threads
    y, _ = model(x)
    tag = "child" if pid == 0 else "parent"
    # one write per line: parent and child share the pipe
    os.write(1, f"{tag} {fastlstm.get_num_threads()} "
                f"{_core.runtime_facts()['openmp_used_in_parallel']} "
                f"{float(np.abs(y).sum())}\\n".encode())
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    # After this parent's parallel region, a second child falls back to one thread.
    pid = os.fork()
    if pid == 0:
        y2, _ = model(x)
        os.write(1, f"late-child {fastlstm.get_num_threads()} {bool((y2 == y).all())}\\n".encode())
        os._exit(0)
    os.waitpid(pid, 0)
""")


def test_child_forked_before_any_parallel_region_keeps_its_threads(tmp_path):
    """In a fresh interpreter: a child forked before the parent ran a parallel region keeps
    the parent's thread setting (libgomp starts its pool in the child); one forked after
    runs on one thread. Both give the parent's numbers."""
    out = subprocess.run([sys.executable, "-c", CHILD_BEFORE_PARALLEL], capture_output=True,
                         text=True, timeout=TIMEOUT, check=True, cwd=tmp_path).stdout
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
    assert set(lines) == {"child", "parent", "late-child"}, out
    assert lines["child"][0] == "2" and lines["parent"][0] == "2"
    assert lines["child"][2] == lines["parent"][2]
    if OPENMP:
        assert lines["child"][1] == lines["parent"][1] == "True"
        assert lines["late-child"][0] == "1"
    assert lines["late-child"][1] == "True"
