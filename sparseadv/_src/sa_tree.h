/* sa_tree.h: scalar helpers of the partition tree (sparseadv/_tree.pxi): bit scan, norms
   that neither underflow nor overflow, and the node test of a query (docs/design.md §3).
   Declared to Cython in sparseadv/_tree.pxi. */
#ifndef SPARSEADV_SA_TREE_H
#define SPARSEADV_SA_TREE_H

#include <float.h>
#include <math.h>
#include <stddef.h>

#include "sa_simd.h"

#if defined(__GNUC__) || defined(__clang__)
static inline int sa_ctz64(unsigned long long x) { return __builtin_ctzll(x); }
#else
static inline int sa_ctz64(unsigned long long x) {
    int k = 0; while (!(x & 1ULL)) { x >>= 1; ++k; } return k;
}
#endif

/* ||a - b||_2 scaled like sa_norm_safe (sa_simd.h) */
static inline double sa_dist_safe(const double* a, const double* b, ptrdiff_t d)
{
    double s = 0.0, t = 0.0, v;
    ptrdiff_t k;
    for (k = 0; k < d; ++k) { v = fabs(a[k] - b[k]); if (v > s) s = v; }
    if (s == 0.0 || !(s <= DBL_MAX)) return s;
    for (k = 0; k < d; ++k) { v = (a[k] - b[k]) / s; t += v * v; }
    return s * sqrt(t);
}

/* A plain sum of squares q = sum v_k^2 is trusted (relative error of a few ulps) only inside
   [2^-900, 2^900]: below, terms may have underflowed; above, overflowed. */
#define SA_SUMSQ_LO 0x1p-900
#define SA_SUMSQ_HI 0x1p900
static inline int sa_sumsq_in_range(double q) { return q >= SA_SUMSQ_LO && q <= SA_SUMSQ_HI; }

/* Node test of a query (x, b) against a node with centre c, radius R (>= ||w - c|| for its
   rows w), given cx = <c, x> computed in order, cn = ||c|| and xn = ||x|| (safe norms).
   Every row w of the node has <c,x> - R xn <= <w,x> <= <c,x> + R xn. Rounding: cx, the rows'
   computed dot products and R xn are each within (d + 4) eps (cn + R) xn of exact (relative
   part; SA_TREE_SLACK_REL = 1e-10 covers d up to ~1e5) plus, when products fall below
   DBL_MIN (gradual underflow), an absolute error of at most one half-ulp of the smallest
   subnormal per operation: (2 d + 8) * 2^-1074 covers both dot products and R xn.
   Returns -1: prune (no row fires, as computed by the leaf scan); 1: every row fires (as
   computed); 0: undecided (descend or scan). */
#define SA_TREE_SLACK_REL 1e-10
static inline double sa_tree_slack(double cn, double radius, double xn, double b, ptrdiff_t d)
{
    return SA_TREE_SLACK_REL * ((cn + radius) * xn + fabs(b)) + (2.0 * (double)d + 8.0) * 0x1p-1074;
}
static inline int sa_tree_node_decide(double cx, double radius, double cn, double xn, double b,
                                      ptrdiff_t d)
{
    const double rx = radius * xn, slack = sa_tree_slack(cn, radius, xn, b, d);
    if (cx + rx <= b - slack) return -1;
    if (cx - rx > b + slack) return 1;
    return 0;
}

/* The fused leaf scan of the tree engine's pass (_tree_search.pxi, _scan_forward): rows at
   tree positions [s, e), read from ``soa`` (the rows transposed, soa[k * m + p] = row p's
   entry k) four at a time, z_p = (((0 + w_p0 x_0) + w_p1 x_1) + ...) in order, each product
   and sum rounded separately (vector lanes do exactly the scalar operations: the target of
   the fast instance is avx2 WITHOUT fma, so nothing is contracted): the sequential dot
   product that defines "fired" (sa_dot_seq). For each row with z_p > b, in position order:
   c = scale a[idx[p]], *f += c (z_p - b), h += c w_p (row p of ``data``, when h is not NULL),
   *fired += 1, idx[p] appended to out (when not NULL; *nout entries so far). */
