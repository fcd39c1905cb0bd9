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

The OpenMP runtime named by ``show_config`` is the file the core's own ``omp_get_max_threads``
resolves to (``dladdr``), not whichever OpenMP library happens to be loaded (PyTorch and
TensorFlow bring their own): the system's ``libgomp.so.1`` for a source build, the copy that
``auditwheel repair`` vendors as ``fastlstm.libs/libgomp-<hash>.so.1`` for a manylinux wheel,
and libomp (delocated into ``fastlstm/.dylibs``) for a macOS wheel. The fork rule above does not
depend on which: the core records its own use of a parallel region.
"""
import ctypes
import os
import threading
from typing import Any, Dict

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


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _openmp_runtime():
    """The path of the OpenMP runtime the native core calls, or None (a serial build, or no
    dladdr on this platform)."""
    try:
        core = ctypes.CDLL(_core.__file__)
        # Resolved through the core's own dependencies: its OpenMP, whatever else is loaded.
        address = ctypes.cast(core.omp_get_max_threads, ctypes.c_void_p).value
        dladdr = ctypes.CDLL(None).dladdr
    except (OSError, AttributeError):
        return None
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    info = _DlInfo()
    if not dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.path.realpath(os.fsdecode(info.dli_fname))


def _runtime_family(path):
    name = os.path.basename(path or "").lower()
    if "gomp" in name:
        return "GNU libgomp"
    if "iomp" in name:
        return "Intel OpenMP"
    if "omp" in name:
        return "LLVM libomp"
    return None


def _vendored(path):
    """Whether the runtime is the wheel's own copy (auditwheel's fastlstm.libs/, delocate's
    fastlstm/.dylibs/) rather than the system's."""
    package = os.path.dirname(os.path.abspath(_core.__file__))
    return path is not None and os.path.dirname(path) in (
        os.path.join(os.path.dirname(package), "fastlstm.libs"), os.path.join(package, ".dylibs"))


_openmp_path = _openmp_runtime()


def set_num_threads(n: int) -> None:
    """Threads for fastlstm's kernels (1..256)."""
    global _num_threads
    n = check_int(n, "num_threads", minimum=1, maximum=MAX_THREADS)
    with _lock:
        _num_threads = 1 if _forked_after_parallel else n


def get_num_threads() -> int:
    return _num_threads


def _after_fork_in_child():
    global _forked_after_parallel, _num_threads, _lock
    # Another thread of the parent may have held the lock at the fork; none runs here.
    _lock = threading.Lock()
    if _core.runtime_facts()["openmp_used_in_parallel"]:
        _forked_after_parallel = True
        _num_threads = 1


os.register_at_fork(after_in_child=_after_fork_in_child)


def config() -> Dict[str, Any]:
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
        "openmp_runtime": _openmp_path,
        "openmp_runtime_family": _runtime_family(_openmp_path),
        "openmp_runtime_vendored": _vendored(_openmp_path),
        "threads": _num_threads,
        "forked_child_single_thread": _forked_after_parallel,
        "blas": blas,
        "blas_used": facts["blas_used"],
        "simd": facts["kernels"] + " kernels"
                + ("" if facts["avx2_fma"] else " (no AVX2/FMA on this CPU)"),
        "reduced_precision": facts["reduced_precision"],
    }


def show_config() -> Dict[str, Any]:
    """Print version, OpenMP, BLAS, SIMD and thread settings; return them as a dict."""
    cfg = config()
    runtime = "runtime not found"
    if cfg["openmp_runtime"]:
        runtime = (f"{cfg['openmp_runtime_family'] or 'runtime'} "
                   + ("vendored in the wheel, " if cfg["openmp_runtime_vendored"] else "")
                   + cfg["openmp_runtime"])
    omp = f"on (OpenMP {cfg['openmp_version']}, {runtime})" if cfg["openmp"] else "off (serial build)"
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
    print("  int8:    " + cfg["reduced_precision"]["int8"] + "; bfloat16: "
          + cfg["reduced_precision"]["bfloat16"] + " (fastlstm.quantize)")
    return cfg
