# The certified engine's candidate sets (docs/design.md §3): anchoring (the candidate test
# S + budget * ||x|| > threshold over a dgemm score block, C in sparseadv/_src/sa_certified.h),
# filtering, row replacement in a neuron-major CSR, and the row norms and drifts the bounds
# need. Offsets, indices, row ids and the block size
# are validated (``check=False`` skips the O(nnz) scans on the engine's own arrays).
from cython.parallel cimport prange, parallel
from libc.math cimport sqrt, fabs, ldexp, ilogb
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memcpy, memmove
cimport numpy as cnp

cdef extern from "sa_certified.h":
    double sa_screen_row(const double* w, Py_ssize_t d, float* w32) noexcept nogil
    void sa_anchor_rows32(const float* S, cnp.int64_t n, const double* thr,
                          const double* budget, const double* xnorm, double h, cnp.int64_t k0,
                          cnp.int64_t k1, cnp.int64_t* cnt, cnp.int64_t* band,
                          cnp.int32_t* out) noexcept nogil
    void sa_anchor_rows(const double* S, cnp.int64_t n, const double* thr, const double* budget,
                        const double* xnorm, double h, cnp.int64_t k0, cnp.int64_t k1, int mode,
                        cnp.int64_t* cnt, cnp.int64_t* band, const cnp.int64_t* off,
                        cnp.int32_t* out) noexcept nogil


# Per-thread lists of kept point ids, shared by the float64 and float32 anchoring: each
# thread appends a block's lists to its own growing buffer and notes (thread, offset) per
# block in ``blk``; ``_join_lists`` then copies the blocks into place in row order.
cdef struct _ThreadLists:
    cnp.int32_t** buf
    Py_ssize_t* len
    Py_ssize_t* cap
    Py_ssize_t T


cdef int _lists_open(_ThreadLists* L, Py_ssize_t T) noexcept:
    L.T = T
    L.buf = <cnp.int32_t**>calloc(T, sizeof(cnp.int32_t*))
    L.len = <Py_ssize_t*>calloc(T, sizeof(Py_ssize_t))
    L.cap = <Py_ssize_t*>calloc(T, sizeof(Py_ssize_t))
    return L.buf != NULL and L.len != NULL and L.cap != NULL


cdef void _lists_close(_ThreadLists* L) noexcept:
    cdef Py_ssize_t j
    if L.buf != NULL:
        for j in range(L.T):
            free(L.buf[j])
    free(L.buf); free(L.len); free(L.cap)
    L.buf = NULL; L.len = NULL; L.cap = NULL


cdef int _lists_reserve(_ThreadLists* L, Py_ssize_t tid, Py_ssize_t need) noexcept nogil:
    """Room for ``need`` ids in thread tid's buffer (doubling); 0 when out of memory."""
    cdef Py_ssize_t cap
    cdef cnp.int32_t* grown
    if need <= L.cap[tid]:
        return 1
    cap = 2 * L.cap[tid] if L.cap[tid] > 0 else 4096
    while cap < need:
        cap = 2 * cap
    grown = <cnp.int32_t*>realloc(L.buf[tid], cap * sizeof(cnp.int32_t))
    if grown == NULL:
        return 0
    L.buf[tid] = grown
    L.cap[tid] = cap
    return 1


cdef tuple _join_lists(_ThreadLists* L, cnp.int64_t[::1] cnt, cnp.int64_t[:, ::1] blk,
                       Py_ssize_t nr, Py_ssize_t RB):
    """(ptr, idx): the blocks' lists (cnt[k] ids for row k) copied into place in row order."""
    cdef Py_ssize_t nblk = blk.shape[0], j, k0, k1
    ptr = np.zeros(nr + 1, dtype=np.int64)
    np.cumsum(cnt, out=ptr[1:])
    cdef cnp.int64_t[::1] pv = ptr
    idx = np.empty(pv[nr], dtype=np.int32)
    cdef cnp.int32_t[::1] iv = idx
    if pv[nr] > 0:
        with nogil:
            for j in prange(nblk, schedule='static'):
                k0 = j * RB
                k1 = k0 + RB if k0 + RB < nr else nr
                if pv[k1] > pv[k0]:
                    memcpy(&iv[pv[k0]], L.buf[blk[j, 0]] + blk[j, 1],
                           (pv[k1] - pv[k0]) * sizeof(cnp.int32_t))
    return ptr, idx


