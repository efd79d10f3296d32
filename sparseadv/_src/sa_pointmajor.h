/* sa_pointmajor.h: the tree engine's point-major forward over (point, neuron) pairs in CSR
   over points. Declared to Cython in sparseadv/_pointmajor.pxi. */
#ifndef SPARSEADV_SA_POINTMAJOR_H
#define SPARSEADV_SA_POINTMAJOR_H

#include "sa_simd.h"

/* Point-major forward (+ H) for points [i0, i1). */
SA_BODY void
sa_pm_fwd_body(const double* X, ptrdiff_t d, const double* W, const double* a, double b,
          double scale, const int64_t* indptr, const int64_t* indices, int64_t i0,
          int64_t i1, double* f, double* H, int64_t* fired, int64_t* n_eval,
          int64_t* n_fired)
{
    int64_t i, k, ev = 0, nf = 0;
    for (i = i0; i < i1; ++i) {
        const double* x = X + i * d;
        double fi = 0.0;
        int64_t cnt = 0;
        if (H) memset(H + i * d, 0, (size_t)d * sizeof(double));
        ev += indptr[i + 1] - indptr[i];
        for (k = indptr[i]; k < indptr[i + 1]; ++k) {
            const int64_t r = indices[k];
            const double* w = W + r * d;
            double z;
            /* the rows are gathered at random: prefetch SA_PF_PM pairs ahead */
            if (k + SA_PF_PM < indptr[i + 1])
                sa_prefetch_row(W + indices[k + SA_PF_PM] * d, d);
            z = sa_dot(w, x, d);
            if (z > b) {
                const double c = scale * a[r];
                fi += c * (z - b);
                if (H) sa_axpy(c, w, H + i * d, d);
                ++cnt;
            }
        }
        f[i] = fi;
        if (fired) fired[i] = cnt;
        nf += cnt;
    }
    *n_eval += ev;
    *n_fired += nf;
}

SA_KERNEL_D(sa_pm_fwd,
    (const double* X, ptrdiff_t d, const double* W, const double* a, double b, double scale,
     const int64_t* indptr, const int64_t* indices, int64_t i0, int64_t i1, double* f,
     double* H, int64_t* fired, int64_t* n_eval, int64_t* n_fired),
    (X, d, W, a, b, scale, indptr, indices, i0, i1, f, H, fired, n_eval, n_fired),
    (X, sa_d, W, a, b, scale, indptr, indices, i0, i1, f, H, fired, n_eval, n_fired))

/* Weight gradient over point-major pairs that all fire (the fused tree pass's answer):
   G[r] += (coef[i] a[r]) x_i for every pair (i, r) of points [0, n) whose neuron r lies in
   [r0, r1), and mark[r] = 1. Points in increasing order, so each row sums its points in
   increasing order with the operations of nm_weight_grad over the transposed pairs: the same
   bits, without the transpose. G (m x d) and mark are zeroed by the caller; disjoint neuron
   ranges may run in parallel. */
SA_BODY void
sa_pm_wgrad_all_d(const double* X, ptrdiff_t d, const double* a, const double* coef,
                  const int64_t* indptr, const int64_t* indices, int64_t n, int64_t r0,
                  int64_t r1, double* G, uint8_t* mark)
{
    int64_t i, k;
    const int whole = r0 == 0 && r1 == INT64_MAX;
    for (i = 0; i < n; ++i) {
        const double* x = X + i * d;
        const double ci = coef[i];
        for (k = indptr[i]; k < indptr[i + 1]; ++k) {
            const int64_t r = indices[k];
            if (!whole && (r < r0 || r >= r1)) continue;
            sa_axpy(ci * a[r], x, G + r * d, d);
            mark[r] = 1;
        }
    }
}

/* d = 3, the tree engine's regime, as a compile-time constant: the axpy unrolls into three
   independent g[j] += alpha x[j] (each contracted into an fma where the generic loop's is,
   so the same bits; checked against nm_weight_grad in tests/test_tree_forward.py) */
SA_BODY void
sa_pm_wgrad_all_body(const double* X, ptrdiff_t d, const double* a, const double* coef,
                     const int64_t* indptr, const int64_t* indices, int64_t n, int64_t r0,
                     int64_t r1, double* G, uint8_t* mark)
{
    if (d == 3) sa_pm_wgrad_all_d(X, 3, a, coef, indptr, indices, n, r0, r1, G, mark);
    else sa_pm_wgrad_all_d(X, d, a, coef, indptr, indices, n, r0, r1, G, mark);
}
SA_KERNEL(sa_pm_wgrad_all,
    (const double* X, ptrdiff_t d, const double* a, const double* coef, const int64_t* indptr,
     const int64_t* indices, int64_t n, int64_t r0, int64_t r1, double* G, uint8_t* mark),
    (X, d, a, coef, indptr, indices, n, r0, r1, G, mark))

#endif /* SPARSEADV_SA_POINTMAJOR_H */
