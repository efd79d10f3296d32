# The tree engine's point-major kernels (C in sparseadv/_src/sa_pointmajor.h): the forward
# pass over the pairs a tree query (or ``dense_fired_pairs``) reports, CSR over points (the
# engine's own passes are fused into the query: PartitionTree.forward_batch), and the weight
# gradient: pairs that all fire (``all_fired``) scattered straight into the rows' gradients
# (from a CSR, or from the pairs a tree kept in its buffers: ``_pm_weight_grad_kept``),
# others transposed to neuron-major (``csr_transpose``) and re-tested by ``nm_weight_grad``
# (_certified.pxi). Parallel over points; with neuron ids sorted within each point the
# forward's bits are those of ``nm_forward`` on the same pairs.
# Validation: shapes always; offsets and index ranges unless ``check=False``.
from cython.parallel cimport prange
cimport numpy as cnp
from libc.stdint cimport INT64_MAX

cdef extern from "sa_pointmajor.h":
    void sa_pm_fwd(const double* X, Py_ssize_t d, const double* W, const double* a, double b,
                   double scale, const cnp.int64_t* indptr, const cnp.int64_t* indices,
                   cnp.int64_t i0, cnp.int64_t i1, double* f, double* H, cnp.int64_t* fired,
                   cnp.int64_t* n_eval, cnp.int64_t* n_fired) noexcept nogil
    void sa_pm_wgrad_seg(const double* X, Py_ssize_t d, const double* a, const double* coef,
                         const cnp.int64_t* const* segp, const cnp.int64_t* segn,
                         cnp.int64_t n, cnp.int64_t r0, cnp.int64_t r1, double* G,
                         Py_ssize_t gs, cnp.uint8_t* mark) noexcept nogil
    cnp.int64_t sa_pm_count_marks(const cnp.uint8_t* mark, cnp.int64_t m) noexcept nogil
    void sa_pm_compact(double* G, Py_ssize_t gs, Py_ssize_t d, cnp.uint8_t* mark,
                       cnp.int64_t m, cnp.int64_t* rows, double* Gout) noexcept nogil
    void sa_pm_compact_pos(double* G, Py_ssize_t gs, Py_ssize_t d, cnp.uint8_t* mark,
                           cnp.int64_t m, const cnp.int64_t* pos, cnp.int64_t* rows,
                           double* Gout) noexcept nogil


