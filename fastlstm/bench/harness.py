"""Timing, agreement checks and machine facts for one thread count in one process.

``run_threads`` is what a worker process runs: it sets every peer's thread count, measures
the machine's sgemm rate, then for each workload builds all peers from the same model and
inputs, checks their outputs against fastlstm's and times them in alternation. At a reduced
precision it can add the error table (``error_table``: both inits and a long sequence).
"""
import gc
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

import fastlstm
from fastlstm import reference

from .peers import FLOAT32_PEERS, TARGET_PEERS, limit_blas_threads, peers_for
from .workloads import INITS, LONG_SEQUENCE, Workload, make_case, valid_mask, workload

AGREEMENT_TOLERANCE = 1e-4       # a peer further than this from fastlstm is flagged
ACCURACY_TARGET = 3e-7           # fastlstm vs the float64 reference (BENCH.md)
# At a reduced precision the peers sit up to 1.5e-2 apart (measured); a peer built wrong (a
# gate order swapped) is off by 0.1 or more.
PRECISION_AGREEMENT_TOLERANCE = 0.05

TARGETS = {
    # workload: (min ratio vs the fastest peer, min fraction of sgemm rate, max varlen/full)
    "stream_step": (2.0, None, None),
    "seq_latency": (1.25, None, None),
    "batch": (1.0, 0.9, None),
    "large": (1.0, 0.9, None),
    "deepbench": (1.0, None, None),
    "stack": (1.0, None, None),
    "varlen": (1.5, None, 0.55),
}
PRECISION_TARGETS = {
    # precision: (min target peer / fastlstm time per workload, max error as a share of the
    # target peer's on the same model and inputs)
    "int8": ({"stream_step": 1.5, "seq_latency": 1.5, "deepbench": 1.5, "batch": 1.2,
              "large": 1.2}, 0.5),
    "bfloat16": ({"stream_step": 1.3, "seq_latency": 1.3, "deepbench": 1.3, "batch": 1.1,
                  "large": 1.1}, 1.0),
}
SGEMM_TARGET_NOTE = ("the 90%-of-sgemm target is applied where the shape allows it: batch and "
                     "large (batch >= 32); deepbench (batch 4) and stack (batch 16, hidden 256) "
                     "are bound by streaming the recurrent weights, their fraction is reported only")


class Settings:
    """How hard a run measures. Quick mode is a smoke run (under a minute with every peer on
    2 cores): every workload, peer and thread count, but fewer rounds (and none started after
    1 s of rounds), shorter samples, a call's length probed with up to 2 calls instead of 5
    (the agreement check's call counts as the first), untimed settling calls for 5 ms only
    before samples of calls under 5 ms; the sgemm rate once per thread count instead of again beside
    each workload, no AVX2-only sgemm rate, and varlen's full-length baseline for fastlstm
    alone (its target is fastlstm's). A reduced-precision run measures the sgemm rate once
    (its targets are ratios to peers) and flags peers at PRECISION_AGREEMENT_TOLERANCE."""

    def __init__(self, quick, precision="float32"):
        self.quick = quick
        self.precision = precision
        exact = precision == "float32"
        self.warmup = 1 if quick else 2
        self.rounds = 3 if quick else 7
        self.min_sample_s = 0.005 if quick else 0.02
        self.settle_s = 0.005 if quick else 0.05
        self.probe_calls = 2 if quick else 5
        self.rounds_budget_s = 1.0 if quick else None
        self.idle_s = 0.02
        self.max_idle_s = 0.2
        self.sgemm_n = 2048
        self.sgemm_repeats = 2 if quick else 5
        self.sgemm_beside_each_workload = exact and not quick
        self.sgemm_avx2 = exact and not quick
        self.full_length_for_every_peer = not quick
        self.agreement_tolerance = AGREEMENT_TOLERANCE if exact else PRECISION_AGREEMENT_TOLERANCE


