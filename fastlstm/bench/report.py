"""The generated report: RESULTS.md, results.json and the PNG plots (matplotlib, Agg).

results.json holds the float32 run (``meta``, ``runs``) and one section per reduced precision
(``precision[P]``: its own ``meta`` and ``runs``, the first run holding the error table); a
run replaces its own part and keeps the others (``merged``).
"""
import json
import math
import os

from .harness import (ACCURACY_TARGET, AGREEMENT_TOLERANCE, PRECISION_TARGETS,
                      SGEMM_TARGET_NOTE)
from .peers import PEERS, TARGET_PEERS
from .workloads import INITS

PEER_ORDER = list(PEERS)


def _t(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _x(v):
    return "-" if v is None else f"{v:.2f}x"


def _e(v):
    return "-" if v is None else ("inf" if math.isinf(v) else f"{v:.1e}")


def _peer_cell(entry):
    status = entry.get("status")
    if status == "missing":
        return "missing"
    if status == "error":
        return "error"
    cell = f"{_t(entry.get('time_s'))} ({_x(entry.get('ratio'))})"
    if entry.get("flagged"):
        cell += " FLAGGED"
    return cell


def _verdict(checks):
    fails = [c for c in checks if c["pass"] is False]
    unknown = [c for c in checks if c["pass"] is None]
    if fails:
        return "FAIL"
    return "n/a" if unknown and len(unknown) == len(checks) else "pass"


def _peers_in(results):
    seen = []
    for run in results["runs"]:
        for w in run["workloads"]:
            for name in w["peers"]:
                if name not in seen:
                    seen.append(name)
    return [p for p in PEER_ORDER if p in seen] + [p for p in seen if p not in PEER_ORDER]


def summary_table(run, peers):
    others = [p for p in peers if p != "fastlstm"]
    head = (["workload", "shape", "fastlstm"] + [f"{p} (ratio)" for p in others]
            + ["fastest peer / fastlstm", "GFLOP/s (of sgemm)", "max err vs f64", "targets",
               "CPU used by others"])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w in run["workloads"]:
        fast = w["peers"]["fastlstm"]
        best = w.get("fastest_peer")
        best_cell = f"{_x(w.get('ratio_vs_fastest'))} ({best})" if best else "no peer"
        gflops = fast.get("gflops")
        cells = [w["name"], w["shape"], _t(fast.get("time_s"))]
        cells += [_peer_cell(w["peers"].get(p, {"status": "missing"})) for p in others]
        sgemm = w.get("sgemm_gflops") or run["sgemm_gflops"]
        cells += [best_cell, f"{gflops:.1f} ({gflops / sgemm:.0%} of {sgemm:.0f})",
                  _e(w["error_vs_float64"]), _verdict(w["targets"]),
                  "-" if w.get("other_processes_cpu_fraction") is None
                  else f"{w['other_processes_cpu_fraction']:.0%}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def targets_table(results):
    rows = ["| workload | threads | target | measured | result |", "|---|---|---|---|---|"]
    for run in results["runs"]:
        for w in run["workloads"]:
            for c in w["targets"]:
                v = c["value"]
                if v is None:
                    shown = "no peer to compare"
                elif "error" in c["target"]:
                    shown = _e(v)
                    if c.get("best_peer_error") is not None:
                        shown += f" (best peer {_e(c['best_peer_error'])})"
                elif "sgemm" in c["target"]:
                    shown = f"{v:.0%}"
                else:
                    shown = f"{v:.2f}"
                verdict = {True: "pass", False: "**FAIL**", None: "n/a"}[c["pass"]]
                rows.append(f"| {w['name']} | {run['threads']} | {c['target']} | {shown} | {verdict} |")
    return "\n".join(rows)


def varlen_table(results, peers):
    rows = ["| threads | peer | time with lengths | time at full length | fraction (target <= 0.55) |",
            "|---|---|---|---|---|"]
    found = False
    for run in results["runs"]:
        for w in run["workloads"]:
            if w["name"] != "varlen":
                continue
            found = True
            for p in peers:
                e = w["peers"].get(p, {})
                if "full_length_time_s" in e:
                    rows.append(f"| {run['threads']} | {p} | {_t(e['time_s'])} | "
                                f"{_t(e['full_length_time_s'])} | {e['full_length_fraction']:.2f} |")
            rows.append(f"| {run['threads']} | (real lengths / full) | | | "
                        f"{w['mean_length_fraction']:.2f} |")
    return "\n".join(rows) if found else None


def agreement_table(results, peers):
    head = ["workload", "threads"] + peers
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in results["runs"]:
        for w in run["workloads"]:
            cells = [w["name"], str(run["threads"])]
            for p in peers:
                e = w["peers"].get(p, {})
                if e.get("status") != "ok":
                    cells.append(e.get("status", "missing"))
                    continue
                cell = f"{_e(e['max_abs_diff_vs_fastlstm'])} / {_e(e['error_vs_float64'])}"
                cells.append(cell + (" FLAGGED" if e["flagged"] else ""))
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _peer_status_lines(results):
    lines = []
    for run in results["runs"][:1]:
        for name, info in run["peers"].items():
            if info["status"] == "ok":
                lines.append(f"- {name}: {info['version']}")
            else:
                lines.append(f"- {name}: **missing** ({info['reason']})")
    errors = {(name, e["reason"]) for run in results["runs"] for w in run["workloads"]
              for name, e in w["peers"].items() if e.get("status") == "error"}
    lines += [f"- {name}: **error** while building or checking: {reason}" for name, reason in sorted(errors)]
    return lines


def markdown(results, summary_only=False):
    meta = results["meta"]
    out = []
    if not summary_only:
        out += ["# fastlstm benchmark results", "",
                f"Generated by `{meta['command']}` on {meta['date_utc']} UTC ({meta['mode']} mode, "
                f"{meta['wall_s']} s). Written by `fastlstm.bench.report`; do not edit by hand.",
                "The workloads, peers and targets are those of shared/BENCH.md.", ""]
        out += ["## Machine and versions", "",
                f"- CPU: {meta['cpu']}; {meta['logical_cpus']} logical CPUs, "
                f"{meta['usable_cpus']} usable; SIMD: {', '.join(meta['simd']) or 'none found'}",
                f"- {meta['platform']}; Python {meta['python']}, NumPy {meta['numpy']}, "
                f"SciPy {meta['scipy']}",
                f"- fastlstm {meta['fastlstm']} at commit `{meta['commit']}`"]
        cfg = _all_runs(results)[0]["fastlstm_config"]
        blas = cfg.get("blas") or {}
        blas_text = blas.get("config") or blas.get("library") or "unknown"
        if cfg.get("blas_used") is False:
            blas_text = f"not called by fastlstm (tile kernels); SciPy's is {blas_text}"
        out.append(f"- fastlstm runtime: OpenMP {'on (' + str(cfg['openmp_version']) + ')' if cfg['openmp'] else 'off'}, "
                   f"SIMD {cfg['simd']}, BLAS {blas_text}")
        if meta.get("isa") == "avx2":
            out.append("- **Held to AVX2** (`--isa avx2`, as on a CPU without AVX-512): fastlstm "
                       "(FASTLSTM_SIMD=avx2), PyTorch's oneDNN (DNNL_MAX_CPU_ISA=AVX2) and "
                       "NumPy's OpenBLAS (OPENBLAS_CORETYPE=Haswell), so the sgemm rate below is "
                       "the AVX2 one; ONNX Runtime and TensorFlow, if present, were not held.")
        for run in results["runs"]:
            avx2 = run.get("sgemm_avx2_gflops")
            others = run.get("other_processes_cpu_fraction")
            out.append(f"- {run['threads']} thread(s): sgemm (NumPy float32 "
                       f"{run['settings']['sgemm_n']}^3) {run['sgemm_gflops']:.1f} GFLOP/s"
                       + (f", {avx2:.1f} GFLOP/s with OpenBLAS held to its AVX2 kernels" if avx2 else "")
                       + f"; BLAS threads capped by {run['blas_thread_control']}"
                       + (f"; other processes used {others:.0%} of all CPU time during this run"
                          if others is not None else ""))
        busy = [r["other_processes_cpu_fraction"] for r in results["runs"]
                if (r.get("other_processes_cpu_fraction") or 0) > 0.1]
        if busy:
            out.append(f"- **The machine was shared**: other processes used up to {max(busy):.0%} "
                       f"of all CPU time during a run; absolute times are inflated, and runs on "
                       f"all cores suffer most (a thread that waits for a descheduled partner "
                       f"at every step).")
        if results["runs"]:
            out += ["", "Peers:", ""] + _peer_status_lines(results)
        out.append("")
    if results["runs"]:
        out += _float32_sections(results, summary_only)
    for precision, part in results.get("precision", {}).items():
        out += _precision_sections(precision, part, summary_only)
    if not summary_only:
        out += ["## How this was measured", "", METHOD, ""] + _plot_lines(results)
    return "\n".join(out)


def _all_runs(results):
    return results["runs"] + [r for part in results.get("precision", {}).values()
                              for r in part["runs"]]


def _float32_sections(results, summary_only):
    meta = results["meta"]
    peers = _peers_in(results)
    out = []
    for line in meta.get("failed_runs", []):
        out += [f"**No results for {line}**", ""]
    for run in results["runs"]:
        s = run["settings"]
        out += [f"## {run['threads']} thread(s)" if not summary_only else
                f"### fastlstm benchmark, {run['threads']} thread(s) "
                f"(sgemm {run['sgemm_gflops']:.1f} GFLOP/s, {meta['mode']} mode)", ""]
        if run.get("crashed"):
            out += [f"**The worker process died ({run['crashed']}); the workloads after it "
                    f"did not run.**", ""]
        if not summary_only:
            out += [f"Median of {s['rounds']} alternating rounds after {s['warmup']} warm-up "
                    f"call(s); ratio = peer time / fastlstm time (above 1: fastlstm faster); "
                    f"sgemm {run['sgemm_gflops']:.1f} GFLOP/s.", ""]
        out += [summary_table(run, peers), ""]
    if summary_only:
        missing = [l for l in _peer_status_lines(results) if "missing" in l or "error" in l]
        return out + missing + ([""] if missing else [])
    out += ["## Targets", "", targets_table(results), "", SGEMM_TARGET_NOTE[0].upper()
            + SGEMM_TARGET_NOTE[1:] + ".", ""]
    vt = varlen_table(results, peers)
    if vt:
        out += ["## Variable lengths: cost against the same batch at full length", "", vt, ""]
    out += ["## Agreement", "",
            f"Each cell: max abs difference from fastlstm's output / max abs error against the "
            f"float64 reference (`fastlstm.reference`), over the valid steps. A peer more than "
            f"{AGREEMENT_TOLERANCE:g} away from fastlstm is FLAGGED; fastlstm's own error must "
            f"stay within {ACCURACY_TARGET:g}.", "", agreement_table(results, peers), ""]
    return out


def _plot_lines(results):
    plots = results.get("plots", {})
    out = ["## Plots", ""]
    if plots.get("files"):
        return out + [f"![{os.path.splitext(f)[0]}]({f})" for f in plots["files"]] + [""]
    return out + [f"Plots skipped: {plots.get('note', 'not made')}.", ""]


def _precision_peers(part):
    seen = []
    for run in part["runs"]:
        for w in run["workloads"]:
            seen += [n for n in w["peers"] if n not in seen]
    return seen


def _ratio_check(w, precision):
    """The target peer's ratio, with its target and verdict: "1.62x (>= 1.5: pass)"."""
    target = TARGET_PEERS[precision].name
    value = w["peers"].get(target, {}).get("ratio")
    minimum = PRECISION_TARGETS[precision][0].get(w["name"])
    if value is None or minimum is None:
        return _x(value)
    return f"{_x(value)} (>= {minimum:g}: {'pass' if value >= minimum else '**FAIL**'})"


def _max_mean(entry):
    if entry.get("status") != "ok":
        return entry.get("status", "missing")
    return f"{_e(entry['error_vs_float64'])} / {_e(entry['mean_error_vs_float64'])}"


def precision_table(run, precision, peers):
    """One thread count of a reduced-precision run: times and ratios, errors, targets."""
    target = TARGET_PEERS[precision].name
    others = [p for p in peers if p != "fastlstm"]
    head = (["workload", "shape", f"fastlstm {precision}"] + [f"{p} (ratio)" for p in others]
            + [f"{target} / fastlstm", "fastest float32 / fastlstm",
               "error max / mean: fastlstm", target, "targets"])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w in run["workloads"]:
        peer_entries = w["peers"]
        fastest = w.get("fastest_float32_peer")
        cells = [w["name"], w["shape"], _t(peer_entries["fastlstm"].get("time_s"))]
        cells += [_peer_cell(peer_entries.get(p, {"status": "missing"})) for p in others]
        cells += [_ratio_check(w, precision),
                  f"{_x(w.get('ratio_vs_fastest_float32'))} ({fastest})" if fastest else "no peer",
                  _max_mean(peer_entries["fastlstm"]),
                  _max_mean(peer_entries.get(target, {"status": "missing"})),
                  _verdict(w["targets"])]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def precision_errors_table(rows, precision, peers):
    """The error table of a reduced-precision run: max / mean abs error against float64 of
    every peer, per workload and init, and the error target."""
    share = PRECISION_TARGETS[precision][1]
    target = TARGET_PEERS[precision].name
    head = (["workload", "shape", "init", f"fastlstm {precision}"]
            + [p for p in peers if p != "fastlstm"]
            + [f"target: max <= {share:g} x {target}'s"])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        check = row["target"]
        verdict = {True: "pass", False: "**FAIL**", None: "n/a"}[check["pass"]]
        cells = [row["name"], row["shape"], row["init"]]
        cells += [_max_mean(row["peers"].get(p, {"status": "missing"})) for p in peers]
        cells.append(f"{verdict} (limit {_e(check['limit'])})")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _precision_errors(part):
    return next((r["errors"] for r in part["runs"] if "errors" in r), None)


def _precision_sections(precision, part, summary_only):
    meta, runs = part["meta"], part["runs"]
    peers = _precision_peers(part)
    target = TARGET_PEERS[precision].name
    out = [f"## Reduced precision: {precision}", ""]
    if not summary_only:
        minimums, share = PRECISION_TARGETS[precision]
        by_min = {}
        for name, m in minimums.items():
            by_min.setdefault(m, []).append(name)
        out += [f"Generated by `{meta['command']}` on {meta['date_utc']} UTC ({meta['mode']} "
                f"mode, {meta['wall_s']} s) at commit `{meta['commit']}`; {meta['cpu']}, "
                f"{meta['usable_cpus']} usable CPUs, SIMD {', '.join(meta['simd'])}.", "",
                f"fastlstm is `fastlstm.quantize(model, \"{precision}\")` of the float32 "
                f"model every peer shares; {target} is {PRECISION_PEER_NOTES[precision]}; the "
                f"float32 peers (fastlstm-float32, onnxruntime, torch) give the speed-up over "
                f"exact inference. Ratio = peer time / fastlstm {precision} time (above 1: "
                f"fastlstm {precision} is faster). Targets (BENCH.md): {target} / fastlstm "
                + "; ".join(f">= {m:g} on {', '.join(n)}" for m, n in by_min.items())
                + f"; max abs error against float64 <= {share:g} x {target}'s on the same "
                f"model and inputs.", "", "Peers:", ""] + _peer_status_lines(part) + [""]
        for line in meta.get("failed_runs", []):
            out += [f"**No results for {line}**", ""]
    for run in runs:
        out += [f"### {precision}, {run['threads']} thread(s)", ""]
        if run.get("crashed"):
            out += [f"**The worker process died ({run['crashed']}); what came after did "
                    f"not run.**", ""]
        out += [precision_table(run, precision, peers), ""]
    errors = _precision_errors(part)
    if errors:
        out += [f"### {precision}: error against float64, two inits and a long sequence", ""]
        if not summary_only:
            out += [ERRORS_NOTE, ""]
        out += [precision_errors_table(errors, precision, peers), ""]
    return out


PRECISION_PEER_NOTES = {
    "int8": ("the ONNX Runtime peer's float32 model through `onnxruntime.quantization."
             "quantize_dynamic(weight_type=QuantType.QInt8, op_types_to_quantize=[\"LSTM\"])`, "
             "a `DynamicQuantizeLSTM` node (checked): int8 W and R with one scale per direction "
             "(per_channel off), input and h quantized to uint8 at run time"),
    "bfloat16": "`torch.nn.LSTM` (`nn.LSTMCell` for the stream) and its input and state in "
                "`torch.bfloat16`, outputs back to float32 inside the timing",
}

ERRORS_NOTE = """\
Each cell: max / mean abs error of the output sequence against `fastlstm.reference` in float64
on the float32 model (stream_step: 64 steps from zero state), the same N(0, 1) inputs for all.
Two inits: "pytorch" is the timed model (PyTorch's default, uniform in +-1/sqrt(H)); "trained-like"
(`fastlstm.bench.workloads.trained_like`) scales every weight matrix by 3 (uniform in +-3/sqrt(H))
and adds 1 to the forget-gate bias, as a trained LSTM has them: under PyTorch's init each gate's
recurrent block has a spectral radius near 0.58, so the state (and any rounding error in it) fades
within a few steps; at 3x it is near 1.7, pre-activations reach into the gates' saturation and
forget gates held open carry an error forward. seq_long is seq_latency's shape over 1000 steps.
The error target is checked on every row."""


METHOD = """\
- Every peer runs from the same weights (`fastlstm.LSTM(..., seed=0)`, PyTorch's default
  init) and the same seeded float32 inputs, standard normal (as the project's tests draw
  them), zero initial state; lengths are uniform in 1..time (seeded).
- Accuracy: max abs error of the output sequence (valid steps) against
  `fastlstm.reference.lstm` in float64. How far any float32 LSTM lands from float64 grows with
  the input and hidden sizes and the input scale: with standard normal inputs the float32
  peers themselves exceed 3e-7 on the wide shapes (batch, large, deepbench); the targets
  table shows the best peer's error beside fastlstm's.
- Each thread count runs in its own worker process with `OMP_NUM_THREADS`,
  `OPENBLAS_NUM_THREADS` and `MKL_NUM_THREADS` set to it, and `OPENBLAS_CORETYPE` /
  `OPENBLAS_L2_SIZE` removed (some machines set them to hold old OpenBLAS builds to a kernel
  that works there; on a current one they cost the NumPy peer and the sgemm rate their AVX-512
  kernels), and every peer set explicitly:
  `fastlstm.set_num_threads`, threadpoolctl on NumPy's BLAS (the NumPy peer and the sgemm
  rate), `torch.set_num_threads` (interop 1), ONNX Runtime `intra_op_num_threads` (inter-op 1,
  sequential), TensorFlow `tf.config.threading` intra-op (inter-op 1). TensorFlow sizes its
  pools once per process, before its first op: that is why each thread count gets a process,
  and TensorFlow is set up before any workload runs.
- Peers are timed in alternation: each round times every peer once, in an order rotated
  every round; a sample is the mean of back-to-back calls lasting at least the minimum
  sample time (hundreds of calls for a stream step). Before it: 20 ms of sleep, and more
  20 ms slices (up to 200 ms) while the process still uses CPU asleep, so the other runtimes'
  thread pools have parked (ONNX Runtime's spins 50-70 ms after a call); then, for a call under
  50 ms (5 ms in quick mode), untimed calls for that long, so this peer's threads are awake
  and its weights in cache. The reported time is the median sample.
- "CPU used by others": the share of all CPUs' time that other processes took while a
  workload was timed (/proc/stat less this process); on a shared machine it explains
  outliers, above all on all cores, where every step waits for a descheduled thread.
- Inputs are prepared once in each peer's native layout outside the timing (time-major for
  ONNX Runtime and PyTorch, a `tf.Tensor` for TensorFlow); outputs become NumPy arrays
  inside the timing. PyTorch packs and unpacks padded batches inside the timing
  (`pack_padded_sequence(enforce_sorted=False)` / `pad_packed_sequence`); ONNX Runtime gets
  `sequence_lens`; Keras a mask. The stack workload in ONNX is two bidirectional `LSTM`
  nodes joined by Transpose + Reshape.
- stream_step is one call from Python per step with the state carried: fastlstm
  `model.stream(1).step(x_t)`; ONNX Runtime a one-step session with `initial_h/c` fed back
  from `Y_h/Y_c`; PyTorch `nn.LSTMCell`; TensorFlow a Keras `LSTMCell` in a `tf.function`; NumPy
  `fastlstm.reference.lstm` over one step with the state passed back. Agreement is checked
  over 64 consecutive steps from zero state.
- GFLOP/s = 2 * steps * 4H * (input + H), summed over layers and directions, per second,
  where steps = batch * time, or the sum of the real lengths for varlen and stack (the
  useful work). The sgemm rate is NumPy's float32 2048^3 matmul, best of several, in the
  same process and thread count: once at the start of the run (the header) and again right
  before each workload is timed (the "of N" in the tables, which the targets use).
- varlen is also timed at full length (same batch, no lengths) in the same alternation;
  its fraction is time(lengths) / time(full length) per peer.
- Absolute times drift on a shared machine; ratios from one run hold better."""


def plots(results, out_dir):
    """Write the PNG plots; return {"files": [...]} or {"note": why not}."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {"files": [], "note": "matplotlib is not installed (pip install matplotlib)"}
    files = []

    def grouped_bars(ax, run, peers, field, scale):
        """One group of bars per workload, one bar per peer that has `field`."""
        names = [w["name"] for w in run["workloads"]]
        width = 0.8 / max(1, len(peers))
        for j, p in enumerate(peers):
            xs, ys = [], []
            for i, w in enumerate(run["workloads"]):
                value = w["peers"].get(p, {}).get(field)
                if value is not None:
                    xs.append(i + (j - (len(peers) - 1) / 2) * width)
                    ys.append(value * scale)
            ax.bar(xs, ys, width, label=p)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right")

    def figure(name, draw, runs, peers):
        fig, axes = plt.subplots(1, len(runs), figsize=(6.5 * len(runs), 4.5), squeeze=False)
        for ax, run in zip(axes[0], runs):
            draw(ax, run, peers)
            ax.legend(fontsize=8)
        fig.tight_layout()
        files.append(name)
        fig.savefig(os.path.join(out_dir, name), dpi=110)
        plt.close(fig)

    def times(ax, run, peers, what="time per workload"):
        grouped_bars(ax, run, peers, "time_s", 1e3)
        ax.set_yscale("log")
        ax.set_ylabel("ms per call (median, log scale)")
        ax.set_title(f"{what}, {run['threads']} thread(s)")

    def rates(ax, run, peers):
        grouped_bars(ax, run, peers, "gflops", 1.0)
        ax.axhline(run["sgemm_gflops"], color="black", linestyle="--",
                   label=f"sgemm {run['sgemm_gflops']:.0f}")
        ax.axhline(0.9 * run["sgemm_gflops"], color="gray", linestyle=":", label="90% of sgemm")
        ax.set_ylabel("GFLOP/s")
        ax.set_title(f"GFLOP/s against the sgemm rate, {run['threads']} thread(s)")

    if results["runs"]:
        figure("time_per_workload.png", times, results["runs"], _peers_in(results))
        figure("gflops_vs_sgemm.png", rates, results["runs"], _peers_in(results))
    for precision, part in results.get("precision", {}).items():
        def precision_times(ax, run, peers, precision=precision):
            times(ax, run, peers, f"{precision}: time per workload")
        figure(f"precision_{precision}_time.png", precision_times, part["runs"],
               _precision_peers(part))
    return {"files": files}


README_START = "<!-- benchmark table: generated by python -m fastlstm.bench from bench/results.json -->"
README_END = "<!-- end of benchmark table -->"


def readme_table(results):
    """The README's table: per workload, fastlstm's time and its ratio to the fastest peer for
    each thread count, and the largest error against float64; then where it ran."""
    meta, runs = results["meta"], results["runs"]
    head = ["workload"] + [f"{r['threads']} thread{'s' * (r['threads'] > 1)}: fastlstm | ratio"
                           for r in runs] + ["max error vs float64"]
    rows = ["| " + " | ".join(head) + " |",
            "|" + "---|" * (1 + 2 * len(runs) + 1)]
    by_run = [{w["name"]: w for w in r["workloads"]} for r in runs]
    for name in by_run[0]:
        cells = [f"{name} ({by_run[0][name]['shape']})"]
        errors = []
        for run in by_run:
            w = run.get(name)
            if w is None:
                cells += ["-", "-"]
                continue
            best = w.get("fastest_peer")
            cells += [_t(w["peers"]["fastlstm"].get("time_s")),
                      f"{_x(w.get('ratio_vs_fastest'))} ({best})" if best else "no peer"]
            errors.append(w["error_vs_float64"])
        cells.append(_e(max(e for e in errors if e is not None)) if any(
            e is not None for e in errors) else "-")
        rows.append("| " + " | ".join(cells) + " |")
    cpu = meta["cpu"] + (", held to AVX2" if meta.get("isa") == "avx2" else "")
    rows += ["", f"Generated at commit `{meta['commit'][:7]}` on {meta['date_utc']} UTC "
             f"({meta['mode']} mode): {cpu}, {meta['usable_cpus']} usable CPUs, "
             f"SIMD {runs[0]['fastlstm_config']['simd']}; peers: "
             + ", ".join(_peer_status_lines(results)).replace("- ", "") + "."]
    return "\n".join(rows)


README_PRECISION_START = ("<!-- precision table: generated by python -m fastlstm.bench "
                          "--precision from bench/results.json -->")
README_PRECISION_END = "<!-- end of precision table -->"


def readme_precision_table(results):
    """The README's reduced-precision table: per precision and workload, fastlstm's time, its
    ratio to the target peer and to the fastest float32 peer for each thread count, the largest
    error against float64 with each init, and whether every target held; then where each ran."""
    sections = results["precision"]
    counts = sorted({r["threads"] for part in sections.values() for r in part["runs"]})
    head = ["precision", "workload"]
    for n in counts:
        head += [f"{n} thread{'s' * (n > 1)}: fastlstm", "vs target peer", "vs fastest float32"]
    head += ["max error vs float64 (PyTorch init / trained-like)", "targets"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for precision, part in sections.items():
        by_threads = {r["threads"]: {w["name"]: w for w in r["workloads"]} for r in part["runs"]}
        errors = _precision_errors(part) or []
        names = list(dict.fromkeys([n for run in by_threads.values() for n in run]
                                   + [row["name"] for row in errors]))
        for name in names:
            cells, checks = [precision, name], []
            for n in counts:
                w = by_threads.get(n, {}).get(name)
                if w is None:
                    cells += ["-", "-", "-"]
                    continue
                fastest = w.get("fastest_float32_peer")
                cells += [_t(w["peers"]["fastlstm"].get("time_s")),
                          _x(w["peers"].get(TARGET_PEERS[precision].name, {}).get("ratio")),
                          f"{_x(w.get('ratio_vs_fastest_float32'))} ({fastest})" if fastest
                          else "-"]
                checks += w["targets"]
            by_init = {row["init"]: row for row in errors if row["name"] == name}
            cells.append(" / ".join(
                _e(by_init[i]["peers"]["fastlstm"]["error_vs_float64"]) if i in by_init else "-"
                for i in INITS))
            checks += [row["target"] for row in by_init.values()]
            cells.append(_verdict(checks) if checks else "-")
            rows.append("| " + " | ".join(cells) + " |")
        meta = part["meta"]
        versions = ", ".join(f"{n} {i['version']}" for n, i in part["runs"][0]["peers"].items()
                             if i["status"] == "ok" and not n.startswith("fastlstm"))
        notes.append(f"- {precision}: target peer {TARGET_PEERS[precision].name}; generated at "
                     f"commit `{meta['commit'][:7]}` on {meta['date_utc']} UTC ({meta['mode']} "
                     f"mode), {meta['cpu']}, {meta['usable_cpus']} usable CPUs; {versions}.")
    return "\n".join(rows + [""] + notes)


def update_readme(readme, results):
    """Put ``readme_table(results)`` and, when results has reduced-precision sections,
    ``readme_precision_table(results)`` between their markers in the README; False when
    neither was written (no markers, or nothing to put there)."""
    with open(readme) as fh:
        text = fh.read()
    blocks = []
    if results["runs"]:
        blocks.append((README_START, README_END, readme_table))
    if results.get("precision"):
        blocks.append((README_PRECISION_START, README_PRECISION_END, readme_precision_table))
    written = False
    for start, end, table in blocks:
        if start in text and end in text:
            head, rest = text.split(start, 1)
            _, tail = rest.split(end, 1)
            text = head + start + "\n" + table(results) + "\n" + end + tail
            written = True
    if written:
        with open(readme, "w") as fh:
            fh.write(text)
    return written


def load(out_dir):
    """The results.json in out_dir, or None (none there, or unreadable)."""
    try:
        with open(os.path.join(out_dir, "results.json")) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def merged(previous, new):
    """``new`` with the parts it did not measure taken from ``previous``: a float32 run keeps
    the reduced-precision sections, a precision run the float32 runs (and their meta) and the
    other precisions."""
    if not previous:
        return new
    out = dict(new)
    if not new["runs"] and previous.get("runs"):
        out["meta"], out["runs"] = previous["meta"], previous["runs"]
    precision = {**previous.get("precision", {}), **new.get("precision", {})}
    if precision:
        out["precision"] = precision
    return out


def write_all(results, out_dir):
    """RESULTS.md, results.json and the plots into out_dir; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    results["plots"] = plots(results, out_dir)
    paths = [os.path.join(out_dir, f) for f in results["plots"]["files"]]
    with open(os.path.join(out_dir, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1, default=float)
    with open(os.path.join(out_dir, "RESULTS.md"), "w") as fh:
        fh.write(markdown(results) + "\n")
    return [os.path.join(out_dir, "RESULTS.md"), os.path.join(out_dir, "results.json")] + paths
