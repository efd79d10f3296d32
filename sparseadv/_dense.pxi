# Blocked dense kernels: every neuron against every point.
#
# The (points x neurons) score matrix Z = X W^T is never formed whole. It is produced tile by
# tile, each tile by one dgemm, and consumed at once: the shifted ReLU and the firing mask are
# applied in a tight loop and the mask tile is fed to a second dgemm (input gradient or weight
# gradient). Cost per pass: 2*m*n*d flops for Z plus 2*m*n*d for the gradient product, all in
# BLAS.
#
# Parallelism: OpenMP over tiles that each thread owns (point tiles for the forward pass, so
# f and H rows are private to one thread; neuron tiles for the weight gradient, so G rows are),
# with each tile's dgemm small enough (m*n*k <= 2^18, ``volume``) that OpenBLAS runs it on the
# calling thread. This keeps OpenBLAS's own thread pool out of the way: alternating a pooled
# dgemm with an OpenMP region made passes up to 10x slower on 2 busy cores, because each side's
# idle threads spin on the cores the other needs. Every output element is accumulated by one
# thread in a fixed order, so results do not depend on the thread count.
#
# Blocked brute force (``hsr_brute_csr``, below): prange over tiles of queries; each thread
# takes a tile of queries through all rows, one ``gemm_rm`` per (queries x rows) tile into its
# own buffer, thresholded at once, hits appended to the per-query buffers of its own queries,
# then merged into CSR. Tiles stay below OpenBLAS's multithreading threshold so every dgemm
# runs on the calling thread (see _GEMM_SERIAL_MAX). It is BruteForceHSR's kernel, the
# partition tree's high-d fallback and ``dense_fired_pairs``.
from cython.parallel cimport prange, parallel
from libc.math cimport fabs
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset, memcpy
cimport numpy as cnp

DEF _PTILE = 64          # points per tile

cdef inline Py_ssize_t _neuron_tile(Py_ssize_t d, Py_ssize_t m, Py_ssize_t volume) noexcept nogil:
    cdef Py_ssize_t v = volume if volume > 0 else 262144
    cdef Py_ssize_t rb = v // (_PTILE * d)
    if rb < 16:
        rb = 16
    if rb > m:
        rb = m
    return rb


