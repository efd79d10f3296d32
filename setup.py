"""Build script: cythonizes sparseadv/_core.pyx (and the .pxi files it includes, whose C lives
in the headers under sparseadv/_src/, added to the include path and to the sdist).

Optimisation is always on. OpenMP is used when the compiler accepts -fopenmp (checked by
compiling a tiny program); without it the prange loops run serially and results are identical.
Set SPARSEADV_NO_OPENMP=1 to force a serial build.
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup


def _has_openmp():
    if os.environ.get("SPARSEADV_NO_OPENMP"):
        return False
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc.split()[0]) is None:
        return False
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as fh:
            fh.write("#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n")
        cmd = cc.split() + ["-fopenmp", src, "-o", os.path.join(tmp, "t")]
        return subprocess.call(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


openmp = _has_openmp() and sys.platform != "win32"
# -Wall: warnings on for our C (the headers in sparseadv/_src; CI compiles them standalone with
# -Werror, .ci/check_c_warnings.sh); the unused-function ones come from Cython's own code.
compile_args = ["-O3", "-fno-math-errno"]
if sys.platform != "win32":
    compile_args += ["-Wall", "-Wno-unused-function", "-Wno-psabi"]
link_args = []
if openmp:
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")

ext = Extension(
    "sparseadv._core",
    ["sparseadv/_core.pyx"],
    include_dirs=[numpy.get_include(), os.path.join("sparseadv", "_src")],
    depends=sorted(glob.glob(os.path.join("sparseadv", "_src", "*.h"))
                   + glob.glob(os.path.join("sparseadv", "*.pxi"))),
    extra_compile_args=compile_args,
    extra_link_args=link_args,
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

setup(
    ext_modules=cythonize(
        [ext],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