def sgemm_gflops(n=2048, repeats=3):
    """The machine's float32 matmul rate through NumPy's BLAS, GFLOP/s (best of repeats)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def sgemm_gflops_avx2(threads, n=2048, repeats=3):
    """The same rate with OpenBLAS held to its AVX2 (Haswell) kernels, in a subprocess
    (OPENBLAS_CORETYPE is read at load time): what a kernel limited to AVX2/FMA can aim at
    on an AVX-512 machine. None where it does not apply or cannot be measured."""
    if "avx512f" not in _cpu_flags():
        return None
    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell", OPENBLAS_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join(p for p in (package_root(), os.environ.get("PYTHONPATH")) if p))
    code = f"from fastlstm.bench.harness import sgemm_gflops; print(sgemm_gflops({n}, {repeats}))"
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=300)
        return float(proc.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def package_root():
    """The directory that holds the fastlstm package being measured."""
    return os.path.dirname(os.path.dirname(os.path.abspath(fastlstm.__file__)))


def time_interleaved(calls, settings, first_call_s=None):
    """Median seconds per call of each callable, timed in alternating rounds.

    Each round times every callable once, in an order rotated round by round; a sample is
    the mean over enough back-to-back calls to last ``min_sample_s``. Every sample starts after
    ``idle_s`` of sleep, and more while the process still burns CPU asleep
    (``wait_until_quiet``), so that the previous peer's spinning worker threads (OpenMP, ONNX
    Runtime's pool) have gone idle; then a call shorter than ``settle_s`` runs untimed for
    ``settle_s``, so that this peer's threads are awake and the caches hold its weights (one
    call was not enough on 2 threads: measured 374 vs 356 us for fastlstm's seq_latency, 9.4
    vs 7.5 us and 24 vs 18 us for fastlstm's and ONNX Runtime int8's stream step);
    a longer call settles within itself. With ``rounds_budget_s`` set (quick
    mode), no round starts once the rounds have taken that long: a loaded machine gets fewer
    rounds (at least one), not a longer smoke run. ``first_call_s`` (quick mode) gives the
    length of a call already made (the agreement check's), which counts as the first probe.
    """
    keys = list(calls)
    reps, settle = {}, {}
    for k in keys:
        for _ in range(settings.warmup - 1):
            calls[k]()
        # A call's length is the fastest of a few (up to probe_calls, within 0.2 s): one call alone
        # may have waited on a thread pool waking up (measured: a 9 us step once took 6.7 ms,
        # which left 3 calls a sample and samples at the mercy of the next wake-up).
        times = [first_call_s[k]] if first_call_s and k in first_call_s else []
        while len(times) < settings.probe_calls and (not times or sum(times) < 0.2):
            t0 = time.perf_counter()
            calls[k]()
            times.append(time.perf_counter() - t0)
        once = min(times)
        reps[k] = max(1, math.ceil(settings.min_sample_s / max(once, 1e-7)))
        settle[k] = once < settings.settle_s
    samples = {k: [] for k in keys}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        started = time.perf_counter()
        for r in range(settings.rounds):
            if (r and settings.rounds_budget_s is not None
                    and time.perf_counter() - started > settings.rounds_budget_s):
                break
            shift = r % len(keys)
            for k in keys[shift:] + keys[:shift]:
                fn, n = calls[k], reps[k]
                wait_until_quiet(settings)
                if settle[k]:
                    until = time.perf_counter() + settings.settle_s
                    fn()
                    while time.perf_counter() < until:
                        fn()
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                samples[k].append((time.perf_counter() - t0) / n)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {k: {"median_s": statistics.median(v), "samples_s": v, "calls_per_sample": reps[k]}
            for k, v in samples.items()}


def wait_until_quiet(settings):
    """Sleep ``idle_s`` slices until one passes in which this process used under a tenth of
    it in CPU time (up to ``max_idle_s``): a runtime's pool spins on after its call, and a
    peer timed while it spins shares the cores with it. Measured with 2 threads: ONNX
    Runtime's pool spins 50-70 ms after a call (a seq_latency call of fastlstm right after it
    took 1.6x as long), OpenMP's and PyTorch's about 20 ms."""
    slices = max(1, int(settings.max_idle_s / settings.idle_s)) if settings.idle_s > 0 else 1
    for _ in range(slices):
        cpu = time.process_time()
        time.sleep(settings.idle_s)
        if time.process_time() - cpu < 0.1 * settings.idle_s:
            return


def _float64_reference(case):
    layers = case.model.layers
    if case.workload.stream:
        y, _ = reference.lstm(layers, case.x.transpose(1, 0, 2))   # steps as time
        return y.transpose(1, 0, 2)
    y, _ = reference.lstm(layers, case.x, lengths=case.lengths)
    return y


def _masked(case, y):
    y = np.asarray(y, np.float64)
    if case.workload.stream or case.lengths is None:
        return y
    return np.where(valid_mask(case), y, 0.0)


def _max_abs(a, b):
    if a.shape != b.shape:
        raise ValueError(f"output shape {a.shape}, expected {b.shape}")
    if not np.all(np.isfinite(a)):
        return math.inf
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def _mean_abs(a, b):
    return float(np.mean(np.abs(a - b))) if a.size else 0.0


def _error_text(exc):
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:300]


def run_workload(name, peers, settings, progress=print):
    """Check and time one workload (a name or a ``Workload``) for the given, set-up peers;
    fastlstm must be first."""
    w = name if isinstance(name, Workload) else workload(name, quick=settings.quick)
    case = make_case(w)
    ref = _float64_reference(case)
    result = {"name": w.name, "shape": w.shape, "about": w.about, "batch": w.batch,
              "time": w.time, "input": w.input_size, "hidden": w.hidden_size,
              "layers": w.num_layers, "bidirectional": w.bidirectional,
              "flops": w.flops(case.lengths), "peers": {}}
    if case.lengths is not None:
        result["mean_length_fraction"] = float(np.mean(case.lengths) / w.time)
        result["full_length_flops"] = w.flops()
    full_case = None
    if w.name == "varlen":
        full_case = make_case(w)
        full_case.lengths = None

    calls, fast_out, first_call_s = {}, None, {}
    for peer in peers:
        entry = result["peers"].setdefault(peer.name, {})
        try:
            bound = peer.build(case)
            t0 = time.perf_counter()
            out = bound.outputs()
            if settings.quick and not w.stream:   # a stream's outputs() replays every step
                first_call_s[(peer.name, "main")] = time.perf_counter() - t0
            out = _masked(case, out)
            entry["error_vs_float64"] = _max_abs(out, ref)
            entry["mean_error_vs_float64"] = _mean_abs(out, ref)
            if fast_out is None:
                fast_out = out
            entry["max_abs_diff_vs_fastlstm"] = _max_abs(out, fast_out)
            entry["flagged"] = not entry["max_abs_diff_vs_fastlstm"] <= settings.agreement_tolerance
            calls[(peer.name, "main")] = bound.call
            if full_case is not None and (settings.full_length_for_every_peer
                                          or peer.name == "fastlstm"):
                calls[(peer.name, "full")] = peer.build(full_case).call
            entry["status"] = "ok"
        except Exception as exc:  # a peer that fails is reported, and the run goes on
            if peer.name == "fastlstm":
                raise
            entry.clear()
            entry.update(status="error", reason=_error_text(exc))
    result["error_vs_float64"] = result["peers"]["fastlstm"]["error_vs_float64"]

    cpu_share = OtherProcessesCpu()
    # The sgemm rate again, next to this workload's timings: on a shared machine the rate
    # at the start of the run can be far from the one the workload met.
    if settings.sgemm_beside_each_workload:
        result["sgemm_gflops"] = sgemm_gflops(settings.sgemm_n, settings.sgemm_repeats)
    timings = time_interleaved(calls, settings, first_call_s)
    result["other_processes_cpu_fraction"] = cpu_share.fraction()
    for (peer_name, variant), t in timings.items():
        entry = result["peers"][peer_name]
        if variant == "main":
            entry.update(time_s=t["median_s"], samples_s=t["samples_s"],
                         calls_per_sample=t["calls_per_sample"],
                         gflops=result["flops"] / t["median_s"] / 1e9)
        else:
            entry["full_length_time_s"] = t["median_s"]
    fast_t = result["peers"]["fastlstm"]["time_s"]
    for entry in result["peers"].values():
        if "time_s" in entry:
            entry["ratio"] = entry["time_s"] / fast_t
            if "full_length_time_s" in entry:
                entry["full_length_fraction"] = entry["time_s"] / entry["full_length_time_s"]
    others = {n: e for n, e in result["peers"].items() if n != "fastlstm" and "time_s" in e}
    if others:
        fastest = min(others, key=lambda n: others[n]["time_s"])
        result["fastest_peer"] = fastest
        result["ratio_vs_fastest"] = others[fastest]["ratio"]
    progress(f"  {w.name:12s} fastlstm {_fmt_time(fast_t)}"
             + "".join(f"  {n} x{e['ratio']:.2f}" for n, e in others.items())
             + f"  err {result['error_vs_float64']:.1e}"
             + (f"  (others used {result['other_processes_cpu_fraction']:.0%} of the CPUs)"
                if result["other_processes_cpu_fraction"] is not None else ""))
    return result


def evaluate_targets(result, sgemm):
    """Pass/fail of each BENCH.md target for one workload result (against the sgemm rate
    measured beside the workload when there is one)."""
    sgemm = result.get("sgemm_gflops") or sgemm
    min_ratio, min_sgemm, max_varlen = TARGETS.get(result["name"], (None, None, None))
    fast = result["peers"]["fastlstm"]
    checks = []
    if min_ratio is not None:
        value = result.get("ratio_vs_fastest")
        checks.append({"target": f"fastest peer / fastlstm >= {min_ratio:g}", "value": value,
                       "pass": None if value is None else value >= min_ratio})
    if min_sgemm is not None:
        value = fast["gflops"] / sgemm
        checks.append({"target": f"GFLOP/s >= {min_sgemm:.0%} of sgemm", "value": value,
                       "pass": value >= min_sgemm})
    if max_varlen is not None:
        value = fast.get("full_length_fraction")
        checks.append({"target": f"time / full-length time <= {max_varlen:g}", "value": value,
                       "pass": None if value is None else value <= max_varlen})
    err = result["error_vs_float64"]
    peer_errors = [e["error_vs_float64"] for n, e in result["peers"].items()
                   if n != "fastlstm" and e.get("status") == "ok"]
    checks.append({"target": f"max abs error vs float64 <= {ACCURACY_TARGET:g}", "value": err,
                   "pass": err <= ACCURACY_TARGET,
                   "best_peer_error": min(peer_errors) if peer_errors else None})
    return checks


def evaluate_precision(result, precision):
    """Pass/fail of BENCH.md's reduced-precision targets for one workload result of a run at
    that precision; also records the fastest float32 peer and its ratio (no target)."""
    peers = result["peers"]
    float32 = {n: peers[n] for n in FLOAT32_PEERS if "time_s" in peers.get(n, {})}
    if float32:
        fastest = min(float32, key=lambda n: float32[n]["time_s"])
        result["fastest_float32_peer"] = fastest
        result["ratio_vs_fastest_float32"] = float32[fastest]["ratio"]
    target = TARGET_PEERS[precision].name
    min_ratio = PRECISION_TARGETS[precision][0].get(result["name"])
    checks = []
    if min_ratio is not None:
        value = peers.get(target, {}).get("ratio")
        checks.append({"target": f"{target} / fastlstm >= {min_ratio:g}", "value": value,
                       "pass": None if value is None else value >= min_ratio})
    return checks + [precision_error_check(peers, precision)]


def precision_error_check(peers, precision):
    """The error target: fastlstm's max abs error against float64 within a share of the
    target peer's; ``peers`` maps names to entries holding ``error_vs_float64``."""
    share = PRECISION_TARGETS[precision][1]
    target = TARGET_PEERS[precision].name
    value = peers["fastlstm"]["error_vs_float64"]
    ref = peers.get(target, {}).get("error_vs_float64")
    limit = None if ref is None else share * ref
    return {"target": f"max abs error vs float64 <= {share:g} x {target}'s", "value": value,
            "limit": limit, "pass": None if limit is None else value <= limit}


