# Shared by every other include file of _core.pyx (which includes this one first): the C
# helpers declared from sparseadv/_src (OpenMP queries, CPU dispatch, the dot products), the
# growable index buffer, thread counts, and the validation of offsets, indices and size
# arguments that every wrapper runs unless called with check=False.
cimport numpy as cnp
from libc.stdlib cimport calloc, free, realloc

import numpy as np

from ._validation import check_allocation
from .errors import InputError, InputTypeError

cdef extern from "sa_omp.h":
    int sa_omp_max_threads() noexcept nogil
    int sa_omp_thread_num() noexcept nogil
    int SA_OPENMP

cdef extern from "sa_simd.h":
    int sa_cpu_init(int cap) noexcept nogil
    double sa_dot(const double* x, const double* y, Py_ssize_t d) noexcept nogil
    double sa_dot_seq(const double* w, const double* x, Py_ssize_t d) noexcept nogil
    double sa_norm_safe(const double* x, Py_ssize_t d) noexcept nogil


def _simd_cap():
    """The highest SIMD level the kernels may use, from the environment variable
    SPARSEADV_SIMD ("baseline", "avx2" or "avx512"; unset or empty: the best the CPU has).
    For tools that cannot run every instruction set, e.g. valgrind, which has no AVX-512."""
    import os
    levels = {"baseline": 0, "avx2": 1, "avx512": 2}
    text = os.environ.get("SPARSEADV_SIMD", "").strip().lower()
    if text and text not in levels:
        import warnings
        warnings.warn(f"SPARSEADV_SIMD={text!r} is not one of {sorted(levels)}; ignored",
                      RuntimeWarning)
    return levels.get(text, 2)


cdef int _SA_SIMD = sa_cpu_init(_simd_cap())


def active_kernels_simd():
    """'avx512' when the active-set kernels run their AVX-512 build, 'avx2+fma' for the AVX2
    build, else 'baseline' (the best the CPU supports, at most SPARSEADV_SIMD)."""
    return ("baseline", "avx2+fma", "avx512")[_SA_SIMD]


# ------------------------------------------------------------------------------------------
# growable int64 buffer (per-thread answer lists of the tree and the brute force)

ctypedef struct _IdxBuf:
    cnp.int64_t* a
    Py_ssize_t n
    Py_ssize_t cap


cdef inline int _buf_reserve(_IdxBuf* buf, Py_ssize_t extra) noexcept nogil:
    """Make room for ``extra`` more entries; 0 on success, -1 when out of memory."""
    cdef Py_ssize_t need = buf.n + extra
    cdef Py_ssize_t cap
    cdef void* tmp
    if need <= buf.cap:
        return 0
    cap = buf.cap * 2 if buf.cap > 0 else 256
    while cap < need:
        cap = cap * 2
    tmp = realloc(buf.a, cap * sizeof(cnp.int64_t))
    if tmp == NULL:
        return -1
    buf.a = <cnp.int64_t*>tmp
    buf.cap = cap
    return 0


# ------------------------------------------------------------------------------------------
# validation of integer arguments (Python level: a huge int must not raise OverflowError)

# Sizes handed to BLAS are C ints; every array dimension a kernel multiplies is kept below this.
cdef Py_ssize_t _INT_MAX = 2147483647


def _int_arg(str func, str name, value, lo, hi):
    """``value`` as a Python int in [lo, hi] (bool refused), else InputTypeError/InputError
    naming ``func``'s argument ``name``."""
    import numbers
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"{func}: {name} must be an integer, got {value!r}")
    value = int(value)
    if value < lo or value > hi:
        raise InputError(f"{func}: {name} must be in [{lo}, {hi}], got {value}")
    return value


def _shapes(str func, *checks):
    """``checks``: (argument name, axis, actual, expected) tuples; InputError naming the first
    argument whose size along ``axis`` is not the expected one."""
    for name, axis, actual, expected in checks:
        if actual != expected:
            raise InputError(f"{func}: inconsistent shapes: {name}.shape[{axis}] is {actual}, "
                             f"expected {expected}")