def dense_forward(const double[:, ::1] X not None, const double[:, ::1] W not None,
                  const double[::1] a not None, double b, double scale, double[::1] f_out not None,
                  double[:, ::1] H_out=None, cnp.int64_t[::1] fired_out=None, volume=262144):
    """f_i = scale * sum_r a_r relu(<w_r, x_i> - b); optionally
    H_i = scale * sum_r a_r 1[<w_r, x_i> > b] w_r (so that grad_x loss_i = (f_i - y_i) H_i)
    and fired_i = #{r : <w_r, x_i> > b}. Outputs are overwritten. ``volume``: the largest
    m*n*k of one tile's dgemm, in [0, 2**62] (0: 262144). Returns m*n (inner products)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], m = W.shape[0]
    cdef Py_ssize_t rb, ntiles, t, i0, r0, ib, crb, i, r
    cdef bint want_h = H_out is not None, want_fired = fired_out is not None
    cdef double z, acc
    cdef cnp.int64_t cnt
    cdef double* Z
    cdef double* M
    cdef int failed = 0
    cdef int* failed_p = &failed
    cdef Py_ssize_t vol = _int_arg("dense_forward", "volume", volume, 0, 2 ** 62)
    if d < 1:
        raise InputError("dense_forward: X must have at least one column")
    _dims_fit("dense_forward", m=m, d=d)
    _shapes("dense_forward", ("W", 1, W.shape[1], d), ("a", 0, a.shape[0], m),
            ("f_out", 0, f_out.shape[0], n))
    if want_h and (H_out.shape[0] != n or H_out.shape[1] != d):
        raise InputError("dense_forward: H_out must have shape (n, d)")
    if want_fired and fired_out.shape[0] != n:
        raise InputError("dense_forward: fired_out must have length n")
    if n == 0 or m == 0:
        f_out[:] = 0.0
        if want_h:
            H_out[:, :] = 0.0
        if want_fired:
            fired_out[:] = 0
        return 0
    rb = _neuron_tile(d, m, vol)
    ntiles = (n + _PTILE - 1) // _PTILE
    with nogil, parallel():
        Z = <double*>malloc(_PTILE * rb * sizeof(double))
        M = <double*>malloc(_PTILE * rb * sizeof(double))
        if Z == NULL or M == NULL:
            failed_p[0] = 1
        for t in prange(ntiles, schedule='dynamic'):
            if Z == NULL or M == NULL:
                continue
            i0 = t * _PTILE
            ib = _PTILE if i0 + _PTILE <= n else n - i0
            for i in range(ib):
                f_out[i0 + i] = 0.0
                if want_fired:
                    fired_out[i0 + i] = 0
            if want_h:
                memset(&H_out[i0, 0], 0, ib * d * sizeof(double))
            r0 = 0
            while r0 < m:
                crb = rb if r0 + rb <= m else m - r0
                gemm_rm(b'N', b'T', <int>ib, <int>crb, <int>d, 1.0, &X[i0, 0], <int>d,
                        &W[r0, 0], <int>d, 0.0, Z, <int>crb)
                for i in range(ib):
                    acc = 0.0
                    cnt = 0
                    for r in range(crb):
                        z = Z[i * crb + r]
                        if z > b:
                            acc = acc + a[r0 + r] * (z - b)
                            cnt = cnt + 1
                            M[i * crb + r] = scale * a[r0 + r]
                        else:
                            M[i * crb + r] = 0.0
                    f_out[i0 + i] += scale * acc
                    if want_fired:
                        fired_out[i0 + i] += cnt
                if want_h:
                    gemm_rm(b'N', b'N', <int>ib, <int>d, <int>crb, 1.0, M, <int>crb,
                            &W[r0, 0], <int>d, 1.0, &H_out[i0, 0], <int>d)
                r0 = r0 + rb
        free(Z)
        free(M)
    if failed:
        raise MemoryError()
    return n * m


def dense_weight_grad(const double[:, ::1] X not None, const double[:, ::1] W not None,
                      const double[::1] a not None, double b, const double[::1] coef not None,
                      double[:, ::1] G_out not None, volume=262144):
    """G_r = sum_i coef_i * a_r * 1[<w_r, x_i> > b] * x_i for every neuron r (overwrites G_out).

    With coef_i = (f_i - y_i) / (n sqrt(m)) this is the gradient of the training loss in W.
    Returns m*n (inner products evaluated)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], m = W.shape[0]
    cdef Py_ssize_t rb, ntiles, t, i0, r0, ib, crb, i, r
    cdef double* Z
    cdef double* D
    cdef double c
    cdef int failed = 0
    cdef int* failed_p = &failed
    cdef Py_ssize_t vol = _int_arg("dense_weight_grad", "volume", volume, 0, 2 ** 62)
    if d < 1:
        raise InputError("dense_weight_grad: X must have at least one column")
    _dims_fit("dense_weight_grad", m=m, d=d)
    _shapes("dense_weight_grad", ("W", 1, W.shape[1], d), ("a", 0, a.shape[0], m),
            ("coef", 0, coef.shape[0], n))
    if G_out.shape[0] != m or G_out.shape[1] != d:
        raise InputError("dense_weight_grad: G_out must have shape (m, d)")
    if m == 0:
        return 0
    G_out[:, :] = 0.0
    if n == 0:
        return 0
    rb = _neuron_tile(d, m, vol)
    ntiles = (m + rb - 1) // rb
    with nogil, parallel():
        Z = <double*>malloc(_PTILE * rb * sizeof(double))
        D = <double*>malloc(_PTILE * rb * sizeof(double))
        if Z == NULL or D == NULL:
            failed_p[0] = 1
        for t in prange(ntiles, schedule='dynamic'):
            if Z == NULL or D == NULL:
                continue
            r0 = t * rb
            crb = rb if r0 + rb <= m else m - r0
            i0 = 0
            while i0 < n:
                ib = _PTILE if i0 + _PTILE <= n else n - i0
                gemm_rm(b'N', b'T', <int>ib, <int>crb, <int>d, 1.0, &X[i0, 0], <int>d,
                        &W[r0, 0], <int>d, 0.0, Z, <int>crb)
                for i in range(ib):
                    c = coef[i0 + i]
                    for r in range(crb):
                        if Z[i * crb + r] > b:
                            D[i * crb + r] = c * a[r0 + r]
                        else:
                            D[i * crb + r] = 0.0
                # G[r0:r0+crb] += D^T (crb x ib) @ X[i0:i0+ib] (ib x d)
                gemm_rm(b'T', b'N', <int>crb, <int>d, <int>ib, 1.0, D, <int>crb,
                        &X[i0, 0], <int>d, 1.0, &G_out[r0, 0], <int>d)
                i0 = i0 + _PTILE
        free(Z)
        free(D)
    if failed:
        raise MemoryError()
    return n * m