def error_table(workloads, peers, precision, quick=False, progress=print):
    """Max and mean abs error against float64 of every peer on each workload (a name or a
    ``Workload``) and on LONG_SEQUENCE, with PyTorch's init and the trained-like one, and the
    error target of each row. Errors do not depend on the thread count: one run holds them."""
    rows = []
    shapes = [n if isinstance(n, Workload) else workload(n, quick) for n in workloads]
    for w in shapes + [LONG_SEQUENCE]:
        for init in INITS:
            case = make_case(w, init=init)
            ref = _float64_reference(case)
            row = {"name": w.name, "shape": w.shape, "init": init, "peers": {}}
            for peer in peers:
                try:
                    out = _masked(case, peer.build(case).outputs())
                    row["peers"][peer.name] = {"status": "ok",
                                               "error_vs_float64": _max_abs(out, ref),
                                               "mean_error_vs_float64": _mean_abs(out, ref)}
                except Exception as exc:  # reported in its cell, and the table goes on
                    if peer.name == "fastlstm":
                        raise
                    row["peers"][peer.name] = {"status": "error", "reason": _error_text(exc)}
            row["target"] = precision_error_check(row["peers"], precision)
            rows.append(row)
            progress(f"  errors {w.name:12s} {init:12s} "
                     + "  ".join(f"{n} {_fmt_err(e.get('error_vs_float64'))}"
                                 for n, e in row["peers"].items()))
    return rows