def _dims_fit(str func, **dims):
    """Every named dimension fits in a C int (BLAS sizes, int32 point ids)."""
    for name, v in dims.items():
        if v > _INT_MAX - 1:
            raise InputError(f"{func}: {name} = {v} is too large (must be < 2**31 - 1)")



# ------------------------------------------------------------------------------------------
# validation helpers (O(nnz) integer scans; the O(nnz d) kernels dominate)

cdef int _check_offsets(const cnp.int64_t[::1] ptr, Py_ssize_t nnz) noexcept nogil:
    """0 if ptr (at least one entry) starts at 0, never decreases and ends at nnz, else 1."""
    cdef Py_ssize_t m = ptr.shape[0] - 1, r
    if m < 0 or ptr[0] != 0 or ptr[m] != nnz:
        return 1
    for r in range(m):
        if ptr[r + 1] < ptr[r]:
            return 1
    return 0


cdef int _rows_in_range(const cnp.int64_t[::1] rows, Py_ssize_t m) noexcept nogil:
    """1 if every entry of rows is in [0, m), else 0."""
    cdef Py_ssize_t k
    for k in range(rows.shape[0]):
        if rows[k] < 0 or rows[k] >= m:
            return 0
    return 1


cdef int _check_nm_csr(const cnp.int64_t[::1] cptr, const cnp.int32_t[::1] cidx,
                       Py_ssize_t n) noexcept nogil:
    """0 if cptr is a valid offsets array over cidx and every row is strictly increasing within
    [0, n); 1 bad offsets, 2 index out of range, 3 unsorted row."""
    cdef Py_ssize_t m = cptr.shape[0] - 1, r
    cdef cnp.int64_t k
    if _check_offsets(cptr, cidx.shape[0]) != 0:
        return 1
    for r in range(m):
        for k in range(cptr[r], cptr[r + 1]):
            if cidx[k] < 0 or cidx[k] >= n:
                return 2
            if k > cptr[r] and cidx[k] <= cidx[k - 1]:
                return 3
    return 0


def _raise_csr(int code, str what, str ptr="the offsets", str idx="the indices"):
    """Raise InputError for a non-zero code of _check_nm_csr / _check_pm_csr (naming the
    offsets and indices arguments ``ptr`` and ``idx``)."""
    if code == 1:
        raise InputError(f"{what}: {ptr} (offsets) must start at 0, be non-decreasing and "
                         f"end at len({idx})")
    if code == 2:
        raise InputError(f"{what}: {idx} has an entry out of range")
    if code == 3:
        raise InputError(f"{what}: {idx} must be strictly increasing within each row")


cdef int _check_pm_csr(const cnp.int64_t[::1] indptr, const cnp.int64_t[::1] indices,
                       Py_ssize_t m) noexcept nogil:
    cdef cnp.int64_t k
    if _check_offsets(indptr, indices.shape[0]) != 0:
        return 1
    for k in range(indices.shape[0]):
        if indices[k] < 0 or indices[k] >= m:
            return 2
    return 0


cdef inline Py_ssize_t _nthreads() noexcept nogil:
    cdef int t = sa_omp_max_threads()
    return t if t > 0 else 1


cdef inline Py_ssize_t _neuron_chunk(Py_ssize_t d) noexcept nogil:
    """Neurons per chunk of the neuron-major passes: ~512 KB of W (65536 doubles), at least 64
    neurons, 128 when d >= 512. d >= 1 (checked by the callers)."""
    cdef Py_ssize_t chunk = 65536 // d if d < 512 else 128
    return chunk if chunk >= 64 else 64


cdef tuple _point_blocks(Py_ssize_t n):
    """One contiguous block of points per thread (at most n blocks, at least one): (bounds
    (nb + 1,) int64 with block j = [bounds[j], bounds[j + 1]), counters (2, nb) int64 zeros,
    one row per work counter)."""
    cdef Py_ssize_t nb = _nthreads()
    if nb > n:
        nb = n if n > 0 else 1
    return (np.arange(nb + 1, dtype=np.int64) * n) // nb, np.zeros((2, nb), dtype=np.int64)

