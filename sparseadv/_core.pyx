# cython: language_level=3
"""sparseadv._core: the compiled hot loops of sparseadv.

Everything that touches O(m*n*d) or O(pairs*d) numbers lives here; Python (network.py,
attacks.py, trainer.py, engines/) only validates, orchestrates and reports.

The module is split into include files, one concept each, each cimporting what it uses; the
C inner loops live in real headers under ``sparseadv/_src/`` (compiled with -Wall; every
header also compiles standalone with -Wall -Wextra -Werror, see .ci/check_c_warnings.sh):

* ``_common.pxi``     included first: the C helpers every file uses (``sa_omp.h`` OpenMP
                      queries, ``sa_simd.h`` CPU dispatch and dot products), the growable index
                      buffer, thread counts, and the validation of offsets, indices and size
                      arguments (every wrapper validates them unless called with check=False).
* ``_blas.pxi``       row-major wrappers around SciPy's Fortran BLAS
                      (``scipy.linalg.cython_blas``), callable without the GIL.
* ``_dense.pxi``      the blocked dense kernels: every neuron against every point, in tiles
                      small enough that the (points x neurons) temporaries stay in cache, all
                      products in dgemm; and the blocked brute-force half-space reporting
                      ``hsr_brute_csr`` (``dense_fired_pairs``). The baseline every sparse
                      engine is measured against.
* ``_tree.pxi``       the partition (ball) tree for half-space reporting over the weight rows
                      (the _BallTree class: build, restore, queries, updates);
  ``_tree_search.pxi`` its nogil routines: sort, leaf scan, traversal, node construction
                      (C helpers: ``sa_tree.h``, norms that neither under- nor overflow, the
                      node test).
* ``_pointmajor.pxi`` the tree engine's kernels over point-major pairs (``sa_pointmajor.h``):
                      forward, CSR transpose, weight gradient.
* ``_certified.pxi``  the certified engine's neuron-major kernels (``sa_certified.h``): forward,
                      weight gradient, the pass with the float32 screen and deadlines.
* ``_candidates.pxi`` the certified engine's candidate sets: anchoring, filtering,
                      row replacement, row norms and drifts.
* ``_step.pxi``       the in-place weight step W[rows] -= lr * G.

Conventions shared by all kernels: float64, C-contiguous row-major arrays, neuron r fires on x
iff <w_r, x> > b (strict), output scale 1/sqrt(m) folded in by the caller-provided ``scale``.
"""
cimport numpy as cnp

cnp.import_array()

include "_common.pxi"
include "_blas.pxi"
include "_dense.pxi"
include "_tree_search.pxi"
include "_tree.pxi"
include "_pointmajor.pxi"
include "_certified.pxi"
include "_candidates.pxi"
include "_step.pxi"


def openmp_enabled():
    """True when the extension was compiled with OpenMP."""
    return bool(SA_OPENMP)


def omp_max_threads():
    """Threads the OpenMP loops will use (1 without OpenMP)."""
    return sa_omp_max_threads()
