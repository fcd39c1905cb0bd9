"""The benchmark harness end to end on miniature workloads: real numbers come out, fastlstm
agrees with the float64 reference, and the report renders. NumPy is the only peer (no
framework needed); and the command line's --isa avx2."""
import json
import math
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from fastlstm import _core
from fastlstm.bench import report
from fastlstm.bench.__main__ import main, parse_args
from fastlstm.bench.harness import (Settings, machine_info, run_threads, run_workload,
                                     time_interleaved, wait_until_quiet)
from fastlstm.bench.peers import PEERS
from fastlstm.bench.workloads import Workload

MINI = [
    Workload("mini_varlen", batch=3, time=5, input_size=4, hidden_size=6, num_layers=2,
             bidirectional=True, with_lengths=True),
    Workload("mini_stream", batch=1, time=1, input_size=4, hidden_size=6, stream=True),
]


def test_harness_on_miniature_workloads(tmp_path):
    lines = []
    run = run_threads(1, MINI, ["numpy"], quick=True, progress=lines.append, sgemm_n=128)
    assert run["threads"] == 1 and run["sgemm_gflops"] > 0
    assert [w["name"] for w in run["workloads"]] == ["mini_varlen", "mini_stream"]
    # One progress line before the peers load, one after, the sgemm rate, one per workload.
    assert lines[0] == "threads=1: setting up fastlstm, numpy"
    assert [line.split()[:2] for line in lines[3:]] == [["1/2", "mini_varlen"], ["2/2", "mini_stream"]]
    # Quick mode: the sgemm rate once per thread count, no AVX2-only rate.
    assert run["sgemm_avx2_gflops"] is None
    assert all("sgemm_gflops" not in w for w in run["workloads"])
    for w in run["workloads"]:
        assert w["error_vs_float64"] < 3e-7
        assert w["flops"] > 0
        for name in ("fastlstm", "numpy"):
            entry = w["peers"][name]
            assert entry["status"] == "ok"
            for key in ("time_s", "gflops", "ratio", "error_vs_float64", "max_abs_diff_vs_fastlstm"):
                assert isinstance(entry[key], float) and math.isfinite(entry[key]), (name, key)
            assert entry["time_s"] > 0 and not entry["flagged"]
        assert w["fastest_peer"] == "numpy" and w["ratio_vs_fastest"] > 0
        assert any("error vs float64" in c["target"] and c["pass"] for c in w["targets"])
    varlen = run["workloads"][0]
    assert 0 < varlen["mean_length_fraction"] <= 1

    results = {"meta": {**machine_info(), "mode": "quick", "date_utc": "now", "wall_s": 0.0,
                        "command": "test"}, "runs": [run]}
    results["runs"][0]["workloads"][0]["peers"]["torch"] = {"status": "missing",
                                                            "reason": "torch is not installed"}
    text = report.markdown(results)
    assert "mini_varlen" in text and "missing" in text
    json.loads(json.dumps(results, default=float))
    np.testing.assert_equal(report.markdown(results, summary_only=True).count("mini_"), 2)


def test_quick_rounds_stop_at_their_budget():
    """Quick mode starts no round once its rounds took rounds_budget_s (1 s)."""
    settings = Settings(quick=True)
    assert settings.rounds == 3 and settings.rounds_budget_s == 1.0
    settings.idle_s, settings.rounds_budget_s = 0.0, 0.15
    calls = {"slow": lambda: time.sleep(0.1), "fast": lambda: None}
    timings = time_interleaved(calls, settings)
    # 0.1 s a round: the second starts at 0.1 s, the third would start at 0.2 s
    assert len(timings["slow"]["samples_s"]) == len(timings["fast"]["samples_s"]) == 2
    assert timings["slow"]["median_s"] >= 0.099
    settings.rounds_budget_s = None
    assert len(time_interleaved({"fast": lambda: None}, settings)["fast"]["samples_s"]) == 3


def test_quick_probe_counts_the_call_already_made():
    """A call already made (the agreement check's) is the first probe: a call known to take
    0.5 s is not probed again, only timed in the 3 rounds; unknown, it is probed twice."""
    settings = Settings(quick=True)
    settings.idle_s = 0.0
    made = []

    def call():
        made.append(1)
        time.sleep(0.01)

    time_interleaved({"peer": call}, settings, first_call_s={"peer": 0.5})
    assert len(made) == 3
    made.clear()
    time_interleaved({"peer": call}, settings)
    assert len(made) == 2 + 3


def test_a_sample_waits_for_threads_still_spinning():
    """A sample starts after a 20 ms slice in which the process stayed idle: one slice when
    it is idle, until a thread that spins on for 80 ms (as ONNX Runtime's pool does after a
    call) has stopped, and never past max_idle_s."""
    settings = Settings(quick=True)
    t0 = time.perf_counter()
    wait_until_quiet(settings)
    assert time.perf_counter() - t0 < 0.1

    def spin(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    for seconds, least, most in [(0.08, 0.08, 0.2), (1.0, 0.2, 0.5)]:
        spinner = threading.Thread(target=spin, args=(seconds,))
        spinner.start()
        t0 = time.perf_counter()
        wait_until_quiet(settings)
        waited = time.perf_counter() - t0
        spinner.join()
        assert least <= waited < most, (seconds, waited)


@pytest.mark.parametrize("quick", [True, False])
def test_varlen_full_length_baseline(quick):
    """varlen's time at full length: for every peer in full mode, for fastlstm alone (whose
    target it is) in quick mode."""
    tiny = Workload("varlen", batch=4, time=6, input_size=3, hidden_size=5, with_lengths=True)
    settings = Settings(quick)
    settings.sgemm_n = 64
    peers = [PEERS["fastlstm"], PEERS["numpy"]]
    for peer in peers:
        peer.setup(1)
    result = run_workload(tiny, peers, settings, progress=lambda msg: None)
    fast, numpy_peer = result["peers"]["fastlstm"], result["peers"]["numpy"]
    assert fast["full_length_time_s"] > 0 and 0 < fast["full_length_fraction"] < 10
    assert ("full_length_time_s" in numpy_peer) is (not quick)
    assert ("sgemm_gflops" in result) is (not quick)


def test_isa_avx2_holds_fastlstm_pytorch_and_openblas(tmp_path):
    """--isa avx2: the held peers by default, their kernels held in the worker (fastlstm's own
    report says which kernels ran), and a report that says so; refused in-process."""
    assert parse_args(["--isa", "avx2"]).peers == ["fastlstm", "torch", "numpy"]
    assert parse_args(["--isa", "avx2", "--peers", "onnxruntime"]).peers == ["onnxruntime"]
    assert "onnxruntime" in parse_args([]).peers
    with pytest.raises(SystemExit, match="--isa needs the worker processes"):
        main(["--isa", "avx2", "--in-process", "--peers", "numpy"])
    out = tmp_path / "bench"
    run = subprocess.run([sys.executable, "-m", "fastlstm.bench", "--isa", "avx2", "--quick",
                          "--workloads", "stream_step", "--peers", "fastlstm,numpy",
                          "--threads", "1", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["isa"] == "avx2"
    (worker,) = results["runs"]
    held = "avx2" if _core.runtime_facts()["avx2_fma"] else "portable"
    assert worker["fastlstm_config"]["simd"].startswith(held), worker["fastlstm_config"]
    assert "Haswell" in json.dumps(worker["fastlstm_config"].get("blas"))
    assert worker["workloads"][0]["error_vs_float64"] < 3e-7
    assert "**Held to AVX2**" in (out / "RESULTS.md").read_text()
