# The weight step W[rows] -= lr * G_rows, in place.
#
# numpy's fancy-indexed form gathers the rows, allocates lr * G and scatters back: three passes
# over m x d doubles (0.2 s per iteration at m = 2^18, d = 64, more than a certified attack
# step). Here it is one pass. The arithmetic is meant to be numpy's (t = lr * g rounded, then
# w - t), so that dense and sparse engines, which use this kernel for every row set, stay
# bitwise comparable. setup.py does not disable FMA contraction (no -ffp-contract=off); on
# x86-64 this loop is compiled for the baseline ISA (no -march flags), which has no FMA
# instruction, so the compiler cannot fuse the multiply and the subtract there. On targets
# whose baseline has FMA (e.g. aarch64, where GCC contracts by default) it may.

def sub_scaled_rows(double[:, ::1] W, const cnp.int64_t[::1] rows, const double[:, ::1] G,
                    double lr):
    """W[rows[k]] -= lr * G[k] for every k; rows must be in range (checked) and distinct."""
    cdef Py_ssize_t k, j, r, m = W.shape[0], d = W.shape[1], nr = rows.shape[0]
    cdef double t
    if G.shape[0] != nr or G.shape[1] != d:
        raise ValueError(f"G must have shape ({nr}, {d}), got ({G.shape[0]}, {G.shape[1]})")
    if not _rows_in_range(rows, m):
        k = int(np.flatnonzero((np.asarray(rows) < 0) | (np.asarray(rows) >= m))[0])
        raise ValueError(f"rows[{k}] = {rows[k]} is out of range for {m} rows")
    with nogil:
        for k in prange(nr, schedule='static'):
            r = rows[k]
            for j in range(d):
                t = lr * G[k, j]
                W[r, j] = W[r, j] - t