def _out_int32(out, Py_ssize_t size, Py_ssize_t need, str what):
    """The head of length ``size`` of a caller's int32 output buffer (which must hold at least
    ``need`` entries), or a new array when ``out`` is None; a callable ``out`` is called with
    ``need`` and must return such a buffer (sized once the result's size is known)."""
    if out is None:
        return np.empty(size, dtype=np.int32)
    if callable(out):
        out = out(need)
    if not isinstance(out, np.ndarray) or out.dtype != np.int32 or out.ndim != 1 \
            or not out.flags.c_contiguous or not out.flags.writeable:
        raise InputTypeError(f"{what}: out_idx must be a writeable contiguous 1-d int32 "
                             f"array, got {type(out).__name__}")
    if out.shape[0] < need:
        raise InputError(f"{what}: out_idx must have at least {need} entries, got "
                         f"{out.shape[0]}")
    return out[:size]


def anchor_candidates(const double[:, ::1] X not None, const double[:, ::1] Wa not None,
                      const cnp.int64_t[::1] rows not None, const double[::1] thr not None,
                      const double[::1] budget not None, const double[::1] xnorm not None,
                      double band_h=0.0, block=0, bint single=True):
    """Candidate lists of the neurons ``rows`` against all n points.

    Point i is a candidate of rows[k] iff S[k, i] + budget[k] * xnorm[i] > thr[k], with
    S = Wa[rows] X^T (xnorm[i] >= |x_i|_2). Parallel over blocks of ``block`` rows (default
    64): each thread computes its block's scores with gemm tiles of at most 2^18
    multiply-adds (so OpenBLAS runs them on the calling thread, as in the dense kernels: no
    pooled BLAS threads competing with the OpenMP ones), tests them and appends the kept point
    ids to its own buffer; the buffers are then copied into place. ``single`` (default): the
    scores in float32 (sgemm) with the float32 screen's bound folded into the test, so the
    lists are a superset of the float64 test's, larger only by the pairs within that bound
    (about 1e-5 relative) of the threshold; float64 (dgemm) when False or when a norm is not
    below 2^60. Returns (ptr (len(rows) + 1,) int64, idx int32 sorted within each row, band,
    inner products) where band counts the kept pairs with S + budget*xnorm - thr <= band_h
    (density estimate). ``block`` in [0, 2**20] (0: 64)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], nr = rows.shape[0]
    # RB: rows per block (one dgemm score block S of RB x n per thread); PT: points per dgemm
    # tile (RB * PT * d <= 2^18 multiply-adds); tbuf/tlen/tcap: per-thread kept-id buffers
    cdef Py_ssize_t RB, PT, nblk, T, j, k, k0, k1, kb, i0, ib, tid, need
    cdef Py_ssize_t blk_rows = _int_arg("anchor_candidates", "block", block, 0, 2 ** 20)
    cdef Py_ssize_t kb_max
    if d < 1:
        raise InputError("anchor_candidates: X must have at least one column")
    _dims_fit("anchor_candidates", d=d)
    _shapes("anchor_candidates", ("Wa", 1, Wa.shape[1], d), ("thr", 0, thr.shape[0], nr),
            ("budget", 0, budget.shape[0], nr), ("xnorm", 0, xnorm.shape[0], n))
    if n >= 2 ** 31 - 1:
        raise InputError("anchor_candidates: n must be < 2**31")
    if not _rows_in_range(rows, Wa.shape[0]):
        raise InputError("anchor_candidates: row out of range")
    if nr == 0 or n == 0:
        return np.zeros(nr + 1, dtype=np.int64), np.zeros(0, dtype=np.int32), 0, 0
    if single and d <= SA_SCREEN_MAXD and float(np.max(xnorm)) < 1.152921504606846976e18:
        out = _anchor_candidates32(X, Wa, rows, thr, budget, xnorm, band_h, blk_rows)
        if out is not None:             # None: a row's norm is not below 2^60
            return out
    RB = blk_rows if blk_rows > 0 else 64
    PT = (1 << 18) // (RB * d) if RB * d < (1 << 18) else 1
    if PT > n:
        PT = n
    nblk = (nr + RB - 1) // RB
    T = _nthreads()
    # a block never holds more than nr rows: the per-thread score buffers hold kb_max rows
    kb_max = RB if RB < nr else nr
    check_allocation("block", T * kb_max * (n + d + 1) * 8, "the per-thread score blocks")
    cnt_arr = np.zeros(nr, dtype=np.int64)
    band_arr = np.zeros(nr, dtype=np.int64)
    blk_arr = np.zeros((nblk, 2), dtype=np.int64)        # (thread, offset in its buffer)
    cdef cnp.int64_t[::1] cnt = cnt_arr, band = band_arr
    cdef cnp.int64_t[:, ::1] blk = blk_arr
    cdef _ThreadLists L
    cdef int failed = 0
    cdef int* failed_p = &failed
    cdef double* S
    cdef double* Wb
    cdef cnp.int64_t* offs
    if not _lists_open(&L, T):
        _lists_close(&L)
        raise MemoryError()
    with nogil, parallel(num_threads=T):
        S = <double*>malloc(kb_max * n * sizeof(double))
        Wb = <double*>malloc(kb_max * d * sizeof(double))
        offs = <cnp.int64_t*>malloc((kb_max + 1) * sizeof(cnp.int64_t))
        if S == NULL or Wb == NULL or offs == NULL:
            failed_p[0] = 1
        for j in prange(nblk, schedule='dynamic'):
            if S == NULL or Wb == NULL or offs == NULL or failed_p[0]:
                continue
            tid = sa_omp_thread_num()
            k0 = j * RB
            k1 = k0 + RB if k0 + RB < nr else nr
            kb = k1 - k0
            for k in range(kb):
                memcpy(Wb + k * d, &Wa[rows[k0 + k], 0], d * sizeof(double))
            i0 = 0
            while i0 < n:
                ib = PT if i0 + PT <= n else n - i0
                gemm_rm(b'N', b'T', <int>kb, <int>ib, <int>d, 1.0, Wb, <int>d, &X[i0, 0],
                        <int>d, 0.0, S + i0, <int>n)
                i0 = i0 + PT
            sa_anchor_rows(S, n, &thr[k0], &budget[k0], &xnorm[0], band_h, 0, kb, 0,
                           &cnt[k0], &band[k0], NULL, NULL)
            offs[0] = L.len[tid]
            for k in range(kb):
                offs[k + 1] = offs[k] + cnt[k0 + k]
            need = offs[kb]
            if not _lists_reserve(&L, tid, need):
                failed_p[0] = 1
                continue
            sa_anchor_rows(S, n, &thr[k0], &budget[k0], &xnorm[0], band_h, 0, kb, 1,
                           &cnt[k0], &band[k0], offs, L.buf[tid])
            blk[j, 0] = tid
            blk[j, 1] = L.len[tid]
            L.len[tid] = need
        free(S)
        free(Wb)
        free(offs)
    try:
        if failed:
            raise MemoryError()
        ptr, idx = _join_lists(&L, cnt, blk, nr, RB)
    finally:
        _lists_close(&L)
    return ptr, idx, int(band_arr.sum()), int(nr) * int(n)


def filter_candidates(const double[:, ::1] X not None, const double[:, ::1] Wa not None,
                      const cnp.int64_t[::1] rows not None, const double[::1] thr not None,
                      const double[::1] budget not None, const double[::1] xnorm not None,
                      const cnp.int64_t[::1] cptr not None, const cnp.int32_t[::1] cidx not None,
                      bint check=True):
    """Shrink the candidate lists of ``rows``: keep point i of row r = rows[k] iff
    <Wa_r, x_i> + budget[k] xnorm[i] > thr[k], testing only the current candidates of r (valid
    when the new threshold is not below the one the lists were built with). (cptr, cidx) must
    be a neuron-major CSR over the n points, sorted within each neuron (checked, O(len(cidx)),
    when ``check``). Returns (ptr (len(rows) + 1,), idx int32, inner products)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], nr = rows.shape[0], k, r
    cdef cnp.int64_t p, tot = 0
    cdef int code
    _shapes("filter_candidates", ("Wa", 1, Wa.shape[1], d), ("thr", 0, thr.shape[0], nr),
            ("budget", 0, budget.shape[0], nr), ("xnorm", 0, xnorm.shape[0], n))
    if cptr.shape[0] != Wa.shape[0] + 1:
        raise InputError("filter_candidates: cptr must have length m + 1")
    if not _rows_in_range(rows, Wa.shape[0]):
        raise InputError("filter_candidates: row out of range")
    if check:
        with nogil:
            code = _check_nm_csr(cptr, cidx, n)
        _raise_csr(code, "filter_candidates", "cptr", "cidx")
    src = np.zeros(nr + 1, dtype=np.int64)
    cdef cnp.int64_t[::1] sp = src
    for k in range(nr):
        r = rows[k]
        sp[k + 1] = sp[k] + (cptr[r + 1] - cptr[r])
    keep_arr = np.zeros(sp[nr], dtype=np.uint8)
    ptr = np.zeros(nr + 1, dtype=np.int64)
    cdef cnp.uint8_t[::1] keep = keep_arr
    cdef cnp.int64_t[::1] pv = ptr
    cdef cnp.int64_t c
    cdef double s
    if sp[nr] == 0:
        return ptr, np.zeros(0, dtype=np.int32), 0
    with nogil:
        for k in prange(nr, schedule='dynamic', chunksize=64):
            c = 0
            for p in range(cptr[rows[k]], cptr[rows[k] + 1]):
                s = sa_dot(&Wa[rows[k], 0], &X[cidx[p], 0], d)
                if s + budget[k] * xnorm[cidx[p]] > thr[k]:
                    keep[sp[k] + p - cptr[rows[k]]] = 1
                    c = c + 1
            pv[k + 1] = c
        for k in range(nr):
            pv[k + 1] += pv[k]
    idx = np.empty(pv[nr], dtype=np.int32)
    cdef cnp.int32_t[::1] iv = idx
    with nogil:
        for k in range(nr):
            r = rows[k]
            c = pv[k]
            for p in range(cptr[r], cptr[r + 1]):
                if keep[sp[k] + p - cptr[r]]:
                    iv[c] = cidx[p]
                    c = c + 1
    return ptr, idx, int(sp[nr])


