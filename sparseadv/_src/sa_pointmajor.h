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
   the pairs of point i are the neuron ids segp[i][0 .. segn[i]) (a CSR's rows, or the
   tree's kept per-thread segments); G[r] += (coef[i] a[r]) x_i for every pair (i, r) of
   points [0, n) whose neuron r lies in [r0, r1), and mark[r] = 1. Points in increasing
   order, so each row sums its points in increasing order with the operations of
   nm_weight_grad over the transposed pairs: the same bits, without the transpose. G (m x d)
   and mark are zeroed by the caller; disjoint neuron ranges may run in parallel. */
SA_BODY void
sa_pm_wgrad_seg_d(const double* X, ptrdiff_t d, const double* a, const double* coef,
                  const int64_t* const* segp, const int64_t* segn, int64_t n, int64_t r0,
                  int64_t r1, double* G, uint8_t* mark)
{
    int64_t i, k;
    const int whole = r0 == 0 && r1 == INT64_MAX;
    for (i = 0; i < n; ++i) {
        const double* x = X + i * d;
        const double ci = coef[i];
        const int64_t* sg = segp[i];
        for (k = 0; k < segn[i]; ++k) {
            const int64_t r = sg[k];
            if (!whole && (r < r0 || r >= r1)) continue;
            sa_axpy(ci * a[r], x, G + r * d, d);
            mark[r] = 1;
        }
    }
}

/* d = 3, the tree engine's regime, with G rows of stride 4: one 4-wide g + alpha x4 per
   pair, x4 = (x_0, x_1, x_2, 0), each lane the element-wise operation of sa_axpy
   (contracted into an fma exactly where sa_axpy's is: the same bits); lane 3 stays zero. */
SA_BODY void
sa_pm_wgrad_seg4_d(const double* X, const double* a, const double* coef,
                   const int64_t* const* segp, const int64_t* segn, int64_t n, int64_t r0,
                   int64_t r1, double* G4, uint8_t* mark)
{
    int64_t i, k;
    const int whole = r0 == 0 && r1 == INT64_MAX;
    for (i = 0; i < n; ++i) {
        const double ci = coef[i];
        const int64_t* sg = segp[i];
#if defined(__GNUC__)
        const sa_v4d x4 = {X[3 * i], X[3 * i + 1], X[3 * i + 2], 0.0};
#endif
        for (k = 0; k < segn[i]; ++k) {
            const int64_t r = sg[k];
            if (!whole && (r < r0 || r >= r1)) continue;
#if defined(__GNUC__)
            *(sa_v4d*)(G4 + 4 * r) = SA_LD(G4 + 4 * r) + (ci * a[r]) * x4;
#else
            sa_axpy(ci * a[r], X + 3 * i, G4 + 4 * r, 3);
#endif
            mark[r] = 1;
        }
    }
}

/* gs = 4 (d = 3): sa_pm_wgrad_seg4_d; otherwise stride d */
SA_BODY void
sa_pm_wgrad_seg_body(const double* X, ptrdiff_t d, const double* a, const double* coef,
                     const int64_t* const* segp, const int64_t* segn, int64_t n, int64_t r0,
                     int64_t r1, double* G, ptrdiff_t gs, uint8_t* mark)
{
    if (gs == 4 && d == 3) sa_pm_wgrad_seg4_d(X, a, coef, segp, segn, n, r0, r1, G, mark);
    else sa_pm_wgrad_seg_d(X, d, a, coef, segp, segn, n, r0, r1, G, mark);
}
SA_KERNEL(sa_pm_wgrad_seg,
    (const double* X, ptrdiff_t d, const double* a, const double* coef,
     const int64_t* const* segp, const int64_t* segn, int64_t n, int64_t r0, int64_t r1,
     double* G, ptrdiff_t gs, uint8_t* mark),
    (X, d, a, coef, segp, segn, n, r0, r1, G, gs, mark))

/* The rows marked in mark[0 .. m) (0/1 bytes), increasing: their count. */
SA_UNUSED static int64_t sa_pm_count_marks(const uint8_t* mark, int64_t m)
{
    int64_t r = 0, cnt = 0;
    for (; r + 8 <= m; r += 8) {
        uint64_t w;
        memcpy(&w, mark + r, 8);
        w = (w + (w >> 8)) & 0x00FF00FF00FF00FFull;     /* bytes of 0 or 1: add them */
        w = w + (w >> 16);
        cnt += (int64_t)((w + (w >> 32)) & 0xFFFF);
    }
    for (; r < m; ++r) cnt += mark[r];
    return cnt;
}

/* Row p of G (stride gs >= d) copied into gout (d entries), and G's row and mark[p] left
   zero again. */
static inline void sa_pm_take(double* G, ptrdiff_t gs, ptrdiff_t d, uint8_t* mark, int64_t p,
                              double* gout)
{
    ptrdiff_t k;
    mark[p] = 0;
    for (k = 0; k < d; ++k) gout[k] = G[p * gs + k];
    for (k = 0; k < gs; ++k) G[p * gs + k] = 0.0;
}

/* Gather the marked rows of G (stride gs >= d) into rows[] (increasing) and Gout (nr x d),
   and leave G and mark zero there again (the caller keeps them for the next call). */
SA_UNUSED static void sa_pm_compact(double* G, ptrdiff_t gs, ptrdiff_t d, uint8_t* mark,
                                    int64_t m, int64_t* rows, double* Gout)
{
    int64_t r = 0, j = 0;
    while (r < m) {
        uint64_t w = 1;
        if (r + 8 <= m) memcpy(&w, mark + r, 8);
        if (!w) { r += 8; continue; }
        {
            const int64_t e = r + 8 <= m ? r + 8 : m;
            for (; r < e; ++r) {
                if (!mark[r]) continue;
                sa_pm_take(G, gs, d, mark, r, Gout + j * d);
                rows[j++] = r;
            }
        }
    }
}

/* sa_pm_compact for a gradient in tree order: G and mark indexed by position, gathered by
   original row r = 0 .. m - 1 from position pos[r] (rows increasing). */
SA_UNUSED static void sa_pm_compact_pos(double* G, ptrdiff_t gs, ptrdiff_t d, uint8_t* mark,
                                        int64_t m, const int64_t* pos, int64_t* rows,
                                        double* Gout)
{
    int64_t r, j = 0;
    for (r = 0; r < m; ++r) {
        if (!mark[pos[r]]) continue;
        sa_pm_take(G, gs, d, mark, pos[r], Gout + j * d);
        rows[j++] = r;
    }
}

#endif /* SPARSEADV_SA_POINTMAJOR_H */