SA_BODY void
sa_leaf_forward_body(const double* soa, ptrdiff_t m, const double* data, const int64_t* idx,
                     ptrdiff_t s, ptrdiff_t e, ptrdiff_t d, const double* x, double b,
                     const double* a, double scale, double* f, double* h, int64_t* fired,
                     int64_t* out, ptrdiff_t* nout)
{
    double fi = *f;
    int64_t cnt = 0;
    ptrdiff_t n = out ? *nout : 0, p, k, q;
    for (p = s; p < e; p += 4) {
        double z4[4];
        const int len = e - p < 4 ? (int)(e - p) : 4;
        int j, any = 0;
#if defined(__GNUC__)
        if (len == 4) {
            sa_v4d z = SA_LD(soa + p) * x[0];
            for (k = 1; k < d; ++k) z = z + SA_LD(soa + k * m + p) * x[k];
            for (j = 0; j < 4; ++j) z4[j] = z[j];
        } else
#endif
        for (j = 0; j < len; ++j) {
            double zz = soa[p + j] * x[0];
            for (k = 1; k < d; ++k) zz = zz + soa[k * m + p + j] * x[k];
            z4[j] = zz;
        }
        for (j = 0; j < len; ++j) any |= z4[j] > b;
        if (!any) continue;
        for (j = 0; j < len; ++j) {
            if (z4[j] > b) {
                const int64_t r = idx[p + j];
                const double c = scale * a[r];
                const double* w = data + (p + j) * d;
                fi = fi + c * (z4[j] - b);
                if (h) for (q = 0; q < d; ++q) h[q] = h[q] + c * w[q];
                ++cnt;
                if (out) out[n++] = r;
            }
        }
    }
    *f = fi;
    *fired += cnt;
    if (out) *nout = n;
}

/* d = 3 as a compile-time constant (loops unrolled; no fma in either instance, so the same
   operations as the generic width) */
#define SA_LEAF_D() \
    if (d == 3) sa_leaf_forward_body(soa, m, data, idx, s, e, 3, x, b, a, scale, f, h, fired, \
                                     out, nout); \
    else sa_leaf_forward_body(soa, m, data, idx, s, e, d, x, b, a, scale, f, h, fired, out, nout);

#if SA_DISPATCH
#define SA_LEAF_PARAMS (const double* soa, ptrdiff_t m, const double* data, const int64_t* idx, \
    ptrdiff_t s, ptrdiff_t e, ptrdiff_t d, const double* x, double b, const double* a, \
    double scale, double* f, double* h, int64_t* fired, int64_t* out, ptrdiff_t* nout)
#define SA_LEAF_ARGS (soa, m, data, idx, s, e, d, x, b, a, scale, f, h, fired, out, nout)
__attribute__((target("avx2"))) static void sa_leaf_forward_avx2 SA_LEAF_PARAMS { SA_LEAF_D() }
static void sa_leaf_forward_base SA_LEAF_PARAMS { SA_LEAF_D() }
SA_UNUSED static void sa_leaf_forward SA_LEAF_PARAMS
{ if (sa_use_avx2) sa_leaf_forward_avx2 SA_LEAF_ARGS; else sa_leaf_forward_base SA_LEAF_ARGS; }
#else
SA_UNUSED static void sa_leaf_forward(const double* soa, ptrdiff_t m, const double* data,
    const int64_t* idx, ptrdiff_t s, ptrdiff_t e, ptrdiff_t d, const double* x, double b,
    const double* a, double scale, double* f, double* h, int64_t* fired, int64_t* out,
    ptrdiff_t* nout)
{ SA_LEAF_D() }
#endif

#endif /* SPARSEADV_SA_TREE_H */