def csr_replace_rows(const cnp.int64_t[::1] cptr not None, const cnp.int32_t[::1] cidx not None,
                     const cnp.int64_t[::1] rows not None, const cnp.int64_t[::1] new_ptr not None,
                     const cnp.int32_t[::1] new_idx not None, out_idx=None):
    """A new neuron-major CSR equal to (cptr, cidx) except that row rows[k] (rows sorted,
    distinct) holds new_idx[new_ptr[k]:new_ptr[k+1]]. Returns (cptr, cidx). ``out_idx``:
    optional int32 array, at least as long as the result and not overlapping the inputs, to
    write into (the returned indices are then a view of its head)."""
    cdef Py_ssize_t m = cptr.shape[0] - 1, nr = rows.shape[0], r, k
    cdef cnp.int64_t len_
    cdef int bad
    if new_ptr.shape[0] != nr + 1:
        raise InputError("csr_replace_rows: new_ptr must have length len(rows) + 1")
    with nogil:
        bad = _check_offsets(new_ptr, new_idx.shape[0])
    if bad:
        raise InputError("csr_replace_rows: new_ptr must start at 0, be non-decreasing and end "
                         "at len(new_idx)")
    with nogil:
        bad = _check_offsets(cptr, cidx.shape[0])
    if bad:
        raise InputError("csr_replace_rows: cptr must have at least one entry, start at 0, be "
                         "non-decreasing and end at len(cidx)")
    for k in range(nr):
        if rows[k] < 0 or rows[k] >= m or (k > 0 and rows[k] <= rows[k - 1]):
            raise InputError("csr_replace_rows: rows must be sorted, distinct and in range")
    out_ptr = np.empty(m + 1, dtype=np.int64)
    cdef cnp.int64_t[::1] op = out_ptr
    with nogil:
        op[0] = 0
        k = 0
        for r in range(m):
            if k < nr and rows[k] == r:
                len_ = new_ptr[k + 1] - new_ptr[k]
                k = k + 1
            else:
                len_ = cptr[r + 1] - cptr[r]
            op[r + 1] = op[r] + len_
    out_idx = _out_int32(out_idx, op[m], op[m], "csr_replace_rows")
    if op[m] == 0:
        return out_ptr, out_idx
    if np.may_share_memory(out_idx, np.asarray(cidx)) or np.may_share_memory(out_idx,
                                                                     np.asarray(new_idx)):
        raise InputError("csr_replace_rows: out_idx must not overlap cidx or new_idx")
    cdef cnp.int32_t[::1] oi = out_idx
    with nogil:
        k = 0
        r = 0
        while r < m:
            if k < nr and rows[k] == r:
                len_ = new_ptr[k + 1] - new_ptr[k]
                if len_ > 0:
                    memcpy(&oi[op[r]], &new_idx[new_ptr[k]], len_ * sizeof(cnp.int32_t))
                k = k + 1
                r = r + 1
            else:
                # copy the run of untouched rows [r, stop) in one memcpy
                len_ = r
                while r < m and not (k < nr and rows[k] == r):
                    r = r + 1
                if cptr[r] > cptr[len_]:
                    memcpy(&oi[op[len_]], &cidx[cptr[len_]],
                           (cptr[r] - cptr[len_]) * sizeof(cnp.int32_t))
    return out_ptr, out_idx


