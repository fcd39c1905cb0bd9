"""Threads and configuration of the native core.

fastlstm runs on its own OpenMP threads, ``set_num_threads(n)`` of them. With SIMD kernels
(AVX2 or AVX-512) every product, the input projection included, runs in fastlstm's own tile
kernel and no BLAS is called. The portable build (a CPU without AVX2/FMA, or
``FASTLSTM_SIMD=portable``) projects the inputs with SciPy's OpenBLAS ``sgemm``, each thread
for its own rows; while such a call runs, SciPy's OpenBLAS is set to one thread (and set back
when the last concurrent fastlstm call returns), so OpenBLAS threads never spin against
fastlstm's: n threads means n threads in all. NumPy's own OpenBLAS is never touched.

Fork safety: GNU libgomp's thread pool does not survive ``fork()``: a child that enters a
parallel region after its parent ran one hangs. So a child forked after the parent ran a
parallel region runs fastlstm's kernels on one thread (``get_num_threads() == 1``, and
``set_num_threads`` cannot raise it there); a child forked before that keeps the parent's
setting. OpenBLAS, where it is called, runs single-threaded inside fastlstm's calls, so its
pool plays no part.
"""
import ctypes
import os
import threading

from . import _core
from ._checks import check_int

MAX_THREADS = 256

_lock = threading.Lock()
_forked_after_parallel = False


def _default_threads():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_num_threads = _default_threads()


def _loaded_libraries(word):
    try:
        with open("/proc/self/maps") as fh:
            return sorted({line.split()[-1] for line in fh if word in line.lower()})
    except OSError:
        return []


def _find_openblas():
    """SciPy's OpenBLAS, the library behind scipy.linalg.cython_blas, and its thread calls."""
    for path in _loaded_libraries("openblas"):
        if "scipy" not in path or not os.path.exists(path):
            continue
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas", "openblas"):
            setter = getattr(lib, prefix + "_set_num_threads", None)
            getter = getattr(lib, prefix + "_get_num_threads", None)
            config = getattr(lib, prefix + "_get_config", None)
            if setter and getter:
                getter.restype = ctypes.c_int
                if config:
                    config.restype = ctypes.c_char_p
                return path, setter, getter, config
    return None


_openblas = _find_openblas()


if _openblas is not None:
    _core.set_blas_thread_control(ctypes.cast(_openblas[1], ctypes.c_void_p).value,
                                  ctypes.cast(_openblas[2], ctypes.c_void_p).value)


def set_num_threads(n):
    """Threads for fastlstm's kernels (1..256)."""
    global _num_threads
    n = check_int(n, "num_threads", minimum=1, maximum=MAX_THREADS)
    with _lock:
        _num_threads = 1 if _forked_after_parallel else n


def get_num_threads():
    return _num_threads


def _after_fork_in_child():
    global _forked_after_parallel, _num_threads, _lock
    # Another thread of the parent may have held the lock at the fork; none runs here.
    _lock = threading.Lock()
    if _core.runtime_facts()["openmp_used_in_parallel"]:
        _forked_after_parallel = True
        _num_threads = 1


os.register_at_fork(after_in_child=_after_fork_in_child)


def config():
    """The facts show_config prints, as a dict."""
    from . import __version__

    facts = _core.runtime_facts()
    blas = {"library": None, "threads": None, "config": None}
    if _openblas is not None:
        path, _, getter, cfg = _openblas
        blas = {"library": path, "threads": getter(),
                "config": cfg().decode() if cfg else None}
    return {
        "version": __version__,
        "openmp": facts["openmp"],
        "openmp_version": facts["openmp_version"],
        "openmp_runtime": next((p for p in _loaded_libraries("omp") if "gomp" in p or "libomp" in p
                                or "iomp" in p), None),
        "threads": _num_threads,
        "forked_child_single_thread": _forked_after_parallel,
        "blas": blas,
        "blas_used": facts["blas_used"],
        "simd": facts["kernels"] + " kernels"
                + ("" if facts["avx2_fma"] else " (no AVX2/FMA on this CPU)"),
    }


def show_config():
    """Print version, OpenMP, BLAS, SIMD and thread settings; return them as a dict."""
    cfg = config()
    omp = (f"on (OpenMP {cfg['openmp_version']}, {cfg['openmp_runtime'] or 'runtime not found'})"
           if cfg["openmp"] else "off (serial build)")
    print(f"fastlstm {cfg['version']}")
    print(f"  OpenMP:  {omp}")
    print(f"  threads: {cfg['threads']} (fastlstm's OpenMP threads"
          + ("; each calls a single-threaded BLAS)" if cfg["blas_used"] else ")")
          + ("; forked child, single-threaded" if cfg["forked_child_single_thread"] else ""))
    blas = cfg["blas"]
    if not cfg["blas_used"]:
        print("  BLAS:    not called (the SIMD tile kernels project the inputs)")
    elif blas["library"]:
        print(f"  BLAS:    {blas['config']} via scipy.linalg.cython_blas; held at 1 thread "
              f"during fastlstm calls, {blas['threads']} otherwise ({blas['library']})")
    else:
        print("  BLAS:    scipy.linalg.cython_blas (thread control not found)")
    print(f"  SIMD:    {cfg['simd']}")
    return cfg
