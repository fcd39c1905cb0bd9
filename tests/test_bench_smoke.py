"""The benchmark harness end to end on miniature workloads: real numbers come out, fastlstm
agrees with the float64 reference, and the report renders. NumPy is the only peer (no
framework needed); the command line's --isa avx2; and --quick --precision end to end, with
every peer that is installed."""
import importlib.util
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
from fastlstm.bench.peers import PEERS, TARGET_PEERS
from fastlstm.bench.workloads import (INITS, LONG_SEQUENCE, PRECISION_WORKLOADS, Workload,
                                      make_case)

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


def test_precision_arguments_and_trained_like_init():
    """--precision picks its workloads and peers; --peers is checked against them; the
    trained-like init is PyTorch's with the weight matrices 3x and the forget bias + 1."""
    args = parse_args(["--precision", "int8"])
    assert args.workloads == list(PRECISION_WORKLOADS)
    assert args.peers == ["fastlstm", "onnxruntime-int8", "fastlstm-float32", "onnxruntime", "torch"]
    assert parse_args(["--precision", "bfloat16"]).peers[1] == "torch-bf16"
    assert parse_args(["--precision", "bfloat16", "--isa", "avx2"]).peers == [
        "fastlstm", "torch-bf16", "fastlstm-float32", "torch"]
    with pytest.raises(SystemExit):
        parse_args(["--peers", "torch-bf16"])         # a precision peer in a float32 run
    w = Workload("mini", batch=1, time=3, input_size=4, hidden_size=6)
    plain, trained = (make_case(w, init=i).model.weights for i in INITS)
    np.testing.assert_array_equal(trained["weight_hh_l0"], 3 * plain["weight_hh_l0"])
    np.testing.assert_array_equal(trained["bias_hh_l0"], plain["bias_hh_l0"])
    shift = trained["bias_ih_l0"] - plain["bias_ih_l0"]
    np.testing.assert_allclose(shift, np.repeat([0.0, 1.0, 0.0, 0.0], 6), atol=1e-6)


@pytest.mark.parametrize("precision", ["int8", "bfloat16"])
def test_precision_quick_run(tmp_path, precision):
    """--quick --precision P end to end in under a minute: fastlstm.quantize against the
    precision's peer (which must run whenever its framework is installed) and the float32
    peers at 1 and all cores, the error table (both inits and the long sequence), a report
    that keeps the float32 run already in the directory, and the README's precision table."""
    out = tmp_path / "bench"
    float32_run = run_threads(1, MINI[1:], ["numpy"], quick=True, progress=lambda m: None,
                              sgemm_n=128)
    report.write_all({"meta": {**machine_info(), "mode": "quick", "date_utc": "then",
                               "wall_s": 0.0, "command": "test"}, "runs": [float32_run]},
                     str(out))
    run = subprocess.run([sys.executable, "-m", "fastlstm.bench", "--quick", "--precision",
                          precision, "--out", str(out)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    results = json.loads((out / "results.json").read_text())
    assert [w["name"] for w in results["runs"][0]["workloads"]] == ["mini_stream"]
    part = results["precision"][precision]
    assert part["meta"]["wall_s"] < 60
    target = TARGET_PEERS[precision]
    installed = target.available() and importlib.util.find_spec(
        "onnxruntime.quantization" if precision == "int8" else "torch") is not None
    for threads_run in part["runs"]:
        assert [w["name"] for w in threads_run["workloads"]] == list(PRECISION_WORKLOADS)
        for w in threads_run["workloads"]:
            fast = w["peers"]["fastlstm"]
            assert fast["time_s"] > 0 and fast["error_vs_float64"] < 0.1
            assert fast["mean_error_vs_float64"] <= fast["error_vs_float64"]
            assert w["peers"]["fastlstm-float32"]["error_vs_float64"] < 3e-6
            assert w["fastest_float32_peer"] in ("fastlstm-float32", "onnxruntime", "torch")
            peer = w["peers"][target.name]
            assert peer["status"] == ("ok" if installed else "missing"), peer
            if installed:
                assert not peer["flagged"] and peer["time_s"] > 0
                assert all(c["pass"] is not None for c in w["targets"])
    errors = part["runs"][0]["errors"]
    assert [(r["name"], r["init"]) for r in errors] == [
        (n, i) for n in [*PRECISION_WORKLOADS, LONG_SEQUENCE.name] for i in INITS]
    assert all(math.isfinite(r["peers"]["fastlstm"]["error_vs_float64"]) for r in errors)
    assert all("errors" not in r for r in part["runs"][1:])
    text = (out / "RESULTS.md").read_text()
    assert f"## Reduced precision: {precision}" in text and "mini_stream" in text
    if importlib.util.find_spec("matplotlib") is not None:   # plots: the bench extra
        assert f"precision_{precision}_time.png" in results["plots"]["files"]
    else:
        assert results["plots"]["files"] == []

    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{report.README_START}\nold\n{report.README_END}\nb\n"
                      f"{report.README_PRECISION_START}\nold\n{report.README_PRECISION_END}\n")
    assert report.update_readme(str(readme), results)
    text = readme.read_text()
    assert "old" not in text and "mini_stream" in text
    assert f"| {precision} | deepbench |" in text and f"| {precision} | seq_long |" in text