def row_drift(const double[:, ::1] W not None, const double[:, ::1] Wa not None,
              const cnp.int64_t[::1] rows not None, double[::1] out not None):
    """out[k] = ||W[rows[k]] - Wa[rows[k]]||_2."""
    cdef Py_ssize_t d = W.shape[1], nr = rows.shape[0], k, j
    cdef double s, t
    _shapes("row_drift", ("Wa", 0, Wa.shape[0], W.shape[0]), ("Wa", 1, Wa.shape[1], d),
            ("out", 0, out.shape[0], nr))
    if not _rows_in_range(rows, W.shape[0]):
        raise InputError("row_drift: row out of range")
    with nogil:
        for k in prange(nr, schedule='static'):
            s = 0.0
            for j in range(d):
                t = W[rows[k], j] - Wa[rows[k], j]
                s = s + t * t
            out[k] = sqrt(s)


def copy_rows_norms(const double[:, ::1] W not None, double[:, ::1] Wa not None,
                    const cnp.int64_t[::1] rows not None, double[::1] norm2 not None,
                    double[::1] norm1 not None):
    """Wa[r] = W[r] for r in rows, and norm2[r], norm1[r] = ||W[r]||_2, ||W[r]||_1."""
    cdef Py_ssize_t d = W.shape[1], nr = rows.shape[0], k, j, r
    cdef double s2, s1, t
    _shapes("copy_rows_norms", ("Wa", 0, Wa.shape[0], W.shape[0]), ("Wa", 1, Wa.shape[1], d),
            ("norm2", 0, norm2.shape[0], W.shape[0]), ("norm1", 0, norm1.shape[0], W.shape[0]))
    if not _rows_in_range(rows, W.shape[0]):
        raise InputError("copy_rows_norms: row out of range")
    with nogil:
        for k in prange(nr, schedule='static'):
            r = rows[k]
            s2 = 0.0
            s1 = 0.0
            for j in range(d):
                t = W[r, j]
                Wa[r, j] = t
                s2 = s2 + t * t
                s1 = s1 + fabs(t)
            norm2[r] = sqrt(s2)
            norm1[r] = s1