def dense_fired_pairs(X, W, double b, tile=0):
    """All fired pairs {(i, r) : <w_r, x_i> > b} as CSR over points: (indptr (n+1,),
    indices) int64, indices ascending within each point. The blocked, parallel brute force
    ``hsr_brute_csr(W, X, b, tile, exact_ties=False)`` (below): the GEMM score decides, as in
    ``dense_forward``; kept under this name and argument order for its callers."""
    return hsr_brute_csr(W, X, b, tile, exact_ties=False)

cdef enum:
    # OpenBLAS (pthreads build, as shipped in the NumPy/SciPy wheels) runs a dgemm on its own
    # thread pool once M*N*K >= 4 * 65536; its spinning workers then fight our OpenMP threads
    # for the cores (measured here: 100x slowdowns on a loaded 2-core machine). Brute-force
    # tiles are kept below that size, so each dgemm runs on the calling thread and the
    # parallelism is ours alone (one tile of queries per OpenMP thread).
    _GEMM_SERIAL_MAX = 262143
    _BRUTE_TILE_DOUBLES = 65536


cdef void _brute_tile_shape(Py_ssize_t n, Py_ssize_t m, Py_ssize_t d, Py_ssize_t tile,
                            Py_ssize_t* nb, Py_ssize_t* mb) noexcept nogil:
    """Queries x rows per tile: nb*mb <= tile doubles (default 64K = 512 KB per thread) and
    nb*mb*d <= _GEMM_SERIAL_MAX when that allows at least 8 x 8."""
    cdef Py_ssize_t q = 64, r
    while q > 8 and q * q * d > _GEMM_SERIAL_MAX:
        q = q // 2
    if q > n:
        q = n
    r = _GEMM_SERIAL_MAX // (q * d)
    if tile <= 0:
        tile = _BRUTE_TILE_DOUBLES
    if r > tile // q:
        r = tile // q
    if r < 8:
        r = 8
    if r > m:
        r = m
    nb[0] = q
    mb[0] = r


