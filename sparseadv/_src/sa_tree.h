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

#endif /* SPARSEADV_SA_TREE_H */