def row_norms(const double[:, ::1] W not None, double[::1] norm2 not None,
              double[::1] norm1 not None):
    """norm2[r], norm1[r] = ||W[r]||_2, ||W[r]||_1 for every row (no m x d temporary)."""
    cdef Py_ssize_t m = W.shape[0], d = W.shape[1], r, j
    cdef double s2, s1, t
    if norm2.shape[0] != m or norm1.shape[0] != m:
        raise InputError("row_norms: norm2 and norm1 must have length m")
    with nogil:
        for r in prange(m, schedule='static'):
            s2 = 0.0
            s1 = 0.0
            for j in range(d):
                t = W[r, j]
                s2 = s2 + t * t
                s1 = s1 + fabs(t)
            norm2[r] = sqrt(s2)
            norm1[r] = s1


# Anchors stored in float32 (half the memory of the m x d anchor): row r is kept as
# a32[r] = fl32(W[r] / s_r) with s_r a power of two (max |W[r] / s_r| < 1, so float32's range
# covers the row at any scale of W), and err[r] >= ||W[r] - s_r a32[r]||_2. Every use is an
# upper bound: the drift ||w - w°|| <= ||w - s a32|| + err (row_drift32), and an anchored
# score <w°, x> <= <s a32, x> + err ||x|| (the engine's shrink test). Both norms are of
# differences in units of s (so of order 2^-24 and less): one pass, no scaling needed.
cdef double _ERR_ABS = 1e-150      # in units of s_r: squares that underflowed (|u| < 1e-162)


