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

DEF _PTILE = 64          # points per tile

cdef inline Py_ssize_t _neuron_tile(Py_ssize_t d, Py_ssize_t m, Py_ssize_t volume) noexcept nogil:
    cdef Py_ssize_t v = volume if volume > 0 else 262144
    cdef Py_ssize_t rb = v // (_PTILE * d)
    if rb < 16:
        rb = 16
    if rb > m:
        rb = m
    return rb


def dense_forward(const double[:, ::1] X, const double[:, ::1] W, const double[::1] a,
                  double b, double scale, double[::1] f_out, double[:, ::1] H_out=None,
                  cnp.int64_t[::1] fired_out=None, Py_ssize_t volume=262144):
    """f_i = scale * sum_r a_r relu(<w_r, x_i> - b); optionally
    H_i = scale * sum_r a_r 1[<w_r, x_i> > b] w_r (so that grad_x loss_i = (f_i - y_i) H_i)
    and fired_i = #{r : <w_r, x_i> > b}. Outputs are overwritten. Returns m*n (inner products)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], m = W.shape[0]
    cdef Py_ssize_t rb, ntiles, t, i0, r0, ib, crb, i, r
    cdef bint want_h = H_out is not None, want_fired = fired_out is not None
    cdef double z, acc
    cdef cnp.int64_t cnt
    cdef double* Z
    cdef double* M
    cdef int failed = 0
    cdef int* failed_p = &failed
    if d < 1:
        raise ValueError("dense_forward: X must have at least one column")
    if W.shape[1] != d or a.shape[0] != m or f_out.shape[0] != n:
        raise ValueError("dense_forward: inconsistent shapes (W must be (m, d), a (m,), "
                         "f_out (n,) for X (n, d))")
    if want_h and (H_out.shape[0] != n or H_out.shape[1] != d):
        raise ValueError("dense_forward: H_out must have shape (n, d)")
    if want_fired and fired_out.shape[0] != n:
        raise ValueError("dense_forward: fired_out must have length n")
    if n == 0 or m == 0:
        f_out[:] = 0.0
        if want_h:
            H_out[:, :] = 0.0
        if want_fired:
            fired_out[:] = 0
        return 0
    rb = _neuron_tile(d, m, volume)
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


def dense_weight_grad(const double[:, ::1] X, const double[:, ::1] W, const double[::1] a,
                      double b, const double[::1] coef, double[:, ::1] G_out,
                      Py_ssize_t volume=262144):
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
    if d < 1:
        raise ValueError("dense_weight_grad: X must have at least one column")
    if W.shape[1] != d or a.shape[0] != m or coef.shape[0] != n:
        raise ValueError("dense_weight_grad: inconsistent shapes (W must be (m, d), a (m,), "
                         "coef (n,) for X (n, d))")
    if G_out.shape[0] != m or G_out.shape[1] != d:
        raise ValueError("dense_weight_grad: G_out must have shape (m, d)")
    if m == 0:
        return 0
    G_out[:, :] = 0.0
    if n == 0:
        return 0
    rb = _neuron_tile(d, m, volume)
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


def dense_fired_pairs(X, W, double b, Py_ssize_t tile=0):
    """All fired pairs {(i, r) : <w_r, x_i> > b} as CSR over points: (indptr (n+1,),
    indices) int64, indices ascending within each point. The blocked, parallel brute force
    ``hsr_brute_csr(W, X, b, tile)`` (_tree.pxi); kept under this name and argument order
    for its callers."""
    return hsr_brute_csr(W, X, b, tile)
