# The certified engine's neuron-major kernels (C in sparseadv/_src/sa_certified.h): forward,
# weight gradient and tracked forward over a sparse set of (point, neuron) pairs.
#
# Two layouts of a pair set (the second is the tree engine's, see _pointmajor.pxi):
#
# * NEURON-MAJOR ("candidates"): ``cptr`` (m + 1, int64) and ``cidx`` (int32 point ids), the
#   points of neuron r in cidx[cptr[r]:cptr[r+1]], sorted increasingly within each neuron.
#   This is the fast layout (docs/design.md §3): a weight row is loaded once and its points
#   are gathered from X, which stays in cache.
# * POINT-MAJOR: ``indptr`` (n + 1, int64) and ``indices`` (int64 neuron ids), the layout of
#   ``dense_fired_pairs`` and of a tree query; any order within a point.
#
# Every kernel evaluates z = <w_r, x_i> for every listed pair and only uses the pairs with
# z > b, so a superset of the fired pairs may be passed. They return the number of inner
# products evaluated and the number of pairs that fired. The exception is the tracked pass
# (``nm_track_forward``): over a list that stays fixed while the points move, it carries each
# pair's last score and decides most pairs by two-sided bounds, evaluating only the rest.
#
# Parallelism and determinism. The neuron-major forward kernel splits the POINTS into one
# contiguous block per thread and walks the neurons in chunks (a chunk of W, ~512 KB, is read
# from memory once and shared by the threads through the L3 cache); within its block a thread
# finds each neuron's sub-list by binary search. Every point therefore accumulates its
# contributions in increasing neuron order, whatever the thread count: results are bitwise
# independent of the number of threads (and of the blocking). The weight-gradient kernel is
# parallel over neurons (no collisions); each neuron sums its points in increasing order.
# The tracked pass splits points like the forward kernel and adds or removes a point's terms
# in increasing neuron order within a pass. No atomics.
#
# The inner loops are C with explicit 4-wide vector accumulators. With GCC or clang on x86,
# each kernel is instantiated twice, once with __attribute__((target("avx2,fma"))) and once
# for the baseline ISA, and a small wrapper dispatches on CPU features detected once at
# import (``sa_cpu_init``, sa_simd.h; manual dispatch, not target_clones): the package is
# built without -march=native. FMA contraction in the AVX2 build means the last bits can
# differ between CPUs (not between thread counts).
#
# Validation: shapes always; offsets, sortedness and index ranges unless ``check=False``
# (the engines' own CSR arrays).
from cython.parallel cimport prange
cimport numpy as cnp

cdef extern from "sa_certified.h":
    void sa_nm_fwd(const double* X, Py_ssize_t d, const double* W, const double* a, double b,
                   double scale, const cnp.int64_t* cptr, const cnp.int32_t* cidx,
                   cnp.int64_t r0, cnp.int64_t r1, cnp.int32_t lo, cnp.int32_t hi, double* f,
                   double* H, cnp.int64_t* fired, cnp.uint8_t* mask, const double* keep,
                   double* F0, double* zo, cnp.int64_t* n_eval,
                   cnp.int64_t* n_fired) noexcept nogil
    void sa_nm_wgrad(const double* X, Py_ssize_t d, const double* W, const double* a, double b,
                     const double* coef, const cnp.int64_t* cptr, const cnp.int32_t* cidx,
                     const cnp.uint8_t* mask, const cnp.int64_t* rows, cnp.int64_t k0,
                     cnp.int64_t k1, double* G, cnp.int64_t* n_eval,
                     cnp.int64_t* n_fired) noexcept nogil
    void sa_nm_track(const double* X, Py_ssize_t d, const double* W, const double* a, double b,
                     double scale, const cnp.int64_t* cptr, const cnp.int32_t* cidx,
                     cnp.int64_t r0, cnp.int64_t r1, cnp.int32_t lo, cnp.int32_t hi,
                     double* z_last, double* path_last, cnp.uint8_t* st, const double* mv,
                     double cap, const double* wd, const double* slack, double* H, double* F0,
                     cnp.int64_t* cnt, cnp.int32_t* sel, cnp.int64_t* n_eval,
                     cnp.int64_t* n_flip, double cap0) noexcept nogil
    void sa_nm_track_passes(const double* X, Py_ssize_t d, const double* W, const double* a,
                            double b, double scale, const cnp.int64_t* cptr,
                            const cnp.int32_t* cidx, cnp.int64_t r0, cnp.int64_t r1,
                            cnp.int32_t lo, cnp.int32_t hi, double* z_last,
                            cnp.uint8_t* pass_last, cnp.uint8_t* st, const double* hist,
                            cnp.int64_t hn, cnp.uint8_t pass_now, double cap, const double* wd,
                            const double* slack, double* H, double* F0, cnp.int64_t* cnt,
                            cnp.int32_t* sel, cnp.int64_t* n_eval,
                            cnp.int64_t* n_flip, double cap0) noexcept nogil