cdef inline double _norm_up(double sumsq, Py_ssize_t d) noexcept nogil:
    """An upper bound on ||u||_2 from its computed sum of squares: the relative error of a
    recursive sum of d squares and a square root is below (d + 4) 2^-52, and each square
    that underflowed had |u_j| < 1e-162, so _ERR_ABS covers all of them together. The
    callers' u are in units of a row's power-of-two scale (entries of order one and less),
    so the sum does not overflow unless a row grew by ~1e150 (then the bound is inf:
    still an upper bound)."""
    return sqrt(sumsq) * (1.0 + (d + 4) * 2.3e-16) + _ERR_ABS


cdef double _diff_norm_scaled(const double* w, const float* a, double sc,
                              Py_ssize_t d) noexcept nogil:
    """||w / sc - a||_2 (rounded up) from scaled squares: for a row far from its anchor's
    scale, whose plain sum of squares overflowed."""
    cdef Py_ssize_t j
    cdef double big = 0.0, s = 0.0, t
    for j in range(d):
        t = fabs(w[j] / sc - <double>a[j])
        big = t if t > big else big
    if big == 0.0 or big > 1.7976931348623157e308:
        return big
    for j in range(d):
        t = (w[j] / sc - <double>a[j]) / big
        s = s + t * t
    return big * _norm_up(s, d)


def copy_rows_norms32(const double[:, ::1] W not None, float[:, ::1] Wa not None,
                      double[::1] scale not None, double[::1] err not None,
                      const cnp.int64_t[::1] rows not None, double[::1] norm2 not None,
                      double[::1] norm1 not None):
    """``copy_rows_norms`` into a float32 anchor: Wa[r] = fl32(W[r] / scale[r]) with
    scale[r] a power of two (max |W[r]| / scale[r] in [1, 2); 1 for a zero row), err[r] >=
    ||W[r] - scale[r] Wa[r]||_2 (rounded up), and norm2[r], norm1[r] as copy_rows_norms
    computes them (the same bits)."""
    cdef Py_ssize_t m = W.shape[0], d = W.shape[1], nr = rows.shape[0], k, j, r
    cdef double s2, s1, t, big, sc, su
    _shapes("copy_rows_norms32", ("Wa", 0, Wa.shape[0], m), ("Wa", 1, Wa.shape[1], d),
            ("scale", 0, scale.shape[0], m), ("err", 0, err.shape[0], m),
            ("norm2", 0, norm2.shape[0], m), ("norm1", 0, norm1.shape[0], m))
    if not _rows_in_range(rows, m):
        raise InputError("copy_rows_norms32: row out of range")
    with nogil:
        for k in prange(nr, schedule='static'):
            r = rows[k]
            s2 = 0.0
            s1 = 0.0
            big = 0.0
            for j in range(d):
                t = W[r, j]
                s2 = s2 + t * t
                s1 = s1 + fabs(t)
                if fabs(t) > big:
                    big = fabs(t)
            norm2[r] = sqrt(s2)
            norm1[r] = s1
            # |W[r] / sc| in [1, 2): a power of two, finite for every finite row
            sc = ldexp(1.0, ilogb(big)) if big > 0.0 else 1.0
            su = 0.0
            for j in range(d):
                Wa[r, j] = <float>(W[r, j] / sc)
                t = W[r, j] / sc - <double>Wa[r, j]
                su = su + t * t
            scale[r] = sc
            err[r] = sc * _norm_up(su, d)