def pm_forward(const double[:, ::1] X not None, const double[:, ::1] W not None,
               const double[::1] a not None, double b, double scale,
               const cnp.int64_t[::1] indptr not None, const cnp.int64_t[::1] indices not None,
               double[::1] f_out not None, double[:, ::1] H_out=None,
               cnp.int64_t[::1] fired_out=None, bint check=True):
    """Forward pass over point-major pairs (CSR over points: neurons of point i in
    indices[indptr[i]:indptr[i+1]]); same outputs as ``nm_forward`` (f, optional H, fired),
    overwritten. Parallel over points. With neuron ids sorted within each point, the results
    are bitwise those of ``nm_forward`` on the same pairs. Returns (inner products, fired)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], m = W.shape[0]
    cdef Py_ssize_t nb, j, per
    cdef double* Hp = NULL
    cdef cnp.int64_t* Fp = NULL
    cdef int code
    _shapes("pm_forward", ("W", 1, W.shape[1], d), ("a", 0, a.shape[0], m),
            ("indptr", 0, indptr.shape[0], n + 1), ("f_out", 0, f_out.shape[0], n))
    if H_out is not None:
        if H_out.shape[0] != n or H_out.shape[1] != d:
            raise InputError("pm_forward: H_out must have shape (n, d)")
        Hp = &H_out[0, 0]
    if fired_out is not None:
        if fired_out.shape[0] != n:
            raise InputError("pm_forward: fired_out must have length n")
        Fp = &fired_out[0]
    if check:
        with nogil:
            code = _check_pm_csr(indptr, indices, m)
        _raise_csr(code, "pm_forward", "indptr", "indices")
    if n == 0:
        return 0, 0
    per = 16
    nb = (n + per - 1) // per
    ev = np.zeros(nb, dtype=np.int64)
    nf = np.zeros(nb, dtype=np.int64)
    cdef cnp.int64_t[::1] evv = ev, nfv = nf
    cdef const cnp.int64_t* Ip = &indices[0] if indices.shape[0] > 0 else NULL
    with nogil:
        for j in prange(nb, schedule='dynamic'):
            sa_pm_fwd(&X[0, 0], d, &W[0, 0], &a[0], b, scale, &indptr[0], Ip, j * per,
                      (j + 1) * per if (j + 1) * per < n else n, &f_out[0], Hp, Fp,
                      &evv[j], &nfv[j])
    return int(ev.sum()), int(nf.sum())


def csr_transpose(const cnp.int64_t[::1] indptr not None, const cnp.int64_t[::1] indices not None,
                  ncols, bint check=True):
    """Point-major (indptr over n rows, neuron ids) -> neuron-major (cptr (ncols + 1) int64,
    cidx int32 point ids), by a stable counting sort: point ids increase within each neuron.
    ``check``: validate the offsets and that every neuron id is in [0, ncols) (a serial
    O(n + nnz) scan); pass False only for pairs known valid (e.g. a tree query's answer)."""
    cdef Py_ssize_t n = indptr.shape[0] - 1, nnz = indices.shape[0], i, r
    cdef cnp.int64_t k
    cdef int code = 0
    cdef Py_ssize_t nc = _int_arg("csr_transpose", "ncols", ncols, 0, 2 ** 62)
    if n < 0:
        raise InputError("csr_transpose: indptr must have at least one entry")
    check_allocation("ncols", (nc + 1) * 16 + nnz * 4, "the transposed offsets")
    if n >= 2 ** 31 - 1:
        raise InputError("csr_transpose: n must be < 2**31")
    if check:
        with nogil:
            code = _check_pm_csr(indptr, indices, nc)
        _raise_csr(code, "csr_transpose", "indptr", "indices")
    cptr = np.zeros(nc + 1, dtype=np.int64)
    cidx = np.empty(nnz, dtype=np.int32)
    cdef cnp.int64_t[::1] cp = cptr
    cdef cnp.int32_t[::1] ci = cidx
    cdef cnp.int64_t[::1] cur
    with nogil:
        for k in range(nnz):
            cp[indices[k] + 1] += 1
        for r in range(nc):
            cp[r + 1] += cp[r]
    cur = cptr[:nc].copy()
    with nogil:
        for i in range(n):
            for k in range(indptr[i], indptr[i + 1]):
                r = indices[k]
                ci[cur[r]] = <cnp.int32_t>i
                cur[r] += 1
    return cptr, cidx


def pm_weight_grad(const double[:, ::1] X not None, const double[:, ::1] W not None,
                   const double[::1] a not None, double b, const double[::1] coef not None,
                   const cnp.int64_t[::1] indptr not None, const cnp.int64_t[::1] indices not None,
                   bint check=True, bint all_fired=False, scratch=None, out=None):
    """Weight gradient over point-major pairs: transposes them to neuron-major (counting sort)
    and runs ``nm_weight_grad``. ``check`` is passed to ``csr_transpose`` (False skips the
    validation of the pairs: only for pairs known valid, e.g. a tree query's answer).
    ``all_fired``: every listed pair fires (the fired pairs of ``forward_batch`` at the same
    points), so none is re-evaluated: the pairs are scattered straight into the rows'
    gradients (``sa_pm_wgrad_seg``; at d = 3 rows of stride 4, ``sa_pm_wgrad_seg4_d``: the
    same bits) and the rows listed are gathered in increasing order. With ``all_fired``,
    ``scratch`` may hold the full-size buffers, kept by the caller between calls: a tuple
    (G (m, gs) float64 with gs = 4 at d = 3 and d otherwise, mark (m,) uint8), all zero,
    and left zero (no m x d allocation per call); ``out`` a float64 array with room for the
    gradient rows (G_rows is then a view of its head). Returns (rows, G_rows, inner
    products, fired pairs) with rows the sorted int64 ids of the neurons listed at least once
    (a superset of the neurons with a non-zero gradient) and G_rows[k] the gradient of
    neuron rows[k]."""
    cdef Py_ssize_t m = W.shape[0], d = X.shape[1]
    cdef int code = 0
    _shapes("pm_weight_grad", ("coef", 0, coef.shape[0], X.shape[0]),
            ("indptr", 0, indptr.shape[0], X.shape[0] + 1))
    if not all_fired:
        cptr, cidx = csr_transpose(indptr, indices, m, check)
        rows = np.flatnonzero(np.diff(cptr)).astype(np.int64)
        G = np.empty((rows.shape[0], X.shape[1]))
        ev, nf = nm_weight_grad(X, W, a, b, coef, cptr, cidx, rows, G, None, False)
        return rows, G, ev, nf
    _shapes("pm_weight_grad", ("W", 1, W.shape[1], d), ("a", 0, a.shape[0], m))
    if check:
        with nogil:
            code = _check_pm_csr(indptr, indices, m)
        _raise_csr(code, "pm_weight_grad", "indptr", "indices")
    cdef Py_ssize_t n = X.shape[0], i
    cdef const cnp.int64_t** segp = <const cnp.int64_t**>malloc((n + 1) * sizeof(void*))
    cdef cnp.int64_t* segn = <cnp.int64_t*>malloc((n + 1) * sizeof(cnp.int64_t))
    cdef const cnp.int64_t* Ip = &indices[0] if indices.shape[0] > 0 else NULL
    if segp == NULL or segn == NULL:
        free(segp); free(segn)
        raise MemoryError()
    for i in range(n):
        segp[i] = Ip + indptr[i] if Ip != NULL else NULL
        segn[i] = indptr[i + 1] - indptr[i]
    try:
        return _wgrad_all(X, &a[0], coef, segp, segn, m, scratch, out, indices.shape[0])
    finally:
        free(segp); free(segn)


cdef object _wgrad_all(const double[:, ::1] X, const double* a, const double[::1] coef,
                       const cnp.int64_t** segp, const cnp.int64_t* segn, Py_ssize_t m,
                       object scratch, object out, Py_ssize_t npairs,
                       const cnp.int64_t* pos=NULL):
    """The all_fired gradient over the pairs of each point i, neuron ids segp[i][0 ..
    segn[i]): scattered into a full-size gradient (``scratch`` or fresh zeros), T disjoint
    neuron ranges in parallel (each row's sum in the same order whatever T), then the rows
    listed gathered in increasing order (into ``out`` when it has room) and the scratch left
    zero. With ``pos``, the ids are tree positions (a too is in tree order): the gradient
    is gathered by original row r = 0 .. m - 1 from position pos[r]. Returns (rows, G_rows,
    0, npairs)."""
    cdef Py_ssize_t d = X.shape[1], gs = 4 if X.shape[1] == 3 else X.shape[1], nr
    if scratch is None:
        check_allocation("W", m * (gs * 8 + 1), "the gradient of every row")
        Gfull = np.zeros((m, gs))
        mark = np.zeros(m, dtype=np.uint8)
    else:
        Gfull, mark = scratch
        if not (isinstance(Gfull, np.ndarray) and Gfull.dtype == np.float64
                and Gfull.shape == (m, gs) and Gfull.flags.c_contiguous
                and isinstance(mark, np.ndarray) and mark.dtype == np.uint8
                and mark.shape == (m,) and mark.flags.c_contiguous):
            raise InputError(f"pm_weight_grad: scratch must be (G of shape ({m}, {gs}) "
                             f"float64, mark of shape ({m},) uint8), C-contiguous")
    cdef double[:, ::1] Gv = Gfull
    cdef cnp.uint8_t[::1] mv = mark
    cdef Py_ssize_t T = max(1, min(sa_omp_max_threads(), m)), t
    with nogil:
        if T == 1:
            sa_pm_wgrad_seg(&X[0, 0], d, a, &coef[0], segp, segn, X.shape[0], 0, INT64_MAX,
                            &Gv[0, 0], gs, &mv[0])
        else:
            for t in prange(T, schedule='static', num_threads=T):
                sa_pm_wgrad_seg(&X[0, 0], d, a, &coef[0], segp, segn, X.shape[0],
                                m * t // T, m * (t + 1) // T, &Gv[0, 0], gs, &mv[0])
        nr = sa_pm_count_marks(&mv[0], m)
    cdef cnp.int64_t[::1] rv
    cdef double[:, ::1] Go
    try:
        rows = np.empty(nr, dtype=np.int64)
        if (isinstance(out, np.ndarray) and out.dtype == np.float64 and out.ndim == 1
                and out.flags.c_contiguous and out.flags.writeable and out.shape[0] >= nr * d):
            G = out[:nr * d].reshape(nr, d)
        else:
            G = np.empty((nr, d))
        rv = rows
        Go = G
    except BaseException:
        Gfull.fill(0.0)             # the caller's scratch must be left zero
        mark.fill(0)
        raise
    if nr > 0:
        with nogil:
            if pos != NULL:
                sa_pm_compact_pos(&Gv[0, 0], gs, d, &mv[0], m, pos, &rv[0], &Go[0, 0])
            else:
                sa_pm_compact(&Gv[0, 0], gs, d, &mv[0], m, &rv[0], &Go[0, 0])
    return rows, G, 0, int(npairs)


def _pm_weight_grad_kept(_BallTree tree, const double[:, ::1] X not None,
                        const double[::1] a not None, const double[::1] coef not None,
                        scratch=None, out=None):
    """``pm_weight_grad(all_fired=True)`` over the pairs the tree kept from its last
    ``forward_batch(keep=...)`` (its per-thread buffers, not copied into a CSR; tree
    positions, so the scatter runs in tree order: every row's sum is the same, in the same
    order): the same rows and bits. X, coef: that batch's points and coefficients. Raises InputError when
    the tree holds no complete kept batch of len(X) points (another query since, an
    update)."""
    cdef Py_ssize_t n = X.shape[0], m = tree.m, i
    cdef const cnp.int64_t** segp
    cdef cnp.int64_t* segn
    cdef cnp.int64_t npairs = 0
    _shapes("_pm_weight_grad_kept", ("X", 1, X.shape[1], tree.d), ("a", 0, a.shape[0], m),
            ("coef", 0, coef.shape[0], n))
    if not tree._kept_ready(n):
        raise InputError("_pm_weight_grad_kept: the tree holds no kept pairs of these points")
    segp = <const cnp.int64_t**>malloc((n + 1) * sizeof(void*))
    segn = <cnp.int64_t*>malloc((n + 1) * sizeof(cnp.int64_t))
    if segp == NULL or segn == NULL:
        free(segp); free(segn)
        raise MemoryError()
    tree._kept_segments(segp, segn)
    for i in range(n):
        npairs += segn[i]
    # the kept ids are tree positions: scatter in tree order (each point's rows close
    # together in memory) with a in tree order, gather by original row at the end
    at_tmp = np.empty(m)
    cdef double[::1] atv = at_tmp
    cdef const cnp.int64_t[::1] posv = tree.pos_arr
    try:
        return _wgrad_all(X, tree._a_tree(&a[0], &atv[0]), coef, segp, segn, m, scratch, out,
                          npairs, &posv[0])
    finally:
        free(segp); free(segn)