def nm_forward(const double[:, ::1] X not None, const double[:, ::1] W not None,
               const double[::1] a not None, double b, double scale,
               const cnp.int64_t[::1] cptr not None, const cnp.int32_t[::1] cidx not None,
               double[::1] f_out not None, double[:, ::1] H_out=None,
               cnp.int64_t[::1] fired_out=None, cnp.uint8_t[::1] mask_out=None, bint check=True,
               const double[::1] keep_thr=None, double[::1] F0_out=None, double[::1] z_out=None):
    """Forward pass over neuron-major candidate pairs (outputs overwritten):

    f_i = scale * sum_{r: i in cand(r), <w_r,x_i> > b} a_r (<w_r,x_i> - b),
    H_i = scale * sum_{same r} a_r w_r  (optional; grad_x loss_i = (f_i - y_i) H_i),
    fired_i = number of those r (optional), mask[k] bit 0 set iff pair k of cidx fired
    (optional); with ``keep_thr`` (per neuron), bit 1 of mask[k] is set iff <w_r, x_i> >
    keep_thr[r] (the pair survives into the next pass's candidate list, see
    ``compact_pairs``), under the precondition keep_thr[r] <= b (not checked): bit 1 is set
    for every fired pair whatever keep_thr[r]; F0_i = scale * sum_{same r} a_r (optional);
    z_out[k] = <w_r, x_i> for every pair (optional): with H, F0 and fired, the start state of
    ``nm_track_forward``.

    Candidate lists must be sorted within each neuron (checked when ``check``).
    Returns (inner products evaluated, fired pairs)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], m = W.shape[0]
    cdef Py_ssize_t nb, j, c0, c1, chunk
    cdef double* Hp = NULL
    cdef cnp.int64_t* Fp = NULL
    cdef cnp.uint8_t* Mp = NULL
    cdef double* Wp
    cdef double* Xp
    cdef int code
    if d < 1:
        raise InputError("nm_forward: X must have at least one column")
    _shapes("nm_forward", ("W", 1, W.shape[1], d), ("a", 0, a.shape[0], m),
            ("cptr", 0, cptr.shape[0], m + 1), ("f_out", 0, f_out.shape[0], n))
    if n >= 2 ** 31 - 1:
        raise InputError("nm_forward: n must be < 2**31")
    if H_out is not None:
        if H_out.shape[0] != n or H_out.shape[1] != d:
            raise InputError("nm_forward: H_out must have shape (n, d)")
        Hp = &H_out[0, 0]
    if fired_out is not None:
        if fired_out.shape[0] != n:
            raise InputError("nm_forward: fired_out must have length n")
        Fp = &fired_out[0]
    if mask_out is not None:
        if mask_out.shape[0] != cidx.shape[0]:
            raise InputError("nm_forward: mask_out must have the length of cidx")
        if mask_out.shape[0] > 0:
            Mp = &mask_out[0]
    cdef const double* Kp = NULL
    if keep_thr is not None:
        if keep_thr.shape[0] != m:
            raise InputError("nm_forward: keep_thr must have length m")
        if Mp == NULL and cidx.shape[0] > 0:
            raise InputError("nm_forward: keep_thr needs mask_out")
        if m > 0:
            Kp = &keep_thr[0]
    cdef double* F0p = NULL
    cdef double* Zp = NULL
    if F0_out is not None:
        if F0_out.shape[0] != n:
            raise InputError("nm_forward: F0_out must have length n")
        if n > 0:
            F0p = &F0_out[0]
            F0_out[:] = 0.0
    if z_out is not None:
        if z_out.shape[0] != cidx.shape[0]:
            raise InputError("nm_forward: z_out must have the length of cidx")
        if z_out.shape[0] > 0:
            Zp = &z_out[0]
    if check:
        with nogil:
            code = _check_nm_csr(cptr, cidx, n)
        _raise_csr(code, "nm_forward", "cptr", "cidx")
    f_out[:] = 0.0
    if Hp != NULL:
        H_out[:, :] = 0.0
    if Fp != NULL:
        fired_out[:] = 0
    if cidx.shape[0] == 0 or m == 0 or n == 0:
        return 0, 0
    bounds, counters = _point_blocks(n)
    cdef cnp.int64_t[::1] bd = bounds
    cdef cnp.int64_t[:, ::1] cnt = counters
    nb = bd.shape[0] - 1
    Wp = <double*>&W[0, 0]
    Xp = <double*>&X[0, 0]
    chunk = _neuron_chunk(d)
    # One parallel region per pass (a region per chunk of neurons cost ~30% with passive
    # OpenMP waits): each thread owns a point range and walks all neurons in chunks.
    with nogil:
        for j in prange(nb, schedule='static', num_threads=nb):
            c0 = 0
            while c0 < m:
                c1 = c0 + chunk if c0 + chunk < m else m
                sa_nm_fwd(Xp, d, Wp, &a[0], b, scale, &cptr[0], &cidx[0], c0, c1,
                          <cnp.int32_t>bd[j], <cnp.int32_t>bd[j + 1], &f_out[0], Hp, Fp,
                          Mp, Kp, F0p, Zp, &cnt[0, j], &cnt[1, j])
                c0 = c1
    return int(counters[0].sum()), int(counters[1].sum())


def nm_track_forward(const double[:, ::1] X not None, const double[:, ::1] W not None,
                     const double[::1] a not None, double b, double scale,
                     const cnp.int64_t[::1] cptr not None, const cnp.int32_t[::1] cidx not None,
                     double[::1] zref not None, double[::1] mref not None,
                     cnp.uint8_t[::1] state not None, const double[::1] path not None, double cap,
                     const double[::1] wd not None, const double[::1] slack not None,
                     double[:, ::1] H not None, double[::1] F0 not None,
                     cnp.int64_t[::1] fired not None, double[::1] f_out not None, bint check=True,
                     cap0=None):
    """One pass of a tracked forward over a candidate list that stays fixed while the points
    move. The state (all updated in place) is, per pair k of cidx: zref[k], the score when
    last evaluated, mref[k], the point's path length then, state[k] (1 = fired); per point:
    H (n x d, scale * sum of a_r w_r over its fired r), F0 (scale * sum of those a_r), fired
    (their number). ``path[i]``: path length of point i so far in the norm that ``wd``
    (per neuron) is dual to; ``cap``: bound on the distance between any two positions of a
    point (the diameter of its ball). Start state: ``nm_forward``'s z_out, H, F0, fired and
    mask bit 0 at the start points, with mref = path. A pair is evaluated only when
    zref[k] -+ min(path[i] - mref[k], cap) wd[r] does not clear b by slack[r]; a pair whose
    state flips updates H, F0, fired. Then f_out[i] = <H_i, x_i> - b F0_i (overwritten).
    ``cap0`` (default ``cap``): the bound for pairs whose reference path length is 0, i.e.
    last evaluated at the start points (the clean points, the centres of the balls: their
    radius). Lists must be sorted within each neuron (checked when ``check``). Returns
    (inner products: pairs evaluated + n for f, state flips)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], m = W.shape[0]
    cdef Py_ssize_t nb, j, c0, c1, chunk, i
    cdef Py_ssize_t nnz = cidx.shape[0]
    cdef double cp0 = _track_checks("nm_track_forward", X, W, a, cptr, cidx, zref, state, cap,
                                    cap0, wd, slack, H, F0, fired, f_out, check)
    _shapes("nm_track_forward", ("mref", 0, mref.shape[0], nnz), ("path", 0, path.shape[0], n))
    if n == 0:
        return 0, 0
    bounds, counters, scratch = _track_blocks(n)
    cdef cnp.int64_t[::1] bd = bounds
    cdef cnp.int64_t[:, ::1] cnt = counters
    nb = bd.shape[0] - 1
    cdef cnp.int32_t[:, ::1] sel = scratch
    cdef const cnp.int32_t* Cp = &cidx[0] if nnz > 0 else NULL
    cdef double* Zp = &zref[0] if nnz > 0 else NULL
    cdef double* Rp = &mref[0] if nnz > 0 else NULL
    cdef cnp.uint8_t* Sp = &state[0] if nnz > 0 else NULL
    chunk = _neuron_chunk(d)
    with nogil:
        for j in prange(nb, schedule='static', num_threads=nb):
            if nnz > 0:
                c0 = 0
                while c0 < m:
                    c1 = c0 + chunk if c0 + chunk < m else m
                    sa_nm_track(&X[0, 0], d, &W[0, 0], &a[0], b, scale, &cptr[0], Cp, c0, c1,
                                <cnp.int32_t>bd[j], <cnp.int32_t>bd[j + 1], Zp, Rp, Sp,
                                &path[0], cap, &wd[0], &slack[0], &H[0, 0], &F0[0],
                                &fired[0], &sel[j, 0], &cnt[0, j], &cnt[1, j], cp0)
                    c0 = c1
            for i in range(bd[j], bd[j + 1]):
                f_out[i] = sa_dot(&H[i, 0], &X[i, 0], d) - b * F0[i]
    return int(counters[0].sum()) + n, int(counters[1].sum())


