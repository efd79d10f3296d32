# The weight step W[rows] -= lr * G_rows, in place.
from cython.parallel cimport prange
from libc.math cimport fabs, NAN
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
                Py_ssize_t g0, Py_ssize_t g1, gmax):
    """G's shape, the rows' range and the optional ``gmax`` output, for both step kernels;
    returns the per-block maxima buffer (blocks of _STEP_BLOCK rows) when gmax is given."""
    cdef Py_ssize_t nr = rows.shape[0]
    if g0 != nr or g1 != d:
        raise InputError(f"{name}: G must have shape ({nr}, {d}), got ({g0}, {g1})")
    if not _rows_in_range(rows, m):
        k = int(np.flatnonzero((np.asarray(rows) < 0) | (np.asarray(rows) >= m))[0])
        raise InputError(f"{name}: rows[{k}] = {rows[k]} is out of range for {m} rows")
    if gmax is None:
        return None
    if not isinstance(gmax, np.ndarray) or gmax.dtype != np.float64 or gmax.ndim != 1 \
            or gmax.shape[0] < 1 or not gmax.flags.writeable:
        raise InputTypeError(f"{name}: gmax must be a writeable float64 array of length >= 1")
    return np.zeros((nr + _STEP_BLOCK - 1) // _STEP_BLOCK + 1)


# rows per block of the steps' max |G| (per-block maxima, then their max: no shared state)
cdef Py_ssize_t _STEP_BLOCK = 512


cdef double _step_block(double* W, Py_ssize_t d, const cnp.int64_t* rows, const double* G,
                        double* Gout, double lr, Py_ssize_t k0, Py_ssize_t k1) noexcept nogil:
    """The step of rows k0..k1-1 (G row k at G + k d; with Gout, the previous rows are
    written there: the swap); returns max |G| over them, NaN when G has a NaN there."""
    cdef Py_ssize_t k, j
    cdef double* w
    cdef double t, old, v, mx = 0.0
    cdef int nan = 0
    for k in range(k0, k1):
        w = W + rows[k] * d
        for j in range(d):
            v = G[k * d + j]
            t = lr * v
            old = w[j]
            w[j] = old - t
            if Gout != NULL:
                Gout[k * d + j] = old
            v = fabs(v)
            nan = nan | (v != v)
            mx = v if v > mx else mx
    return NAN if nan else mx


def _step_peak(peaks, gmax):
    """gmax[0] = the largest block maximum (NaN if any block saw a NaN)."""
    if peaks is not None:
        gmax[0] = np.nan if np.isnan(peaks).any() else float(peaks.max())


def sub_scaled_rows(double[:, ::1] W not None, const cnp.int64_t[::1] rows not None,
                    const double[:, ::1] G not None, double lr, bint check=True, gmax=None):
    """W[rows[k]] -= lr * G[k] for every k; rows must be in range (always checked) and
    distinct (checked unless ``check=False``: two threads must not write one row).
    ``gmax`` (a float64 array): gmax[0] is set to max |G| (NaN when G holds a NaN), measured
    in the same pass."""
    cdef Py_ssize_t k, j, r, m = W.shape[0], d = W.shape[1], nr = rows.shape[0]
    cdef double t
    cdef cnp.uint64_t* seen
    cdef Py_ssize_t dup = -1
    peaks = _check_step("sub_scaled_rows", m, d, rows, G.shape[0], G.shape[1], gmax)
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
    cdef Py_ssize_t nb = (nr + _STEP_BLOCK - 1) // _STEP_BLOCK, b
    cdef double[::1] pk = peaks if peaks is not None else np.zeros(nb + 1)
    if nr == 0:
        _step_peak(peaks, gmax)
        return
    with nogil:
        for b in prange(nb, schedule='static'):
            pk[b] = _step_block(&W[0, 0], d, &rows[0], &G[0, 0], NULL, lr, b * _STEP_BLOCK,
                                min((b + 1) * _STEP_BLOCK, nr))
    _step_peak(peaks, gmax)


def swap_scaled_rows(double[:, ::1] W not None, const cnp.int64_t[::1] rows not None,
                     double[:, ::1] G not None, double lr, cnp.uint8_t[::1] done=None,
                     gmax=None):
    """The step of ``sub_scaled_rows`` (same arithmetic, same bits) that leaves the previous
    rows in G: W[rows[k]], G[k] = W[rows[k]] - lr * G[k], W[rows[k]]. G then is the backup
    for undoing the step, at no extra memory (``ShiftedReLUNet.apply_step(consume=True)``).
    rows must be in range and sorted distinct (both checked). ``done[0]`` (if given) is set
    to 1 once the swap has run, so that a caller interrupted around the call knows whether
    G holds the previous rows or still the gradient. ``gmax`` as in ``sub_scaled_rows``."""
    cdef Py_ssize_t m = W.shape[0], d = W.shape[1], nr = rows.shape[0]
    peaks = _check_step("swap_scaled_rows", m, d, rows, G.shape[0], G.shape[1], gmax)
    if nr > 1 and not np.all(np.diff(np.asarray(rows)) > 0):
        raise InputError("swap_scaled_rows: rows must be sorted distinct row ids")
    cdef Py_ssize_t nb = (nr + _STEP_BLOCK - 1) // _STEP_BLOCK, b
    cdef double[::1] pk = peaks if peaks is not None else np.zeros(nb + 1)
    with nogil:
        if nr > 0:
            for b in prange(nb, schedule='static'):
                pk[b] = _step_block(&W[0, 0], d, &rows[0], &G[0, 0], &G[0, 0], lr,
                                    b * _STEP_BLOCK, min((b + 1) * _STEP_BLOCK, nr))
        if done is not None and done.shape[0] > 0:
            done[0] = 1
    _step_peak(peaks, gmax)
