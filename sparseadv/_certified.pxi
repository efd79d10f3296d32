# The certified engine's neuron-major kernels (C in sparseadv/_src/sa_certified.h): the pass
# (nm_pass, deciding pairs with the float32 screen where it can), the weight gradient,
# and the plain float64 forward (nm_forward, the oracle's).
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
# nm_forward evaluates every listed pair in float64 and uses the pairs with z > b, so a
# superset of the fired pairs may be passed. nm_pass decides the pairs (the float32 screen,
# float64 where it cannot tell), keeps a state byte per pair and, between the passes of an
# iteration, float32 deadlines that let it skip the pairs that cannot have changed.
#
# Parallelism and determinism. nm_forward splits the POINTS into one contiguous block per
# thread and walks the neurons in chunks (a chunk of W, ~512 KB, is read from memory once and
# shared by the threads through the L3 cache); within its block a thread finds each neuron's
# sub-list by binary search. nm_pass decides in parallel over chunks of neurons and then sums
# in parallel over blocks of points, reading the threads' records in thread (= neuron) order.
# Either way every point accumulates its contributions in increasing neuron order, whatever the thread count:
# results are bitwise independent of the number of threads (and of the blocking). The
# weight-gradient kernel is parallel over neurons (no collisions); each neuron sums its points
# in increasing order. No atomics.
#
# The inner loops are C with explicit vector types. With GCC or clang on x86, each kernel is
# instantiated three times (AVX-512, AVX2+FMA, baseline) and a small wrapper dispatches on CPU
# features detected once at import (``sa_cpu_init``, sa_simd.h; capped by SPARSEADV_SIMD):
# the package is built without -march=native. AVX2 and AVX-512 give the same bits; the
# baseline build has no FMA, so its last bits differ.
#
# Validation: shapes always; offsets, sortedness and index ranges unless ``check=False``
# (the engines' own CSR arrays).
from cython.parallel cimport prange
from libc.math cimport sqrt, nextafterf, INFINITY
from libc.stdlib cimport calloc, free
cimport numpy as cnp

cdef extern from "sa_certified.h":
    void sa_nm_fwd(const double* X, Py_ssize_t d, const double* W, const double* a, double b,
                   double scale, const cnp.int64_t* cptr, const cnp.int32_t* cidx,
                   cnp.int64_t r0, cnp.int64_t r1, cnp.int32_t lo, cnp.int32_t hi, double* f,
                   double* H, cnp.int64_t* fired, cnp.uint8_t* mask, cnp.int64_t* n_eval,
                   cnp.int64_t* n_fired) noexcept nogil
    void sa_nm_wgrad(const double* X, Py_ssize_t d, const double* W, const double* a, double b,
                     const double* coef, const cnp.int64_t* cptr, const cnp.int32_t* cidx,
                     const cnp.uint8_t* mask, const cnp.int64_t* rows, cnp.int64_t k0,
                     cnp.int64_t k1, double* G, cnp.int64_t* n_eval,
                     cnp.int64_t* n_fired) noexcept nogil
    ctypedef struct sa_pass_args:
        const double* X
        const float* x32
        double xmax
        const double* W
        const double* a
        double b
        double scale
        const cnp.int64_t* cptr
        const cnp.int32_t* cidx
        cnp.uint8_t* st
        int screen
        int fresh
        int kept_only
        const double* keep
        float* dl
        double clock
        float clock_up
        const double* wd
        const double* slack
        double cap
        double* H
        double* F0
        cnp.int64_t* cnt
    ctypedef struct sa_recs:
        cnp.int64_t* v
        cnp.int64_t n
        cnp.int64_t cap
        int owned
    void sa_nm_pass(const sa_pass_args* A, Py_ssize_t d, cnp.int64_t r0, cnp.int64_t r1,
                    cnp.int32_t* sel, float* w32, float* zs, sa_recs* out,
                    cnp.int64_t nblk, const cnp.int32_t* block,
                    cnp.int64_t* n_eval, cnp.int64_t* n_exact, cnp.int64_t* n_flip,
                    cnp.int64_t* n_kept, int* failed) noexcept nogil
    void sa_pass_sums_k(const sa_pass_args* A, Py_ssize_t d, const sa_recs* bufs,
                        cnp.int64_t nt, cnp.int64_t stride) noexcept nogil
    double sa_screen_c(Py_ssize_t d) noexcept nogil
    int SA_SCREEN_MAXD