def _track_checks(str what, const double[:, ::1] X, const double[:, ::1] W, const double[::1] a,
                  const cnp.int64_t[::1] cptr, const cnp.int32_t[::1] cidx,
                  const double[::1] zref, const cnp.uint8_t[::1] state, double cap, cap0,
                  const double[::1] wd, const double[::1] slack, const double[:, ::1] H,
                  const double[::1] F0, const cnp.int64_t[::1] fired,
                  const double[::1] f_out, bint check):
    """The checks both tracked passes share: shapes, n, cap, cap0, and the CSR when ``check``;
    returns cap0 (``cap`` when None)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], m = W.shape[0], nnz = cidx.shape[0]
    cdef int code
    if d < 1:
        raise InputError(f"{what}: X must have at least one column")
    _shapes(what, ("W", 1, W.shape[1], d), ("a", 0, a.shape[0], m),
            ("cptr", 0, cptr.shape[0], m + 1), ("f_out", 0, f_out.shape[0], n),
            ("zref", 0, zref.shape[0], nnz), ("state", 0, state.shape[0], nnz),
            ("wd", 0, wd.shape[0], m), ("slack", 0, slack.shape[0], m), ("H", 0, H.shape[0], n),
            ("H", 1, H.shape[1], d), ("F0", 0, F0.shape[0], n), ("fired", 0, fired.shape[0], n))
    if n >= 2 ** 31 - 1:
        raise InputError(f"{what}: n must be < 2**31")
    if not cap >= 0:
        raise InputError(f"{what}: cap must be >= 0")
    if cap0 is not None and (isinstance(cap0, bool) or not isinstance(
            cap0, (int, float, np.integer, np.floating))):
        raise InputTypeError(f"{what}: cap0 must be a real number or None, got "
                             f"{type(cap0).__name__}")
    cdef double c0 = cap if cap0 is None else float(cap0)
    if not c0 >= 0:
        raise InputError(f"{what}: cap0 must be >= 0")
    if check:
        with nogil:
            code = _check_nm_csr(cptr, cidx, n)
        _raise_csr(code, what, "cptr", "cidx")
    return c0


cdef tuple _track_blocks(Py_ssize_t n):
    """_point_blocks(n) and per-thread scratch for the offsets a tracked pass evaluates: a
    thread's part of a list has at most as many pairs as its point range has points."""
    bounds, counters = _point_blocks(n)
    nb = bounds.shape[0] - 1
    return bounds, counters, np.empty((nb, (n + nb - 1) // nb + 1), dtype=np.int32)


def nm_track_passes(const double[:, ::1] X not None, const double[:, ::1] W not None,
                    const double[::1] a not None, double b, double scale,
                    const cnp.int64_t[::1] cptr not None, const cnp.int32_t[::1] cidx not None,
                    double[::1] zref not None, cnp.uint8_t[::1] pass_ref not None,
                    cnp.uint8_t[::1] state not None, const double[:, ::1] hist not None,
                    pass_now, double cap, const double[::1] wd not None,
                    const double[::1] slack not None, double[:, ::1] H not None,
                    double[::1] F0 not None, cnp.int64_t[::1] fired not None,
                    double[::1] f_out not None, bint check=True, cap0=None):
    """``nm_track_forward`` with one byte per pair instead of ``mref``: pass_ref[k] is the
    pass in which pair k was last evaluated (0 .. pass_now), and hist[p, i] the path length of
    point i at pass p (hist[pass_now] is the current ``path``; at most 256 passes), so mref[k]
    = hist[pass_ref[k], i]. Evaluated pairs get pass_ref[k] = pass_now. Same decisions and
    bits as nm_track_forward with that mref. Start state: nm_forward's outputs with pass_ref
    = 0 and hist[0] = 0. ``check`` also validates every pass_ref[k] <= pass_now; ``cap0`` as
    there. Returns
    (inner products: pairs evaluated + n for f, state flips)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], m = W.shape[0]
    cdef Py_ssize_t nb, j, c0, c1, chunk, i, k
    cdef Py_ssize_t nnz = cidx.shape[0]
    cdef double cp0 = _track_checks("nm_track_passes", X, W, a, cptr, cidx, zref, state, cap,
                                    cap0, wd, slack, H, F0, fired, f_out, check)
    _shapes("nm_track_passes", ("pass_ref", 0, pass_ref.shape[0], nnz),
            ("hist", 1, hist.shape[1], n))
    cdef Py_ssize_t p = _int_arg("nm_track_passes", "pass_now", pass_now, 0,
                                 min(hist.shape[0], 256) - 1)
    cdef int bad = 0
    if check:
        with nogil:
            for k in range(nnz):
                if pass_ref[k] > p:
                    bad = 1
                    break
        if bad:
            raise InputError("nm_track_passes: every pass_ref must be at most pass_now")
    if n == 0:
        return 0, 0
    bounds, counters, scratch = _track_blocks(n)
    cdef cnp.int64_t[::1] bd = bounds
    cdef cnp.int64_t[:, ::1] cnt = counters
    nb = bd.shape[0] - 1
    cdef cnp.int32_t[:, ::1] sel = scratch
    cdef const cnp.int32_t* Cp = &cidx[0] if nnz > 0 else NULL
    cdef double* Zp = &zref[0] if nnz > 0 else NULL
    cdef cnp.uint8_t* Pp = &pass_ref[0] if nnz > 0 else NULL
    cdef cnp.uint8_t* Sp = &state[0] if nnz > 0 else NULL
    chunk = _neuron_chunk(d)
    with nogil:
        for j in prange(nb, schedule='static', num_threads=nb):
            if nnz > 0:
                c0 = 0
                while c0 < m:
                    c1 = c0 + chunk if c0 + chunk < m else m
                    sa_nm_track_passes(&X[0, 0], d, &W[0, 0], &a[0], b, scale, &cptr[0], Cp,
                                       c0, c1, <cnp.int32_t>bd[j], <cnp.int32_t>bd[j + 1], Zp,
                                       Pp, Sp, &hist[0, 0], n, <cnp.uint8_t>p, cap, &wd[0],
                                       &slack[0], &H[0, 0], &F0[0], &fired[0], &sel[j, 0],
                                       &cnt[0, j], &cnt[1, j], cp0)
                    c0 = c1
            for i in range(bd[j], bd[j + 1]):
                f_out[i] = sa_dot(&H[i, 0], &X[i, 0], d) - b * F0[i]
    return int(counters[0].sum()) + n, int(counters[1].sum())


def nm_weight_grad(const double[:, ::1] X not None, const double[:, ::1] W not None,
                   const double[::1] a not None, double b, const double[::1] coef not None,
                   const cnp.int64_t[::1] cptr not None, const cnp.int32_t[::1] cidx not None,
                   const cnp.int64_t[::1] rows not None, double[:, ::1] G_out not None,
                   const cnp.uint8_t[::1] mask=None, bint check=True):
    """G_out[k] = sum_{i in cand(rows[k]), fired} coef_i a_r x_i  (r = rows[k]; overwritten).

    Fired means bit 0 of mask[p] is set (mask[p] & 1) for the pair at position p of cidx when
    ``mask`` is given (as written by ``nm_forward`` at the same points; bit 1, the keep bit,
    is ignored), else <w_r, x_i> > b is evaluated.
    Parallel over rows, no collisions. Returns (inner products evaluated, fired pairs)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], m = W.shape[0], nr = rows.shape[0]
    cdef Py_ssize_t k, nb, j, per
    cdef const cnp.uint8_t* Mp = NULL
    cdef double* Gp
    cdef int code = 0
    _shapes("nm_weight_grad", ("W", 1, W.shape[1], d), ("a", 0, a.shape[0], m),
            ("cptr", 0, cptr.shape[0], m + 1), ("coef", 0, coef.shape[0], n))
    if G_out.shape[0] != nr or G_out.shape[1] != d:
        raise InputError("nm_weight_grad: G_out must have shape (len(rows), d)")
    if mask is not None:
        if mask.shape[0] != cidx.shape[0]:
            raise InputError("nm_weight_grad: mask must have the length of cidx")
        if mask.shape[0] > 0:
            Mp = &mask[0]
    if check:
        with nogil:
            code = _check_nm_csr(cptr, cidx, n)
            if code == 0 and not _rows_in_range(rows, m):
                code = 4
        if code == 4:
            raise InputError(f"nm_weight_grad: rows must be in [0, {m})")
        _raise_csr(code, "nm_weight_grad", "cptr", "cidx")
    if nr == 0:
        return 0, 0
    # blocks of rows: many more blocks than threads for load balance, fixed by nr only
    per = 256
    nb = (nr + per - 1) // per
    ev = np.zeros(nb, dtype=np.int64)
    nf = np.zeros(nb, dtype=np.int64)
    cdef cnp.int64_t[::1] evv = ev, nfv = nf
    Gp = &G_out[0, 0]
    cdef const cnp.int32_t* Cp = &cidx[0] if cidx.shape[0] > 0 else NULL
    with nogil:
        for j in prange(nb, schedule='dynamic'):
            sa_nm_wgrad(&X[0, 0], d, &W[0, 0], &a[0], b, &coef[0], &cptr[0], Cp, Mp,
                        &rows[0], j * per, (j + 1) * per if (j + 1) * per < nr else nr,
                        Gp, &evv[j], &nfv[j])
    return int(ev.sum()), int(nf.sum())
