# cython: language_level=3
"""sparseadv._core: the compiled hot loops of sparseadv.

Everything that touches O(m*n*d) or O(pairs*d) numbers lives here; Python (network.py,
attacks.py, trainer.py, engines/) only validates, orchestrates and reports.

The module is split into include files, one concept each:

* ``_blas.pxi``   row-major wrappers around SciPy's Fortran BLAS (``scipy.linalg.cython_blas``),
                  callable without the GIL.
* ``_dense.pxi``  the blocked dense kernels: every neuron against every point, in tiles small
                  enough that the (points x neurons) temporaries stay in cache (a few MB), all
                  products in dgemm. This is the baseline every sparse engine is measured against.
* ``_tree.pxi``   the partition (ball) tree for half-space reporting over the weight rows, and
                  the blocked brute force ``hsr_brute_csr`` (``dense_fired_pairs`` in
                  ``_dense.pxi`` calls it).
* ``_step.pxi``   the in-place weight step W[rows] -= lr * G.
* ``_active.pxi`` the active-set kernels: forward, input gradient and weight gradient over a
                  sparse set of (point, neuron) pairs, and the certified candidate-set helpers.

Conventions shared by all kernels: float64, C-contiguous row-major arrays, neuron r fires on x
iff <w_r, x> > b (strict), output scale 1/sqrt(m) folded in by the caller-provided ``scale``.
"""
import numpy as np
cimport numpy as cnp
cimport cython
from cython.parallel cimport prange, parallel
from libc.math cimport sqrt, fabs
from libc.stdlib cimport malloc, free, realloc
from libc.string cimport memset, memcpy

cnp.import_array()

include "_blas.pxi"
include "_dense.pxi"
include "_tree.pxi"
include "_active.pxi"
include "_step.pxi"


def openmp_enabled():
    """True when the extension was compiled with OpenMP."""
    return bool(SA_OPENMP)


def omp_max_threads():
    """Threads the OpenMP loops will use (1 without OpenMP)."""
    return sa_omp_max_threads()
