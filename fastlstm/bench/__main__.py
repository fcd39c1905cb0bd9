"""``python -m fastlstm.bench [--quick] [--precision int8|bfloat16] [--threads 1,2]
[--workloads a,b] [--peers p,q] [--out DIR] [--isa avx2]``

Runs the workloads of shared/BENCH.md against every installed peer, once per thread count,
each thread count in a fresh worker process (TensorFlow sizes its thread pools once per
process; a fresh process also leaves no other runtime's threads behind), then writes
RESULTS.md, results.json and the plots into DIR and prints the table. With --precision, the
reduced-precision workloads instead: fastlstm.quantize(model, P) against that precision's
peer and the float32 peers, plus the error table; its section joins those already in DIR.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from . import report
from .harness import machine_info, package_root, run_threads
from .peers import PRECISIONS, peers_for
from .workloads import PRECISION_WORKLOADS, WORKLOADS

# The peers whose kernels --isa avx2 holds to AVX2, and how (environment variables read when
# each library loads, so they are set for the worker processes only).
ISA_HELD = ("fastlstm", "fastlstm-float32", "torch", "torch-bf16", "numpy")
ISA_AVX2_ENV = {"FASTLSTM_SIMD": "avx2", "DNNL_MAX_CPU_ISA": "AVX2",
                "ONEDNN_MAX_CPU_ISA": "AVX2", "OPENBLAS_CORETYPE": "Haswell"}


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _csv(text, allowed, what):
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(bad) or '(none given)'}; expected some of {', '.join(allowed)}")
    return items


def _threads(text):
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--threads takes positive integers like 1,2; got {text!r}")
    return list(dict.fromkeys(values))


def parse_args(argv, prog="python -m fastlstm.bench"):
    cores = _usable_cpus()
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: fewer rounds, a shorter `large`, the sgemm rate once (under a "
                         "minute with every peer on 2 cores)")
    ap.add_argument("--precision", choices=PRECISIONS, default=None,
                    help="time fastlstm.quantize(model, PRECISION) against ONNX Runtime int8 "
                         "(int8) or PyTorch bfloat16 (bfloat16) and the float32 peers, and "
                         "tabulate every peer's error (default workloads: "
                         + ", ".join(PRECISION_WORKLOADS) + ")")
    ap.add_argument("--threads", type=_threads, default=sorted({1, cores}),
                    help=f"comma-separated thread counts (default 1,{cores}: one and all cores)")
    ap.add_argument("--workloads", type=lambda s: _csv(s, list(WORKLOADS), "workload"),
                    default=None, help="comma-separated, default all: " + ", ".join(WORKLOADS))
    ap.add_argument("--peers", default=None,
                    help="comma-separated, default all: " + ", ".join(peers_for())
                         + "; with --precision P: " + ", ".join(peers_for("int8"))
                         + " (int8; bfloat16 has torch-bf16 in place of onnxruntime-int8); "
                         "with --isa avx2 those of " + ", ".join(ISA_HELD))
    ap.add_argument("--out", default=None,
                    help="directory for RESULTS.md, results.json and plots "
                         "(default bench/, or bench/quick/ with --quick)")
    ap.add_argument("--in-process", action="store_true",
                    help="run in this process instead of a worker per thread count "
                         "(one thread count only when TensorFlow is a peer)")
    ap.add_argument("--isa", choices=["native", "avx2"], default="native",
                    help="avx2: hold fastlstm, PyTorch's oneDNN and NumPy's OpenBLAS (so the "
                         "sgemm rate too) to their AVX2 kernels, as on a CPU without AVX-512; "
                         "ONNX Runtime and TensorFlow have no such switch and join only when "
                         "named in --peers")
    ap.add_argument("--worker", metavar="JSON", help=argparse.SUPPRESS)
    ap.add_argument("--errors", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--started", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    registry = peers_for(args.precision or "float32")
    if args.workloads is None:
        args.workloads = list(PRECISION_WORKLOADS if args.precision else WORKLOADS)
    if args.peers is None:
        args.peers = [p for p in registry if args.isa == "native" or p in ISA_HELD]
    else:
        try:
            args.peers = _csv(args.peers, list(registry), "peer")
        except argparse.ArgumentTypeError as exc:
            ap.error(f"argument --peers: {exc}")
    return args



_started = time.time()


def _log(msg):
    """A progress line on stderr, stamped with the seconds since the run started."""
    print(f"[{time.time() - _started:5.1f} s] {msg}", file=sys.stderr, flush=True)


def _worker_env(threads, isa="native"):
    env = dict(os.environ)
    # Every runtime that reads these starts at the thread count under test; each peer's
    # setup sets its own count explicitly as well.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    # OpenBLAS's idle workers (NumPy's, behind the NumPy peer) busy-wait about 2**28 cycles,
    # a tenth of a second, after each call: far past the harness's idle gap, so they would
    # take a core from whichever peer is timed next. 2**4 cycles lets them sleep at once.
    env.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    # Some machines set OPENBLAS_CORETYPE (with OPENBLAS_L2_SIZE) to hold old OpenBLAS builds
    # to a kernel that works there; it holds a current one to slower kernels (Haswell on an
    # AVX-512 CPU). The benchmark measures the machine as it is: both are dropped together, for
    # the workers only, and the report records OpenBLAS's core as each worker found it.
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(var, None)
    if isa == "avx2":
        env.update(ISA_AVX2_ENV)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root(), env.get("PYTHONPATH")) if p)
    return env


def _run_worker(args, threads, errors):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run.json")
        cmd = [sys.executable, "-m", "fastlstm.bench", "--worker", out, "--threads", str(threads),
               "--workloads", ",".join(args.workloads), "--peers", ",".join(args.peers),
               "--started", repr(_started)]
        if args.quick:
            cmd.append("--quick")
        if args.precision:
            cmd += ["--precision", args.precision]
        if errors:
            cmd.append("--errors")
        proc = subprocess.run(cmd, env=_worker_env(threads, args.isa))
        if not os.path.exists(out):
            _log(f"the worker for {threads} thread(s) failed before its first workload "
                 f"(exit {proc.returncode})")
            return None
        with open(out) as fh:
            run = json.load(fh)
        if proc.returncode or "in_progress" in run:
            # A crash (a segfault in a kernel, say) is a result too: keep what finished.
            run["crashed"] = f"exit {proc.returncode} during {run.get('in_progress', '?')}"
            _log(f"the worker for {threads} thread(s) died: {run['crashed']}")
        return run


def _checkpoint_writer(path):
    def write(run):
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(run, fh)
        os.replace(tmp, path)
    return write


def main(argv=None, prog="python -m fastlstm.bench"):
    global _started
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv, prog)
    _started = time.time() if args.started is None else args.started
    precision = args.precision or "float32"
    if args.worker:
        write = _checkpoint_writer(args.worker)
        write(run_threads(args.threads[0], args.workloads, args.peers, args.quick, _log,
                          checkpoint=write, precision=precision, errors=args.errors))
        return 0
    if args.in_process and args.isa != "native":
        raise SystemExit("--isa needs the worker processes (each library picks its kernels when "
                         "it loads); drop --in-process")
    if args.in_process and len(args.threads) > 1 and "tensorflow" in args.peers:
        raise SystemExit("--in-process runs one thread count when tensorflow is a peer "
                         "(its thread pools are sized once per process)")
    runs, failed = [], []
    for threads in args.threads:
        # the error table does not depend on the thread count: the first run makes it
        errors = bool(args.precision) and threads == args.threads[0]
        if args.in_process:
            runs.append(run_threads(threads, args.workloads, args.peers, args.quick, _log,
                                    precision=precision, errors=errors))
        else:
            run = _run_worker(args, threads, errors)
            if run is None or not run["workloads"]:
                failed.append(f"{threads} thread(s): "
                              + (run["crashed"] if run else "the worker failed before its first workload"))
            else:
                runs.append(run)
    if not runs:
        raise SystemExit("no thread count produced results: " + "; ".join(failed))
    meta = {**machine_info(), "mode": "quick" if args.quick else "full", "isa": args.isa,
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(_started)),
            "wall_s": round(time.time() - _started, 1),
            "failed_runs": failed,
            "command": " ".join([prog] + argv)}
    if args.precision:
        results = {"meta": meta, "runs": [],
                   "precision": {args.precision: {"meta": meta, "runs": runs}}}
    else:
        results = {"meta": meta, "runs": runs}
    out = args.out or os.path.join("bench", "quick" if args.quick else "")
    # the parts this run did not measure stay as the last runs into DIR left them
    merged = report.merged(report.load(out), results)
    written = report.write_all(merged, out)
    # a full run into a checkout's bench/ also regenerates the README's tables
    if args.out is None and not args.quick and args.isa == "native" \
            and os.path.exists("README.md") and report.update_readme("README.md", merged):
        written.append("README.md")
    print(report.markdown(results, summary_only=args.quick))
    for path in written:
        _log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
