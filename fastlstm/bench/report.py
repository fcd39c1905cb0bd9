"""The generated report: RESULTS.md, results.json and the PNG plots (matplotlib, Agg)."""
import json
import math
import os

from .harness import ACCURACY_TARGET, AGREEMENT_TOLERANCE, SGEMM_TARGET_NOTE
from .peers import PEERS

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
    peers = _peers_in(results)
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
        cfg = results["runs"][0]["fastlstm_config"]
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
        out += ["", "Peers:", ""] + _peer_status_lines(results) + [""]
    for line in results["meta"].get("failed_runs", []):
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
        out += missing + ([""] if missing else [])
        return "\n".join(out)
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
    out += ["## How this was measured", "", METHOD, ""]
    plots = results.get("plots", {})
    out += ["## Plots", ""]
    if plots.get("files"):
        out += [f"![{os.path.splitext(f)[0]}]({f})" for f in plots["files"]] + [""]
    else:
        out += [f"Plots skipped: {plots.get('note', 'not made')}.", ""]
    return "\n".join(out)


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
  sample time (hundreds of calls for a stream step), preceded by one untimed call so the
  previous peer's spinning threads settle, after 20 ms of sleep in which the other
  runtimes' thread pools park, and more 20 ms slices (up to 200 ms) while the process still
  uses CPU asleep: ONNX Runtime's pool spins 50-70 ms after a call. The reported time is the
  median sample.
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
    peers = _peers_in(results)
    runs = results["runs"]
    files = []

    def grouped_bars(ax, run, field, scale):
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

    def figure(name, draw):
        fig, axes = plt.subplots(1, len(runs), figsize=(6.5 * len(runs), 4.5), squeeze=False)
        for ax, run in zip(axes[0], runs):
            draw(ax, run)
            ax.legend(fontsize=8)
        fig.tight_layout()
        files.append(name)
        fig.savefig(os.path.join(out_dir, name), dpi=110)
        plt.close(fig)

    def times(ax, run):
        grouped_bars(ax, run, "time_s", 1e3)
        ax.set_yscale("log")
        ax.set_ylabel("ms per call (median, log scale)")
        ax.set_title(f"time per workload, {run['threads']} thread(s)")

    def rates(ax, run):
        grouped_bars(ax, run, "gflops", 1.0)
        ax.axhline(run["sgemm_gflops"], color="black", linestyle="--",
                   label=f"sgemm {run['sgemm_gflops']:.0f}")
        ax.axhline(0.9 * run["sgemm_gflops"], color="gray", linestyle=":", label="90% of sgemm")
        ax.set_ylabel("GFLOP/s")
        ax.set_title(f"GFLOP/s against the sgemm rate, {run['threads']} thread(s)")

    figure("time_per_workload.png", times)
    figure("gflops_vs_sgemm.png", rates)
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


def update_readme(readme, results):
    """Put ``readme_table(results)`` between the README's markers; False when it has none."""
    with open(readme) as fh:
        text = fh.read()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    with open(readme, "w") as fh:
        fh.write(head + README_START + "\n" + readme_table(results) + "\n" + README_END + tail)
    return True


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
