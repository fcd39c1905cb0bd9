"""Build of the native core: one Cython extension plus the C kernels in csrc/.

OpenMP is used only when the compiler can build *and run* a small OpenMP program; otherwise
the extension is built serially and a warning says so. The default build carries no
CPU-specific -m flags and no fast-math, so a wheel runs on any x86-64 or ARM CPU; the
SIMD kernels are chosen at run time (csrc/fl_simd.c).
"""
import os
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


def openmp_flags():
    """Return (compile, link) flags for OpenMP, or ([], []) when it cannot be trusted."""
    if os.environ.get("FASTLSTM_NO_OPENMP"):
        return [], []
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cc = cc.split()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        exe = os.path.join(tmp, "probe")
        with open(src, "w") as fh:
            fh.write(OPENMP_PROBE)
        try:
            subprocess.run(cc + ["-fopenmp", src, "-o", exe], check=True, capture_output=True)
            out = subprocess.run([exe], check=True, capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError):
            out = ""
    if out.strip() != "1":
        warnings.warn("fastlstm: the compiler cannot build and run OpenMP code; "
                      "building the native core serially (one thread).")
        return [], []
    return ["-fopenmp"], ["-fopenmp"]


def extensions():
    from Cython.Build import cythonize

    omp_compile, omp_link = openmp_flags()
    # -ffp-contract=off: no multiply-add fused behind the code's back, so the portable, AVX2
    # and AVX-512 kernels round alike (csrc/fl_simd.c) whatever the compiler's default.
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
        sources=["fastlstm/_core.pyx"]
        + sorted("csrc/" + name for name in os.listdir("csrc") if name.endswith(".c")),
        include_dirs=["csrc", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=extra_compile,
        extra_link_args=extra_link,
    )
    return cythonize([ext], compiler_directives=directives)


setup(ext_modules=extensions())