def nm_forward(const double[:, ::1] X not None, const double[:, ::1] W not None,
               const double[::1] a not None, double b, double scale,
               const cnp.int64_t[::1] cptr not None, const cnp.int32_t[::1] cidx not None,
               double[::1] f_out not None, double[:, ::1] H_out=None,
               cnp.int64_t[::1] fired_out=None, cnp.uint8_t[::1] mask_out=None, bint check=True):
    """Forward pass over neuron-major candidate pairs, every listed pair evaluated in float64
    (outputs overwritten; the oracle's kernel, ``analysis.oracle``):

    f_i = scale * sum_{r: i in cand(r), <w_r,x_i> > b} a_r (<w_r,x_i> - b),
    H_i = scale * sum_{same r} a_r w_r  (optional; grad_x loss_i = (f_i - y_i) H_i),
    fired_i = number of those r (optional), mask[k] = 1 iff pair k of cidx fired, else 0
    (optional).

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
                          Mp, &cnt[0, j], &cnt[1, j])
                c0 = c1
    return int(counters[0].sum()), int(counters[1].sum())


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


#: Widths from which the certified passes decide pairs with the float32 screen by default:
#: below them a float64 inner product costs about as little as the screen's float32 one.
SCREEN_MIN_D = 16


cdef object _screen_points(const double[:, ::1] X):
    """(x32, xmax) for the float32 screen: X rounded to float32 (rows 64-byte aligned when d
    is a multiple of 16) and max_i |x_i|_2 + 2^-50, or +inf when a norm is not below 2^60
    (then no pair is decided in float32)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], i, j
    cdef double s, top = 0.0
    raw = np.empty(n * d + 16, dtype=np.float32)
    off = (-raw.ctypes.data // 4) % 16
    x32 = raw[off:off + n * d].reshape(n, d)
    cdef float[:, ::1] xv = x32
    with nogil:
        for i in range(n):
            s = 0.0
            for j in range(d):
                s = s + X[i, j] * X[i, j]
                xv[i, j] = <float>X[i, j]
            s = sqrt(s)
            if not s < 1.152921504606846976e18:
                top = INFINITY
            elif s > top:
                top = s
    return x32, top + 8.8817841970012523e-16


def nm_pass(const double[:, ::1] X not None, const double[:, ::1] W not None,
            const double[::1] a not None, double b, double scale,
            const cnp.int64_t[::1] cptr not None, const cnp.int32_t[::1] cidx not None,
            cnp.uint8_t[::1] state not None, double[:, ::1] H not None, double[::1] F0 not None,
            cnp.int64_t[::1] fired not None, double[::1] f_out not None, bint fresh,
            bint kept_only=False, const double[::1] keep_thr=None, screen=None,
            float[::1] deadline=None, double clock=0.0, const double[::1] dual_norm=None,
            const double[::1] slack=None, double cap=0.0, cnp.int64_t[::1] records=None,
            bint check=True):
    """One pass of the certified engine over neuron-major pairs (docs/design.md §3; the C
    comment above ``sa_pass_args`` in sa_certified.h states the contract in full).

    Every listed pair (with ``kept_only``, every pair whose state has bit 1 set) is a
    candidate; an evaluated pair gets its fired state <w_r, x_i> > b (the score of the
    canonical float64 dot product) in bit 0 of state[k], decided by the float32 screen where
    it can and in float64 where it cannot; with ``keep_thr`` (per neuron, keep_thr[r] <= b,
    not checked) bit 1 is set to <w_r, x_i> > keep_thr[r] the same way, else left as it is.

    ``fresh``: every candidate is evaluated, and H, F0, fired are overwritten with the sums
    over the fired pairs, H_i = scale sum a_r w_r, F0_i = scale sum a_r, fired_i their
    number; else they are the state of the previous pass over the same pairs (with bit 0 of
    ``state``) and only the pairs whose fired state flips add or remove their terms. Then
    f_out[i] = <H_i, x_i> - b F0_i.

    ``deadline`` (float32 per pair) with ``dual_norm``, ``slack`` (per neuron), ``cap`` and
    ``clock`` (the sum of the largest steps of the passes so far): every evaluated pair gets
    the clock below which its state cannot change (+inf for the pairs a fresh pass with
    ``keep_thr`` does not keep), and a pass that is not ``fresh`` evaluates only the pairs
    whose deadline the clock has reached. ``screen``: None (the float32 screen from d =
    SCREEN_MIN_D), True or False. ``records``: int64 memory the
    pass may use for the changes it hands from its decisions to its sums (about one entry per
    fired pair of a fresh pass, per flip of a tracked one; more goes to the heap): reusing it
    from pass to pass saves the page faults of fresh memory. Lists must be sorted within
    each neuron (checked when ``check``). Returns (pairs evaluated, pairs the screen left to
    float64, state flips, evaluated pairs with bit 1 set after a fresh pass)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], m = W.shape[0], nnz = cidx.shape[0]
    cdef Py_ssize_t nb, j, c0, c1, chunk, i
    cdef int code
    cdef sa_pass_args A
    if d < 1:
        raise InputError("nm_pass: X must have at least one column")
    _shapes("nm_pass", ("W", 1, W.shape[1], d), ("a", 0, a.shape[0], m),
            ("cptr", 0, cptr.shape[0], m + 1), ("state", 0, state.shape[0], nnz),
            ("H", 0, H.shape[0], n), ("H", 1, H.shape[1], d), ("F0", 0, F0.shape[0], n),
            ("fired", 0, fired.shape[0], n), ("f_out", 0, f_out.shape[0], n))
    if n >= 2 ** 31 - 1 or m >= 2 ** 30:
        raise InputError("nm_pass: n must be < 2**31 and m < 2**30")
    A.keep = NULL
    if keep_thr is not None:
        _shapes("nm_pass", ("keep_thr", 0, keep_thr.shape[0], m))
        if m > 0:
            A.keep = &keep_thr[0]
    if screen is None:
        use32 = SCREEN_MIN_D <= d <= SA_SCREEN_MAXD
    elif isinstance(screen, (bool, np.bool_)):
        use32 = bool(screen) and d <= SA_SCREEN_MAXD
    else:
        raise InputTypeError(f"nm_pass: screen must be None, True or False, got {screen!r}")
    A.dl = NULL
    A.wd = NULL
    A.slack = NULL
    if deadline is not None:
        if dual_norm is None or slack is None:
            raise InputError("nm_pass: deadline needs dual_norm and slack")
        _shapes("nm_pass", ("deadline", 0, deadline.shape[0], nnz),
                ("dual_norm", 0, dual_norm.shape[0], m), ("slack", 0, slack.shape[0], m))
        if not cap >= 0:
            raise InputError("nm_pass: cap must be >= 0")
        if not 0 <= clock < INFINITY:
            raise InputError("nm_pass: clock must be finite and >= 0")
        if nnz > 0:
            A.dl = &deadline[0]
            A.wd = &dual_norm[0]
            A.slack = &slack[0]
    A.clock = clock
    A.clock_up = <float>clock
    if A.clock_up < clock:
        A.clock_up = nextafterf(A.clock_up, INFINITY)
    if check:
        with nogil:
            code = _check_nm_csr(cptr, cidx, n)
        _raise_csr(code, "nm_pass", "cptr", "cidx")
    if fresh:
        H[:, :] = 0.0
        F0[:] = 0.0
        fired[:] = 0
    if n == 0:
        return 0, 0, 0, 0
    x32_a, xmax = _screen_points(X) if use32 else (None, INFINITY)
    cdef const float[:, ::1] x32v
    A.X = &X[0, 0]
    A.x32 = NULL
    if use32:
        x32v = x32_a
        A.x32 = &x32v[0, 0]
    A.xmax = xmax
    A.W = &W[0, 0] if m > 0 else NULL
    A.a = &a[0] if m > 0 else NULL
    A.b = b
    A.scale = scale
    A.cptr = &cptr[0]
    A.cidx = &cidx[0] if nnz > 0 else NULL
    A.st = &state[0] if nnz > 0 else NULL
    A.screen = use32
    A.fresh = fresh
    A.kept_only = kept_only
    A.cap = cap
    A.H = &H[0, 0]
    A.F0 = &F0[0]
    A.cnt = &fired[0]
    # decisions: chunks of neurons over the threads (each neuron's list by one thread);
    # sums: one block of points per thread, from every thread's records for it
    bounds, _ = _point_blocks(n)
    cdef cnp.int64_t[::1] bd = bounds
    nb = bd.shape[0] - 1
    cdef Py_ssize_t T = nb, tid, nchunk
    blk_a = np.empty(n, dtype=np.int32)
    for j in range(nb):
        blk_a[bd[j]:bd[j + 1]] = j
    cdef const cnp.int32_t[::1] blk = blk_a
    cnt4 = np.zeros((4, T), dtype=np.int64)
    cdef cnp.int64_t[:, ::1] cnt = cnt4
    # the longest list sizes the per-thread scratch (a scan, not an m-sized temporary)
    cdef cnp.int64_t longest = 0
    with nogil:
        for i in range(m):
            if cptr[i + 1] - cptr[i] > longest:
                longest = cptr[i + 1] - cptr[i]
    sel_a = np.empty((T, longest + 1), dtype=np.int32)
    cdef cnp.int32_t[:, ::1] sel = sel_a
    w32_a = np.empty((T, d + 16), dtype=np.float32)
    cdef float[:, ::1] w32 = w32_a
    zs_a = np.empty((T, longest + 8), dtype=np.float32)
    cdef float[:, ::1] zs = zs_a
    cdef sa_recs* recs = <sa_recs*>calloc(T * nb, sizeof(sa_recs))
    if recs == NULL:
        raise MemoryError()
    cdef Py_ssize_t slot = records.shape[0] // (T * nb) if records is not None else 0
    if slot > 0:
        for j in range(T * nb):
            recs[j].v = &records[j * slot]
            recs[j].cap = slot
    cdef int failed = 0
    chunk = _neuron_chunk(d) // 4 if _neuron_chunk(d) >= 256 else 64
    nchunk = (m + chunk - 1) // chunk
    try:
        with nogil:
            if nnz > 0:
                # static: each thread a contiguous range of chunks, in thread order, so the
                # sums read the threads' records one after the other in neuron order
                for j in prange(nchunk, schedule='static', num_threads=T):
                    tid = sa_omp_thread_num()
                    c0 = j * chunk
                    c1 = c0 + chunk if c0 + chunk < m else m
                    sa_nm_pass(&A, d, c0, c1, &sel[tid, 0], &w32[tid, 0], &zs[tid, 0],
                               recs + tid * nb, nb, &blk[0], &cnt[0, tid], &cnt[1, tid],
                               &cnt[2, tid], &cnt[3, tid], &failed)
            if not failed:
                for j in prange(nb, schedule='static', num_threads=nb):
                    sa_pass_sums_k(&A, d, recs + j, T, nb)
                    for i in range(bd[j], bd[j + 1]):
                        f_out[i] = sa_dot(&H[i, 0], &X[i, 0], d) - b * F0[i]
    finally:
        for j in range(T * nb):
            if recs[j].owned:
                free(recs[j].v)
        free(recs)
    if failed:
        raise MemoryError("nm_pass: out of memory for the pass's records")
    return tuple(int(v) for v in cnt4.sum(axis=1))