def row_drift32(const double[:, ::1] W not None, const float[:, ::1] Wa not None,
                const double[::1] scale not None, const double[::1] err not None,
                const cnp.int64_t[::1] rows not None, double[::1] out not None,
                double[::1] norm2=None, double[::1] norm1=None):
    """out[k] >= ||W[r] - w°_r||_2 for r = rows[k], the anchor of ``copy_rows_norms32``:
    ||W[r] - scale[r] Wa[r]||_2 (rounded up) + err[r]. With ``norm2`` and ``norm1``
    (length m) also norm2[r], norm1[r] = ||W[r]||_2, ||W[r]||_1 of the same rows, with the
    bits of ``row_norms`` (the certified engine keeps the current rows' norms this way
    instead of a pass over all m rows per iteration)."""
    cdef Py_ssize_t m = W.shape[0], d = W.shape[1], nr = rows.shape[0], k, j, r
    cdef double s2, s1, t, su, inv
    _shapes("row_drift32", ("Wa", 0, Wa.shape[0], m), ("Wa", 1, Wa.shape[1], d),
            ("scale", 0, scale.shape[0], m), ("err", 0, err.shape[0], m),
            ("out", 0, out.shape[0], nr))
    if (norm2 is None) != (norm1 is None):
        raise InputError("row_drift32: norm2 and norm1 go together")
    if norm2 is not None:
        _shapes("row_drift32", ("norm2", 0, norm2.shape[0], m), ("norm1", 0, norm1.shape[0], m))
    if not _rows_in_range(rows, m):
        raise InputError("row_drift32: row out of range")
    cdef double* N2 = &norm2[0] if norm2 is not None and m > 0 else NULL
    cdef double* N1 = &norm1[0] if norm1 is not None and m > 0 else NULL
    with nogil:
        for k in prange(nr, schedule='static'):
            r = rows[k]
            # t / s and t * (1 / s) are the same correctly rounded value for a power of two s
            # whose inverse is finite (every s >= 2^-1023); below it, divide
            inv = 1.0 / scale[r]
            s2 = 0.0
            s1 = 0.0
            su = 0.0
            for j in range(d):
                t = W[r, j]
                s2 = s2 + t * t
                s1 = s1 + fabs(t)
                t = (t * inv if inv <= 1.7976931348623157e308 else t / scale[r]) \
                    - <double>Wa[r, j]
                su = su + t * t
            if su <= 1e300:
                out[k] = scale[r] * _norm_up(su, d) + err[r]
            else:                       # overflowed (or NaN): the scaled computation
                out[k] = scale[r] * _diff_norm_scaled(&W[r, 0], &Wa[r, 0], scale[r], d) \
                    + err[r]
            if N2 != NULL:
                N2[r] = sqrt(s2)
                N1[r] = s1


