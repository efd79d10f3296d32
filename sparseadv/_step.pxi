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

def sub_scaled_rows(double[:, ::1] W not None, const cnp.int64_t[::1] rows not None,
                    const double[:, ::1] G not None, double lr, bint check=True):
    """W[rows[k]] -= lr * G[k] for every k; rows must be in range (always checked) and
    distinct (checked unless ``check=False``: two threads must not write one row)."""
    cdef Py_ssize_t k, j, r, m = W.shape[0], d = W.shape[1], nr = rows.shape[0]
    cdef double t
    cdef cnp.uint64_t* seen
    cdef Py_ssize_t dup = -1
    if G.shape[0] != nr or G.shape[1] != d:
        raise InputError(f"sub_scaled_rows: G must have shape ({nr}, {d}), got "
                         f"({G.shape[0]}, {G.shape[1]})")
    if not _rows_in_range(rows, m):
        k = int(np.flatnonzero((np.asarray(rows) < 0) | (np.asarray(rows) >= m))[0])
        raise InputError(f"sub_scaled_rows: rows[{k}] = {rows[k]} is out of range for {m} rows")
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