def hsr_brute_csr(const double[:, ::1] W not None, const double[:, ::1] X not None, double b,
                  tile=0, *, bint exact_ties=True):
    """Blocked brute-force half-space reporting: CSR (indptr, indices) of
    {r : <w_r, x_i> > b} for every row x_i of X, indices ascending.

    prange over tiles of queries; each thread runs through all rows in tiles, one dgemm per
    (queries x rows) tile into its own buffer, thresholds the tile at once and appends hits to
    the per-query buffers of its queries (no other thread touches them); then the buffers are
    merged into CSR. ``tile``: doubles per thread's score tile (0: 65536).

    ``exact_ties`` (default): "fired" is decided by the defining arithmetic of the HSR
    structures, the sequential dot product ``sa_dot_seq`` (what the partition tree's leaf scan
    computes): a pair whose GEMM score lies within the rounding band
    2 (d + 4) eps ||w_r|| ||x_i|| + (4d + 8) 2^-1074 of b, where the GEMM and the sequential
    sum may round to different sides of b, is re-evaluated with it. Without it the GEMM score
    decides (``dense_fired_pairs``: the same arithmetic as the dense forward's firing test)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], m = W.shape[0]
    cdef Py_ssize_t nb, mb, nblk, blk, i0, r0, ib, rb, i, r
    cdef double z, hi, lo, ti, wmax = 0.0, band_abs
    cdef bint fire
    cdef _IdxBuf* q
    cdef _IdxBuf* qi
    cdef double* Z
    cdef double* zrow
    cdef bint oom = False
    cdef cnp.int64_t[::1] ind
    cdef Py_ssize_t tile_ = _int_arg("hsr_brute_csr", "tile", tile, 0, 2 ** 62)
    if d < 1:
        raise InputError("hsr_brute_csr: X must have at least one column")
    if W.shape[1] != d:
        raise InputError(f"hsr_brute_csr: W has {W.shape[1]} columns, X has {d}")
    _dims_fit("hsr_brute_csr", m=m, d=d)
    indptr = np.zeros(n + 1, dtype=np.int64)
    cdef cnp.int64_t[::1] ip = indptr
    if n == 0 or m == 0:
        return indptr, np.zeros(0, dtype=np.int64)
    # norms for the tie band (per call: O((m + n) d), next to the O(m n d) products)
    wn_arr = np.zeros(m if exact_ties else 0)
    xn_arr = np.zeros(n if exact_ties else 0)
    cdef double[::1] wn = wn_arr
    cdef double[::1] xn = xn_arr
    band_abs = (4.0 * d + 8.0) * 4.9406564584124654e-324
    if exact_ties:
        with nogil:
            for r in prange(m, schedule='static'):
                wn[r] = sa_norm_safe(&W[r, 0], d)
            for i in prange(n, schedule='static'):
                xn[i] = sa_norm_safe(&X[i, 0], d)
        wmax = float(wn_arr.max())
    _brute_tile_shape(n, m, d, tile_, &nb, &mb)
    nblk = (n + nb - 1) // nb
    q = <_IdxBuf*>calloc(n, sizeof(_IdxBuf))
    cdef char* fail = <char*>calloc(n + 1, sizeof(char))
    if q == NULL or fail == NULL:
        free(q); free(fail)
        raise MemoryError()
    with nogil, parallel():
        Z = <double*>malloc(nb * mb * sizeof(double))
        for blk in prange(nblk, schedule='dynamic'):
            if Z == NULL:
                fail[n] = 1
                continue
            i0 = blk * nb
            ib = nb if i0 + nb <= n else n - i0
            r0 = 0
            while r0 < m:
                rb = mb if r0 + mb <= m else m - r0
                gemm_rm(b'N', b'T', <int>ib, <int>rb, <int>d, 1.0, &X[i0, 0], <int>d,
                        &W[r0, 0], <int>d, 0.0, Z, <int>rb)
                for i in range(ib):
                    qi = q + i0 + i
                    zrow = Z + i * rb
                    # above hi: fired whatever the arithmetic; at or below lo: not fired;
                    # in between (rare), the per-row band decides whether to re-evaluate
                    hi = b
                    lo = b
                    if exact_ties:
                        ti = 2.0 * (d + 4) * 2.220446049250313e-16 * xn[i0 + i]
                        hi = b + (ti * wmax + band_abs)
                        lo = b - (ti * wmax + band_abs)
                    for r in range(rb):
                        z = zrow[r]
                        fire = z > hi
                        if not fire and z > lo:
                            if fabs(z - b) <= ti * wn[r0 + r] + band_abs:
                                z = sa_dot_seq(&W[r0 + r, 0], &X[i0 + i, 0], d)
                            fire = z > b
                        if fire:
                            if qi.n == qi.cap:
                                if _buf_reserve(qi, 1) != 0:
                                    fail[i0 + i] = 1
                                    break
                            qi.a[qi.n] = r0 + r
                            qi.n = qi.n + 1
                r0 = r0 + mb
        free(Z)
    for i in range(n + 1):
        if fail[i]:
            oom = True
    for i in range(n):
        ip[i + 1] = ip[i] + q[i].n
    free(fail)
    if not oom:
        indices = np.empty(ip[n], dtype=np.int64)
        ind = indices
        with nogil:
            for i in prange(n, schedule='static'):
                if q[i].n > 0:
                    memcpy(&ind[ip[i]], q[i].a, q[i].n * sizeof(cnp.int64_t))
    for i in range(n):
        free(q[i].a)
    free(q)
    if oom:
        raise MemoryError()
    return indptr, indices