def run_threads(threads, workloads, peer_names=None, quick=False, progress=print,
                sgemm_n=2048, checkpoint=None, precision="float32", errors=False):
    """Everything for one thread count, in this process: workloads are names or ``Workload``
    objects. TensorFlow's threads can be set once per process only: call this at most once
    per process when TensorFlow is a peer. The thread settings of fastlstm and NumPy's BLAS
    are restored afterwards. ``checkpoint(run)``, when given, receives the run so far before
    each workload (``run["in_progress"]`` names it), so a crash still leaves the rest.
    ``precision``: "float32", or the reduced precision whose peers (``peers_for``) and targets
    the run takes; ``errors``: add its error table (``error_table``) as ``run["errors"]``."""
    settings = Settings(quick, precision)
    settings.sgemm_n = sgemm_n
    fastlstm_threads = fastlstm.get_num_threads()
    blas_control, restore_blas = limit_blas_threads(threads)
    try:
        return _run_threads(threads, workloads, peer_names, settings, progress, blas_control,
                            checkpoint or (lambda run: None), errors)
    finally:
        restore_blas()
        fastlstm.set_num_threads(fastlstm_threads)


def _run_threads(threads, workloads, peer_names, settings, progress, blas_control, checkpoint,
                 errors):
    registry = peers_for(settings.precision)
    peer_names = list(registry) if peer_names is None else ["fastlstm"] + [
        n for n in peer_names if n != "fastlstm"]
    peers, peer_info = [], {}
    progress(f"threads={threads}: setting up {', '.join(peer_names)}")
    for name in peer_names:
        if name not in registry:
            raise ValueError(f"unknown peer {name!r}; expected one of {', '.join(registry)}")
        peer = registry[name]
        if not peer.available():
            peer_info[name] = {"status": "missing", "reason": f"{peer.module} is not installed"}
            continue
        try:
            peer.setup(threads)
            peer_info[name] = {"status": "ok", "version": peer.version()}
            peers.append(peer)
        except Exception as exc:
            if name == "fastlstm":
                raise
            peer_info[name] = {"status": "missing", "reason": _error_text(exc)}
    progress(f"threads={threads}: peers "
             + ", ".join(f"{n} ({i['status']})" for n, i in peer_info.items()))
    cpu_share = OtherProcessesCpu()
    sgemm = sgemm_gflops(settings.sgemm_n, settings.sgemm_repeats)
    sgemm_avx2 = (sgemm_gflops_avx2(threads, settings.sgemm_n, settings.sgemm_repeats)
                  if settings.sgemm_avx2 else None)
    progress(f"  sgemm {settings.sgemm_n}^3 float32: {sgemm:.1f} GFLOP/s"
             + (f" (AVX2 kernels only: {sgemm_avx2:.1f})" if sgemm_avx2 else ""))
    run = {"threads": threads, "sgemm_gflops": sgemm, "sgemm_avx2_gflops": sgemm_avx2,
           "other_processes_cpu_fraction": None, "blas_thread_control": blas_control,
           "settings": dict(vars(settings)), "peers": peer_info,
           "fastlstm_config": _fastlstm_config(), "workloads": []}
    for i, name in enumerate(workloads, 1):
        run["in_progress"] = name if isinstance(name, str) else name.name
        run["other_processes_cpu_fraction"] = cpu_share.fraction()
        checkpoint(run)
        res = run_workload(name, peers, settings,
                           lambda msg, i=i: progress(f"  {i}/{len(workloads)} {msg.lstrip()}"))
        for pname, info in peer_info.items():
            if info["status"] != "ok":
                res["peers"][pname] = dict(info)
        res["targets"] = (evaluate_targets(res, sgemm) if settings.precision == "float32"
                          else evaluate_precision(res, settings.precision))
        run["workloads"].append(res)
    if errors:
        run["in_progress"] = "the error table"
        checkpoint(run)
        run["errors"] = error_table(workloads, peers, settings.precision, settings.quick,
                                    progress)
    del run["in_progress"]
    run["other_processes_cpu_fraction"] = cpu_share.fraction()
    return run


