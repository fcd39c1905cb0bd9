"""Build of the native core: one Cython extension plus the C kernels in csrc/.

OpenMP is used only when the compiler can build *and run* a small OpenMP program; otherwise
the extension is built serially and a warning says so. The default build carries no
CPU-specific -m flags and no fast-math, so a wheel runs on any x86-64 or ARM CPU; the
SIMD kernels are chosen at run time (csrc/fl_simd_dispatch.c).
"""
import glob
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import warnings

import numpy
from setuptools import Extension, setup

OPENMP_PROBE = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    printf("%d\n", n > 0);
    return n > 0 ? 0 : 1;
}
"""


# Ways to ask for OpenMP, tried in order: GCC and LLVM clang take -fopenmp; Apple clang has no
# runtime of its own and needs libomp's (Homebrew's or conda's) headers and library, found
# through CFLAGS/LDFLAGS (see [tool.cibuildwheel.macos] in pyproject.toml).
OPENMP_CANDIDATES = [(["-fopenmp"], ["-fopenmp"])]
if sys.platform == "darwin":
    OPENMP_CANDIDATES.append((["-Xpreprocessor", "-fopenmp"], ["-lomp"]))


def _probe_openmp(cc, compile_flags, link_flags):
    """Whether cc builds and runs the probe with these flags (CFLAGS/LDFLAGS included)."""
    env_flags = shlex.split(os.environ.get("CFLAGS", "")) + shlex.split(os.environ.get("LDFLAGS", ""))
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        exe = os.path.join(tmp, "probe")
        with open(src, "w") as fh:
            fh.write(OPENMP_PROBE)
        try:
            subprocess.run(cc + compile_flags + [src, "-o", exe] + env_flags + link_flags,
                           check=True, capture_output=True)
            out = subprocess.run([exe], check=True, capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return False
    return out.strip() == "1"


def openmp_flags():
    """Return (compile, link) flags for OpenMP, or ([], []) when it cannot be trusted."""
    if os.environ.get("FASTLSTM_NO_OPENMP"):
        return [], []
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    for compile_flags, link_flags in OPENMP_CANDIDATES:
        if _probe_openmp(cc, compile_flags, link_flags):
            return compile_flags, link_flags
    warnings.warn("fastlstm: the compiler cannot build and run OpenMP code; "
                  "building the native core serially (one thread).")
    return [], []


def extensions():
    from Cython.Build import cythonize

    omp_compile, omp_link = openmp_flags()
    # -ffp-contract=off: no multiply-add fused behind the code's back, so the portable, AVX2
    # and AVX-512 kernels round alike (the contract of csrc/fl_simd.h) whatever the compiler's
    # default.
    extra_compile = ["-O3", "-std=c99", "-fno-strict-aliasing", "-ffp-contract=off"] + omp_compile
    extra_link = list(omp_link)
    if os.environ.get("FASTLSTM_SANITIZE"):
        # A debugging build: AddressSanitizer + UBSan, bounds checks on, no optimisation.
        extra_compile += ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
        extra_link += ["-fsanitize=address,undefined"]
    # Bounds checks are off in the default build (Python validates every argument first) and
    # on in the sanitizer build; they are set here, not in the .pyx header, which would win.
    checks = bool(os.environ.get("FASTLSTM_SANITIZE"))
    directives = {"language_level": 3, "cdivision": True, "boundscheck": checks,
                  "wraparound": checks, "initializedcheck": checks}
    ext = Extension(
        "fastlstm._core",
        # Every C file of csrc/ (the kernels are split by job; a new file needs no edit here).
        sources=["fastlstm/_core.pyx"] + sorted(glob.glob(os.path.join("csrc", "*.c"))),
        depends=sorted(glob.glob(os.path.join("csrc", "*.h"))),
        include_dirs=["csrc", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=extra_compile,
        extra_link_args=extra_link,
    )
    return cythonize([ext], compiler_directives=directives)


setup(ext_modules=extensions())
