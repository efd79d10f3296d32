# The weight step W[rows] -= lr * G_rows, in place.
from cython.parallel cimport prange
from libc.stdlib cimport calloc, free
cimport numpy as cnp
#
#
# numpy's fancy-indexed form gathers the rows, allocates lr * G and scatters back: three passes
# over m x d doubles (at large m, more than a certified attack step). Here it is one pass. The arithmetic is meant to be numpy's (t = lr * g rounded, then
# w - t), so that dense and sparse engines, which use this kernel for every row set, stay
# bitwise comparable. setup.py does not disable FMA contraction (no -ffp-contract=off); on
# x86-64 this loop is compiled for the baseline ISA (no -march flags), which has no FMA
# instruction, so the compiler cannot fuse the multiply and the subtract there. On targets
# whose baseline has FMA (e.g. aarch64, where GCC contracts by default) it may.

def _check_step(name, Py_ssize_t m, Py_ssize_t d, const cnp.int64_t[::1] rows,
                Py_ssize_t g0, Py_ssize_t g1):
    """G's shape and the rows' range, for both step kernels."""
    cdef Py_ssize_t nr = rows.shape[0]
    if g0 != nr or g1 != d:
        raise InputError(f"{name}: G must have shape ({nr}, {d}), got ({g0}, {g1})")
    if not _rows_in_range(rows, m):
        k = int(np.flatnonzero((np.asarray(rows) < 0) | (np.asarray(rows) >= m))[0])
        raise InputError(f"{name}: rows[{k}] = {rows[k]} is out of range for {m} rows")


def sub_scaled_rows(double[:, ::1] W not None, const cnp.int64_t[::1] rows not None,
                    const double[:, ::1] G not None, double lr, bint check=True):
    """W[rows[k]] -= lr * G[k] for every k; rows must be in range (always checked) and
    distinct (checked unless ``check=False``: two threads must not write one row)."""
    cdef Py_ssize_t k, j, r, m = W.shape[0], d = W.shape[1], nr = rows.shape[0]
    cdef double t
    cdef cnp.uint64_t* seen
    cdef Py_ssize_t dup = -1
    _check_step("sub_scaled_rows", m, d, rows, G.shape[0], G.shape[1])
    if check and nr > 1:
        seen = <cnp.uint64_t*>calloc((m + 63) // 64, sizeof(cnp.uint64_t))
        if seen == NULL:
            raise MemoryError()
        with nogil:
            for k in range(nr):
                r = rows[k]
                if seen[r >> 6] & ((<cnp.uint64_t>1) << (r & 63)):
                    dup = k
                    break
                seen[r >> 6] |= (<cnp.uint64_t>1) << (r & 63)
        free(seen)
        if dup >= 0:
            raise InputError(f"sub_scaled_rows: rows must be distinct (rows[{dup}] = "
                             f"{rows[dup]} repeats)")
    with nogil:
        for k in prange(nr, schedule='static'):
            r = rows[k]
            for j in range(d):
                t = lr * G[k, j]
                W[r, j] = W[r, j] - t



def swap_scaled_rows(double[:, ::1] W not None, const cnp.int64_t[::1] rows not None,
                     double[:, ::1] G not None, double lr, cnp.uint8_t[::1] done=None):
    """The step of ``sub_scaled_rows`` (same arithmetic, same bits) that leaves the previous
    rows in G: W[rows[k]], G[k] = W[rows[k]] - lr * G[k], W[rows[k]]. G then is the backup
    for undoing the step, at no extra memory (``ShiftedReLUNet.apply_step(consume=True)``).
    rows must be in range and sorted distinct (both checked). ``done[0]`` (if given) is set
    to 1 once the swap has run, so that a caller interrupted around the call knows whether
    G holds the previous rows or still the gradient."""
    cdef Py_ssize_t k, j, r, m = W.shape[0], d = W.shape[1], nr = rows.shape[0]
    cdef double t, old
    _check_step("swap_scaled_rows", m, d, rows, G.shape[0], G.shape[1])
    if nr > 1 and not np.all(np.diff(np.asarray(rows)) > 0):
        raise InputError("swap_scaled_rows: rows must be sorted distinct row ids")
    with nogil:
        for k in prange(nr, schedule='static'):
            r = rows[k]
            for j in range(d):
                t = lr * G[k, j]
                old = W[r, j]
                W[r, j] = old - t
                G[k, j] = old
        if done is not None and done.shape[0] > 0:
            done[0] = 1