class OtherProcessesCpu:
    """How much of the machine's CPU time other processes took since construction: the
    busy time of all CPUs (/proc/stat) less this process's and its children's own."""

    def __init__(self):
        self.start = self._snapshot()

    @staticmethod
    def _snapshot():
        try:
            with open("/proc/stat") as fh:
                fields = [int(v) for v in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        tick = os.sysconf("SC_CLK_TCK")
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        own = os.times()
        return (sum(fields[:8]) / tick, (sum(fields[:8]) - idle) / tick,
                own.user + own.system + own.children_user + own.children_system)

    def fraction(self):
        """Share of all CPUs' time used by other processes, 0..1, or None (no /proc/stat)."""
        end = self._snapshot()
        if self.start is None or end is None:
            return None
        total = end[0] - self.start[0]
        others = (end[1] - self.start[1]) - (end[2] - self.start[2])
        return min(1.0, max(0.0, others / total)) if total > 0 else None


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def _fastlstm_config():
    from fastlstm import runtime
    return runtime.config()


def _fmt_err(e):
    return "error" if e is None else f"{e:.1e}"


def _fmt_time(s):
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


SIMD_FLAGS = ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
              "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "neon", "asimd"]


def machine_info():
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and cpu in ("", platform.machine(), platform.processor()):
                    cpu = value.strip()
                elif key in ("flags", "Features"):
                    flags.update(value.split())
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    import scipy
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "simd": [f for f in SIMD_FLAGS if f in flags],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "fastlstm": fastlstm.__version__,
        "commit": git_commit(),
    }


def git_commit():
    """The commit of the fastlstm source being measured ("+dirty" with local changes)."""
    root = package_root()
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "csrc",
                                "fastlstm", "setup.py"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
