"""pytest-benchmark suite over the workloads of shared/BENCH.md: fastlstm and every installed
peer, built exactly as ``python -m fastlstm.bench`` builds them (same weights, inputs and
layouts). Not part of the normal test run (pyproject's testpaths is tests/). Run:

    python -m pytest bench/test_bench_workloads.py --benchmark-group-by=group
    FASTLSTM_BENCH_THREADS=1 FASTLSTM_BENCH_QUICK=1 python -m pytest bench/ -k "stream or latency"

FASTLSTM_BENCH_THREADS (default: all usable cores) sets every peer's thread count once for
the session: TensorFlow sizes its pools once per process, so one pytest run is one thread
count. FASTLSTM_BENCH_QUICK=1 uses the quick mode's shorter `large`. Each peer's output is
checked against fastlstm's before it is timed. pytest-benchmark times one peer after the
other, not in alternation: for ratios that hold on a shared machine use
``python -m fastlstm.bench``.
"""
import os

import numpy as np
import pytest

from fastlstm.bench.harness import AGREEMENT_TOLERANCE, limit_blas_threads
from fastlstm.bench.peers import PEERS
from fastlstm.bench.workloads import WORKLOADS, make_case, valid_mask, workload

# Frameworks warn on import and on first use; pyproject turns warnings into errors for tests.
pytestmark = pytest.mark.filterwarnings("ignore")

THREADS = int(os.environ.get("FASTLSTM_BENCH_THREADS") or len(os.sched_getaffinity(0)))
QUICK = bool(os.environ.get("FASTLSTM_BENCH_QUICK"))


@pytest.fixture(scope="session")
def ready_peers():
    """Every peer set up once for THREADS; missing ones map to the reason."""
    limit_blas_threads(THREADS)
    ready = {}
    for name, peer in PEERS.items():
        if not peer.available():
            ready[name] = f"{peer.module} is not installed"
            continue
        try:
            peer.setup(THREADS)
            ready[name] = peer
        except Exception as exc:  # reported as a skip with the reason
            ready[name] = f"{type(exc).__name__}: {exc}"
    return ready


_cases = {}


def _case_and_expected(name):
    """The shared case of a workload and fastlstm's output on it (cached per session)."""
    if name not in _cases:
        case = make_case(workload(name, quick=QUICK))
        out = np.asarray(PEERS["fastlstm"].build(case).outputs(), np.float64)
        _cases[name] = (case, out)
    return _cases[name]


@pytest.mark.parametrize("peer_name", list(PEERS))
@pytest.mark.parametrize("workload_name", list(WORKLOADS))
def test_workload(benchmark, ready_peers, workload_name, peer_name):
    peer = ready_peers[peer_name]
    if isinstance(peer, str):
        pytest.skip(f"{peer_name} missing: {peer}")
    case, expected = _case_and_expected(workload_name)
    bound = peer.build(case)
    got = np.asarray(bound.outputs(), np.float64)
    if case.lengths is not None:
        got = np.where(valid_mask(case), got, 0.0)
    diff = float(np.max(np.abs(got - expected)))
    assert diff <= AGREEMENT_TOLERANCE, f"{peer_name} differs from fastlstm by {diff:.2e}"
    benchmark.group = f"{workload_name} ({case.workload.shape}), {THREADS} thread(s)"
    benchmark.extra_info.update(threads=THREADS, max_abs_diff_vs_fastlstm=diff,
                                flops=case.workload.flops(case.lengths))
    benchmark(bound.call)