def _anchor_candidates32(const double[:, ::1] X, const double[:, ::1] Wa,
                         const cnp.int64_t[::1] rows, const double[::1] thr,
                         const double[::1] budget, const double[::1] xnorm, double band_h,
                         Py_ssize_t blk_rows):
    """anchor_candidates with float32 scores (validated by it): S32 = fl32(Wa[rows])
    fl32(X)^T by sgemm, and |S32 - S| <= e_k (|x_i|_2 + 2^-50) with e_k = c_d (|w_k|_2 +
    2^-50) (the float32 screen's bound, sa_simd.h), folded into the test as
    budget[k] + e_k and thr[k] - e_k 2^-50. None when a row's norm is not below 2^60."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], nr = rows.shape[0]
    cdef Py_ssize_t RB, PT, nblk, T, j, k, k0, k1, kb, i0, ib, tid, i, q
    cdef double e, cE = sa_screen_c(d), tiny = 8.8817841970012523e-16
    RB = blk_rows if blk_rows > 0 else 64
    PT = (1 << 18) // (RB * d) if RB * d < (1 << 18) else 1
    if PT > n:
        PT = n
    nblk = (nr + RB - 1) // RB
    T = _nthreads()
    cdef Py_ssize_t kb_max = RB if RB < nr else nr
    check_allocation("block", T * kb_max * (n + d + 4) * 4, "the per-thread score blocks")
    x32_a = np.empty((n, d), dtype=np.float32)
    cdef float[:, ::1] x32 = x32_a
    with nogil:
        for i in range(n):
            for q in range(d):
                x32[i, q] = <float>X[i, q]
    cnt_arr = np.zeros(nr, dtype=np.int64)
    band_arr = np.zeros(nr, dtype=np.int64)
    blk_arr = np.zeros((nblk, 2), dtype=np.int64)
    cdef cnp.int64_t[::1] cnt = cnt_arr, band = band_arr
    cdef cnp.int64_t[:, ::1] blk = blk_arr
    cdef _ThreadLists L
    cdef int failed = 0, too_big = 0
    cdef int* failed_p = &failed
    cdef int* big_p = &too_big
    cdef float* S
    cdef float* Wb
    cdef double* adj
    if not _lists_open(&L, T):
        _lists_close(&L)
        raise MemoryError()
    with nogil, parallel(num_threads=T):
        S = <float*>malloc(kb_max * n * sizeof(float))
        Wb = <float*>malloc(kb_max * d * sizeof(float))
        adj = <double*>malloc(2 * kb_max * sizeof(double))
        if S == NULL or Wb == NULL or adj == NULL:
            failed_p[0] = 1
        for j in prange(nblk, schedule='dynamic'):
            if S == NULL or Wb == NULL or adj == NULL or failed_p[0] or big_p[0]:
                continue
            tid = sa_omp_thread_num()
            k0 = j * RB
            k1 = k0 + RB if k0 + RB < nr else nr
            kb = k1 - k0
            for k in range(kb):
                # the row in float32 and its factor c_d (|w|_2 + 2^-50) (inf past 2^60)
                e = sa_screen_row(&Wa[rows[k0 + k], 0], d, Wb + k * d)
                if not e < 1.7976931348623157e308:
                    big_p[0] = 1
                adj[k] = budget[k0 + k] + e                 # budget + e_k
                adj[kb_max + k] = thr[k0 + k] - e * tiny    # thr - e_k 2^-50
            if big_p[0]:
                continue
            i0 = 0
            while i0 < n:
                ib = PT if i0 + PT <= n else n - i0
                sgemm_rm(b'N', b'T', <int>kb, <int>ib, <int>d, 1.0, Wb, <int>d,
                         &x32[i0, 0], <int>d, 0.0, S + i0, <int>n)
                i0 = i0 + PT
            # room for every point of every row (the lists are written in one pass)
            if not _lists_reserve(&L, tid, L.len[tid] + kb * n):
                failed_p[0] = 1
                continue
            sa_anchor_rows32(S, n, adj + kb_max, adj, &xnorm[0], band_h, 0, kb, &cnt[k0],
                             &band[k0], L.buf[tid] + L.len[tid])
            blk[j, 0] = tid
            blk[j, 1] = L.len[tid]
            for k in range(kb):
                L.len[tid] = L.len[tid] + cnt[k0 + k]
        free(S)
        free(Wb)
        free(adj)
    try:
        if failed:
            raise MemoryError()
        if too_big:
            return None
        ptr, idx = _join_lists(&L, cnt, blk, nr, RB)
    finally:
        _lists_close(&L)
    return ptr, idx, int(band_arr.sum()), int(nr) * int(n)
