/* sa_tree.h: scalar helpers of the partition tree (sparseadv/_tree.pxi): bit scan, norms
   that neither underflow nor overflow, and the node test of a query (docs/design.md §3).
   Declared to Cython in sparseadv/_tree.pxi. */
#ifndef SPARSEADV_SA_TREE_H
#define SPARSEADV_SA_TREE_H

#include <float.h>
#include <math.h>
#include <stddef.h>

#include "sa_simd.h"
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
static inline int sa_ctz64(unsigned long long x) { return __builtin_ctzll(x); }
static inline int sa_popcnt(unsigned x) { return __builtin_popcount(x); }
#else
static inline int sa_ctz64(unsigned long long x) {
    int k = 0; while (!(x & 1ULL)) { x >>= 1; ++k; } return k;
}
static inline int sa_popcnt(unsigned x) {
    int k = 0; for (; x; x &= x - 1) ++k; return k;
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

/* ---------------------------------------------------------------------------------------
   The tree engine's pass (_BallTree.forward_batch, _tree_search.pxi): for one query (x, b),
   the traversal (sa_tree_walk) lists the position ranges to scan, then the scan
   (sa_tree_scan) evaluates their rows and sums the forward pass over the fired ones.

   The tree as the pass reads it. ``rec``: the node records, the centre c, the radius R and
   K = fl(||c|| + R) (so the slack below is sa_tree_slack's expression, bit for bit): the
   root's first (d + 2 doubles: c, R, K), then the children of node i, nodes 2i + 1 and
   2i + 2, interleaved from (d + 2) + i * 2 (d + 2): c_0 of both, c_1 of both, ..., R of
   both, K of both (sa_tree_rec_at), so that the pass tests two siblings with 2-wide vector
   operations. ``tile``: the rows in tree order, transposed per block of 8 positions (the
   block's entries k of its 8 rows contiguous): entry k of position p at tile[SA_TILE(p, k,
   d)], zero past m (m rounded up to 8 positions); ``ct``: scale a[idx[p]] in tree order,
   zero past m. ``blk``: a ball per block of 8 positions (block j: positions 8j .. 8j + 7,
   the rows of a leaf ordered so that a block holds close rows), field f of block j at
   blk[f * nbs + j] (the centre, R, K as for the nodes; nbs >= blocks + 8, the rest zero), so
   that the scan tests 4 or 8 blocks with vector operations. */
typedef struct {
    const double* rec;
    const int64_t* nstart;
    const int64_t* nend;
    const double* tile;
    const double* ct;
    const int64_t* idx;
    const double* blk;
    ptrdiff_t d, first_leaf, nbs;
} sa_tree_pass;

#define SA_TILE(p, k, d) (((p) & ~(ptrdiff_t)7) * (d) + 8 * (k) + ((p) & 7))

/* where field f (0 .. d - 1: the centre, d: R, d + 1: K) of ``node`` lives in ``rec`` */
static inline ptrdiff_t sa_tree_rec_at(ptrdiff_t node, ptrdiff_t f, ptrdiff_t d)
{
    if (node == 0) return f;
    return (d + 2) + ((node - 1) >> 1) * 2 * (d + 2) + 2 * f + ((node - 1) & 1);
}

#if defined(__GNUC__) && !defined(__clang__)
#define SA_TREE_NOCONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define SA_TREE_NOCONTRACT
#endif
#if SA_DISPATCH
#include <immintrin.h>
#define SA_TREE_AVX2 __attribute__((target("avx2"))) SA_TREE_NOCONTRACT
#define SA_TREE_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2"))) \
    SA_TREE_NOCONTRACT
#endif

/* The traversal: depth first, left child first, the node test of sa_tree_node_decide (the
   same operations, so the same decisions, and the same nodes visited): a pruned node is
   skipped, an undecided inner node descended, a leaf that is not pruned or a node wholly
   inside the half-space is listed for the scan (f needs its rows' scores). The children of a
   descended node are tested together (two lanes: the same operations lane by lane). Ranges
   come out in increasing position order; one that starts where the previous one ends is
   merged into it. Writes the ranges as (s, e) pairs into rg (room for as many as there are
   leaves), returns their number; cnt[0] += nodes visited, *listed = rows listed. The stack
   holds the right children still to visit (node, or ~node when it is to be scanned): room
   for the depth. */
#define SA_TREE_RANGE(NODE) do { \
    const int64_t s_ = t->nstart[NODE], e_ = t->nend[NODE]; \
    evals += e_ - s_; \
    if (nr > 0 && rg[2 * nr - 1] == s_) { \
        rg[2 * nr - 1] = e_; \
    } else { \
        rg[2 * nr] = s_; \
        rg[2 * nr + 1] = e_; \
        ++nr; \
    } } while (0)

SA_BODY ptrdiff_t
sa_tree_walk_body(const sa_tree_pass* t, ptrdiff_t d, const double* x, double rho, double b,
                  int64_t* rg, int64_t* stack, int64_t* cnt, int64_t* listed, const int anch)
{
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
    const double xn = sa_norm_safe(x, d), ab = fabs(b), xs = anch ? xn + rho : xn;
    const double sabs = (2.0 * (double)d + 8.0) * 0x1p-1074;
    const ptrdiff_t first_leaf = t->first_leaf, ps = 2 * (d + 2);
    const double* rec = t->rec;
    ptrdiff_t top = 0, node = 0, nr = 0, k;
    int64_t nodes = 1, evals = 0;
    {   /* the root */
        double cx = rec[0] * x[0], rx, sl;
        for (k = 1; k < d; ++k) cx = cx + rec[k] * x[k];
        rx = rec[d] * xn;
        if (anch) rx = rx + rho * rec[d + 1];
        sl = SA_TREE_SLACK_REL * (rec[d + 1] * xs + ab) + sabs;
        if (cx + rx <= b - sl) goto done;
        if (first_leaf == 0 || cx - rx > b + sl) {
            SA_TREE_RANGE(0);
            goto done;
        }
    }
    for (;;) {      /* test the children L = 2 node + 1 and L + 1 of ``node`` */
        const double* r = rec + (d + 2) + node * ps;
        const ptrdiff_t L = 2 * node + 1;
        const int leaf = L >= first_leaf;
        unsigned pruned, inside;
#if defined(__SSE2__)
        {
            const __m128d xnv = _mm_set1_pd(xn), xsv = _mm_set1_pd(xs), bv = _mm_set1_pd(b);
            const __m128d kv = _mm_loadu_pd(r + 2 * d + 2);
            __m128d cx = _mm_mul_pd(_mm_loadu_pd(r), _mm_set1_pd(x[0])), rx, sl;
            for (k = 1; k < d; ++k)
                cx = _mm_add_pd(cx, _mm_mul_pd(_mm_loadu_pd(r + 2 * k), _mm_set1_pd(x[k])));
            rx = _mm_mul_pd(_mm_loadu_pd(r + 2 * d), xnv);
            if (anch) rx = _mm_add_pd(rx, _mm_mul_pd(_mm_set1_pd(rho), kv));
            sl = _mm_add_pd(_mm_mul_pd(_mm_set1_pd(SA_TREE_SLACK_REL),
                                       _mm_add_pd(_mm_mul_pd(kv, xsv), _mm_set1_pd(ab))),
                            _mm_set1_pd(sabs));
            pruned = (unsigned)_mm_movemask_pd(_mm_cmple_pd(_mm_add_pd(cx, rx),
                                                            _mm_sub_pd(bv, sl)));
            inside = (unsigned)_mm_movemask_pd(_mm_cmpgt_pd(_mm_sub_pd(cx, rx),
                                                            _mm_add_pd(bv, sl)));
        }
#else
        {
            int j;
            pruned = inside = 0;
            for (j = 0; j < 2; ++j) {
                double cx = r[j] * x[0], rx, sl;
                for (k = 1; k < d; ++k) cx = cx + r[2 * k + j] * x[k];
                rx = r[2 * d + j] * xn;
                if (anch) rx = rx + rho * r[2 * d + 2 + j];
                sl = SA_TREE_SLACK_REL * (r[2 * d + 2 + j] * xs + ab) + sabs;
                pruned |= (unsigned)(cx + rx <= b - sl) << j;
                inside |= (unsigned)(cx - rx > b + sl) << j;
            }
        }
#endif
        nodes += 2;
        if (!(pruned & 2)) stack[top++] = leaf || (inside & 2) ? ~(L + 1) : L + 1;
        if (!(pruned & 1)) {
            if (!leaf && !(inside & 1)) {
                node = L;
                continue;
            }
            SA_TREE_RANGE(L);
        }
        for (;;) {
            int64_t v;
            if (top == 0) goto done;
            v = stack[--top];
            if (v >= 0) {
                node = v;
                break;
            }
            SA_TREE_RANGE(~v);
        }
    }
done:
    cnt[0] += nodes;
    *listed = evals;
    return nr;
}

SA_TREE_NOCONTRACT SA_UNUSED static ptrdiff_t
sa_tree_walk(const sa_tree_pass* t, const double* x, double b, int64_t* rg, int64_t* stack,
             int64_t* cnt, int64_t* listed)
{
    switch (t->d) {
    case 2: return sa_tree_walk_body(t, 2, x, 0.0, b, rg, stack, cnt, listed, 0);
    case 3: return sa_tree_walk_body(t, 3, x, 0.0, b, rg, stack, cnt, listed, 0);
    default: return sa_tree_walk_body(t, t->d, x, 0.0, b, rg, stack, cnt, listed, 0);
    }
}

/* The anchored walk: the ranges of the nodes that may hold a row firing on ANY query x with
   ||x - x0||_2 <= rho (the points of one attack around a clean point x0). For such x and a
   row w of a node, <w, x> = <c, x0> + <w - c, x0> + <w, x - x0> <= <c, x0> + R ||x0|| +
   (||c|| + R) rho, and >= <c, x0> - R ||x0|| - (||c|| + R) rho: the node test with the reach
   R ||x0|| + rho K and the slack's norm ||x0|| + rho (a bound on ||x||, so the slack covers
   the rounding of the scores at x as before). A node so pruned has no row firing on any
   such x; the scan then tests the blocks at x itself. */
SA_TREE_NOCONTRACT SA_UNUSED static ptrdiff_t
sa_tree_walk_anchor(const sa_tree_pass* t, const double* x0, double rho, double b, int64_t* rg,
                    int64_t* stack, int64_t* cnt, int64_t* listed)
{
    switch (t->d) {
    case 2: return sa_tree_walk_body(t, 2, x0, rho, b, rg, stack, cnt, listed, 1);
    case 3: return sa_tree_walk_body(t, 3, x0, rho, b, rg, stack, cnt, listed, 1);
    default: return sa_tree_walk_body(t, t->d, x0, rho, b, rg, stack, cnt, listed, 1);
    }
}

/* ---------------------------------------------------------------------------------------
   Updates (_BallTree.update, after the new rows are written into data and tile). ``P``: the
   u distinct tree positions of the new rows, increasing; ``V``: scratch for their rows,
   d * u doubles. Every node holding one of them gets R = max(R, max over its new rows of
   ||w - c||) (the distance as the build computes it: sqrt of the sum of squares in order,
   or sa_dist_safe outside [2^-900, 2^900]), its record updated, and the growth
   size * (R_new - R_old) added to the returned sum; nodes are taken level by level, each
   with the slice of P inside its range (one binary search). Then the ball of every block of
   8 positions holding a new row is recomputed from its rows (sa_tree_block_ball). */
typedef struct {
    double* rec;
    double* radius;
    const double* centers;
    const double* cnorm;
    const int64_t* nstart;
    const int64_t* nend;
    double* blk;
    const double* tile;
    ptrdiff_t m, d, n_nodes, nbs;
} sa_tree_upd;

/* The ball of block j from its rows in tile: the centre sum_i w_i / count with the sum in the
   order ((w0 + w4) + (w1 + w5)) + ((w2 + w6) + (w3 + w7)) (missing rows of the last block
   count as +0.0), R = the largest distance of its rows as the node radii are computed, K =
   fl(||c|| + R). The same bits in every build. */
static inline void
sa_tree_block_ball(const double* tile, ptrdiff_t m, ptrdiff_t d, ptrdiff_t nbs, double* blk,
                   ptrdiff_t j, double* c)
{
    const ptrdiff_t s = 8 * j, cntr = m - s < 8 ? m - s : 8;
    const double* tb = tile + s * d;        /* entry k of row i of the block: tb[8 k + i] */
    double best = -1.0, v[8];
    ptrdiff_t k, i;
    for (k = 0; k < d; ++k) {
        const double* w = tb + 8 * k;
        for (i = 0; i < 8; ++i) v[i] = i < cntr ? w[i] : 0.0;
        c[k] = (((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]))) / (double)cntr;
    }
    for (i = 0; i < cntr; ++i) {
        double q = 0.0;
        for (k = 0; k < d; ++k) {
            const double t = tb[8 * k + i] - c[k];
            q = q + t * t;
        }
        if (q > best) best = q;
    }
    if (sa_sumsq_in_range(best)) {
        best = sqrt(best);
    } else {        /* tiny or huge rows: the sums of squares under- or overflowed */
        best = 0.0;
        for (i = 0; i < cntr; ++i) {
            double sc = 0.0, q = 0.0, t;
            for (k = 0; k < d; ++k) { t = fabs(tb[8 * k + i] - c[k]); if (t > sc) sc = t; }
            if (sc > 0.0 && sc <= DBL_MAX) {
                for (k = 0; k < d; ++k) { t = (tb[8 * k + i] - c[k]) / sc; q += t * t; }
                sc = sc * sqrt(q);
            }
            if (sc > best) best = sc;
        }
    }
    for (k = 0; k < d; ++k) blk[k * nbs + j] = c[k];
    blk[d * nbs + j] = best;
    blk[(d + 1) * nbs + j] = sa_norm_safe(c, d) + best;
}

/* first index in P[lo, hi) with P[index] >= key */
static inline ptrdiff_t sa_tree_lower(const int64_t* P, ptrdiff_t lo, ptrdiff_t hi, int64_t key)
{
    while (lo < hi) {
        const ptrdiff_t mid = lo + (hi - lo) / 2;
        if (P[mid] < key) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* The largest sum of squares sum_k (V[k * u + j] - c_k)^2 (in order of k) over rows
   j0 .. j1 - 1 of the SoA scratch V (u rows); -1 when there are none. */
SA_BODY double
sa_tree_maxq_body(const double* V, ptrdiff_t u, ptrdiff_t j0, ptrdiff_t j1, const double* c,
                  ptrdiff_t d)
{
    double best = -1.0;
    ptrdiff_t j, k;
    for (j = j0; j < j1; ++j) {
        double q = 0.0;
        for (k = 0; k < d; ++k) {
            const double v = V[k * u + j] - c[k];
            q = q + v * v;
        }
        if (q > best) best = q;
    }
    return best;
}
#if SA_DISPATCH
SA_TREE_AVX2 static inline double
sa_tree_maxq_avx2(const double* V, ptrdiff_t u, ptrdiff_t j0, ptrdiff_t j1,
                       const double* c, ptrdiff_t d)
{
    __m256d best = _mm256_set1_pd(-1.0);
    double v4[4], b;
    ptrdiff_t j = j0, k;
    for (; j + 4 <= j1; j += 4) {
        __m256d t = _mm256_sub_pd(_mm256_loadu_pd(V + j), _mm256_set1_pd(c[0])), q;
        q = _mm256_mul_pd(t, t);
        for (k = 1; k < d; ++k) {
            t = _mm256_sub_pd(_mm256_loadu_pd(V + k * u + j), _mm256_set1_pd(c[k]));
            q = _mm256_add_pd(q, _mm256_mul_pd(t, t));
        }
        best = _mm256_max_pd(best, q);
    }
    _mm256_storeu_pd(v4, best);
    b = sa_tree_maxq_body(V, u, j, j1, c, d);
    for (k = 0; k < 4; ++k) if (v4[k] > b) b = v4[k];
    return b;
}
#endif

SA_BODY double
sa_tree_update_body(const sa_tree_upd* t, ptrdiff_t d, const int64_t* P, ptrdiff_t u,
                    double* V, double* c, const int lvl)
{
    double grow = 0.0;
    ptrdiff_t j, k, first, node, prev;
    for (k = 0; k < d; ++k)
        for (j = 0; j < u; ++j) V[k * u + j] = t->tile[SA_TILE(P[j], k, d)];
    for (first = 0; first < t->n_nodes; first = 2 * first + 1) {      /* level by level */
        ptrdiff_t j0 = 0;
        for (node = first; node < 2 * first + 1 && j0 < u; ++node) {
            const ptrdiff_t j1 = sa_tree_lower(P, j0, u, t->nend[node]);
            const double* cn = t->centers + node * d;
            double best, dist;
            if (j1 == j0) continue;
#if SA_DISPATCH
            best = lvl ? sa_tree_maxq_avx2(V, u, j0, j1, cn, d)
                       : sa_tree_maxq_body(V, u, j0, j1, cn, d);
#else
            (void)lvl;
            best = sa_tree_maxq_body(V, u, j0, j1, cn, d);
#endif
            if (sa_sumsq_in_range(best)) {
                dist = sqrt(best);
            } else {
                dist = 0.0;
                for (j = j0; j < j1; ++j) {
                    double dj;
                    for (k = 0; k < d; ++k) c[k] = V[k * u + j];
                    dj = sa_dist_safe(c, cn, d);
                    if (dj > dist) dist = dj;
                }
            }
            if (dist > t->radius[node]) {
                grow += (double)(t->nend[node] - t->nstart[node]) * (dist - t->radius[node]);
                t->radius[node] = dist;
                t->rec[sa_tree_rec_at(node, d, d)] = dist;
                t->rec[sa_tree_rec_at(node, d + 1, d)] = t->cnorm[node] + dist;
            }
            j0 = j1;
        }
    }
    for (j = 0, prev = -1; j < u; ++j) {
        const ptrdiff_t blkj = P[j] >> 3;
        if (blkj != prev)
            sa_tree_block_ball(t->tile, t->m, d, t->nbs, t->blk, blkj, c);
        prev = blkj;
    }
    return grow;
}
#define SA_TREE_UPD_D(lvl) \
    switch (t->d) { \
    case 3: return sa_tree_update_body(t, 3, P, u, V, c, lvl); \
    default: return sa_tree_update_body(t, t->d, P, u, V, c, lvl); }
#if SA_DISPATCH
SA_TREE_AVX2 static double
sa_tree_update_avx2(const sa_tree_upd* t, const int64_t* P, ptrdiff_t u, double* V, double* c)
{ SA_TREE_UPD_D(1) }
SA_TREE_NOCONTRACT static double
sa_tree_update_base(const sa_tree_upd* t, const int64_t* P, ptrdiff_t u, double* V, double* c)
{ SA_TREE_UPD_D(0) }
SA_UNUSED static double
sa_tree_update(const sa_tree_upd* t, const int64_t* P, ptrdiff_t u, double* V, double* c)
{
    if (sa_use_avx2) return sa_tree_update_avx2(t, P, u, V, c);
    return sa_tree_update_base(t, P, u, V, c);
}
#else
SA_TREE_NOCONTRACT SA_UNUSED static double
sa_tree_update(const sa_tree_upd* t, const int64_t* P, ptrdiff_t u, double* V, double* c)
{ SA_TREE_UPD_D(0) }
#endif

/* The scan of the ranges rg[0 .. 2 nr), block by block: each block of 8 positions that
   meets a range is tested first (its ball, the node test's operations: pruned when
   <c,x> + R ||x|| <= b - slack); the rows of a block that is not pruned and lie in the range
   are evaluated together (one aligned group, the lanes outside the range masked off). The
   score of row p is the sequential dot product z_p = ((w_p0 x_0 + w_p1 x_1) + ...) +
   w_p(d-1) x_(d-1), each product and sum rounded separately (no contraction into FMA in any
   build), i.e. sa_dot_seq, the arithmetic that defines "fired": row p fires when z_p > b.

   Sums: lane j of each accumulator collects, in scan order, the terms of the fired rows at
   positions p = j (mod 8): F_j += ct_p (z_p - b), H_kj += ct_p w_pk (when h is not NULL).
   At the end f = ((F0 + F4) + (F1 + F5)) + ((F2 + F6) + (F3 + F7)), and the same for each
   h_k. An unfired lane adds nothing (or +0.0 and -0.0, which the lanes, never -0.0, do not
   notice), so the baseline, AVX2 and AVX-512 builds give the same bits. *fired = the count;
   with ``out``, the original indices idx[p] of the fired rows are written there in scan
   order (the caller guarantees room for every row listed, plus 8: the AVX2 build writes 4
   entries per half group and advances by the count). ``scratch``: 8 d doubles aligned
   to 64 bytes (used when d > 4). cnt[0] += blocks tested, cnt[1] += rows evaluated.
   Returns the count. */
#define SA_TREE_SCAN_PARAMS (const sa_tree_pass* t, const int64_t* rg, ptrdiff_t nr, \
    const double* x, double b, double* f, double* h, int64_t* fired, int64_t* out, \
    double* scratch, int64_t* cnt)
#define SA_TREE_SCAN_ARGS (t, rg, nr, x, b, f, h, fired, out, scratch, cnt)

/* the lanes of positions p0 .. p0 + 7 that lie in [s, e), as bits */
static inline unsigned sa_tree_lanes(ptrdiff_t p0, int64_t s, int64_t e)
{
    unsigned m = 0xFFu;
    if (p0 < s) m &= 0xFFu << (s - p0);
    if (p0 + 8 > e) m &= 0xFFu >> (p0 + 8 - e);
    return m;
}

/* Portable instance (the baseline build, and compilers without the x86 intrinsics): the
   blocks one at a time, the eight lanes as arrays, the same operations lane by lane. */
SA_BODY int64_t
sa_tree_scan_gen_body(const sa_tree_pass* t, ptrdiff_t d, const int64_t* rg, ptrdiff_t nr,
                      const double* x, double b, double* f, double* h, int64_t* fired,
                      int64_t* out, double* scratch, int64_t* cnt)
{
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
    const ptrdiff_t nbs = t->nbs;
    const double* tile = t->tile;
    const double* bk = t->blk;
    const double xn = sa_norm_safe(x, d), ab = fabs(b);
    const double sabs = (2.0 * (double)d + 8.0) * 0x1p-1074;
    double F[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}, hl[4 * 8];
    double* H = d <= 4 ? hl : scratch;
    int64_t nf = 0, tests = 0, evals = 0;
    ptrdiff_t i, k, j;
    for (k = 0; k < 8 * d; ++k) H[k] = 0.0;
    for (i = 0; i < nr; ++i) {
        const int64_t s = rg[2 * i], e = rg[2 * i + 1];
        ptrdiff_t jb;
        tests += ((e + 7) >> 3) - (s >> 3);
        for (jb = s >> 3; jb < (e + 7) >> 3; ++jb) {
            const ptrdiff_t p = jb << 3;
            double cx = bk[jb] * x[0], rx, sl, z[8];
            unsigned bits = 0, lanes;
            for (k = 1; k < d; ++k) cx = cx + bk[k * nbs + jb] * x[k];
            rx = bk[d * nbs + jb] * xn;
            sl = SA_TREE_SLACK_REL * (bk[(d + 1) * nbs + jb] * xn + ab) + sabs;
            if (cx + rx <= b - sl) continue;
            lanes = sa_tree_lanes(p, s, e);
            evals += sa_popcnt(lanes);
            for (j = 0; j < 8; ++j) {
                double zz = tile[p * d + j] * x[0];
                for (k = 1; k < d; ++k) zz = zz + tile[p * d + 8 * k + j] * x[k];
                z[j] = zz;
                bits |= (unsigned)(zz > b) << j;
            }
            bits &= lanes;
            while (bits) {
                const ptrdiff_t l = sa_ctz64(bits), q = p + l;
                const double c = t->ct[q];
                F[l] = F[l] + c * (z[l] - b);
                if (h) for (k = 0; k < d; ++k) H[k * 8 + l] = H[k * 8 + l] + c * tile[p * d + 8 * k + l];
                if (out) out[nf] = t->idx[q];
                ++nf;
                bits &= bits - 1;
            }
        }
    }
    *f = ((F[0] + F[4]) + (F[1] + F[5])) + ((F[2] + F[6]) + (F[3] + F[7]));
    if (h) for (k = 0; k < d; ++k) {
        const double* v = H + 8 * k;
        h[k] = ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
    }
    *fired = nf;
    cnt[0] += tests;
    cnt[1] += evals;
    return nf;
}
#define SA_TREE_SCAN_D(body) \
    switch (t->d) { \
    case 2: return body(t, 2, rg, nr, x, b, f, h, fired, out, scratch, cnt); \
    case 3: return body(t, 3, rg, nr, x, b, f, h, fired, out, scratch, cnt); \
    case 4: return body(t, 4, rg, nr, x, b, f, h, fired, out, scratch, cnt); \
    default: return body(t, t->d, rg, nr, x, b, f, h, fired, out, scratch, cnt); }

#if SA_DISPATCH

/* AVX2: the eight lanes as two ymm halves (lanes 0-3, 4-7); an unfired lane adds +0.0.
   SA_TREE_GRP_AVX2(p, LM): one group of 8 positions from p, LM the lanes to keep (as 8
   int64 masks) or NULL for all; the group's rows at t_ = tile + p d (entry k of its 8 rows
   at t_ + 8 k). The empty asm after the test hides t_'s value, so the fired branch loads
   the rows again and the test's loads fold into its multiplies (no register holds them). The fired rows' indices are packed by
   a permutation per half (sa_tree_pack4: writes 4 entries, advances by the count; the
   caller leaves room for 8 more), loaded under the fired mask (no entry past m is read). */
static const int32_t sa_tree_pack4[16][8] = {
    {0, 1, 2, 3, 4, 5, 6, 7}, {0, 1, 2, 3, 4, 5, 6, 7}, {2, 3, 0, 1, 4, 5, 6, 7},
    {0, 1, 2, 3, 4, 5, 6, 7}, {4, 5, 0, 1, 2, 3, 6, 7}, {0, 1, 4, 5, 2, 3, 6, 7},
    {2, 3, 4, 5, 0, 1, 6, 7}, {0, 1, 2, 3, 4, 5, 6, 7}, {6, 7, 0, 1, 2, 3, 4, 5},
    {0, 1, 6, 7, 2, 3, 4, 5}, {2, 3, 6, 7, 0, 1, 4, 5}, {0, 1, 2, 3, 6, 7, 4, 5},
    {4, 5, 6, 7, 0, 1, 2, 3}, {0, 1, 4, 5, 6, 7, 2, 3}, {2, 3, 4, 5, 6, 7, 0, 1},
    {0, 1, 2, 3, 4, 5, 6, 7}};
#define SA_TREE_GRP_AVX2(P, LM) do { \
    const ptrdiff_t p_ = (P); \
    const int64_t* lm_ = (LM); \
    const double* t_ = tile + p_ * d; \
    __m256d z0, z1, m0, m1, c0, c1; \
    unsigned bits; \
    z0 = _mm256_mul_pd(_mm256_loadu_pd(t_), xv[0]); \
    z1 = _mm256_mul_pd(_mm256_loadu_pd(t_ + 4), xv[0]); \
    for (k = 1; k < d; ++k) { \
        const __m256d xk = d <= 4 ? xv[k] : _mm256_set1_pd(x[k]); \
        z0 = _mm256_add_pd(z0, _mm256_mul_pd(_mm256_loadu_pd(t_ + 8 * k), xk)); \
        z1 = _mm256_add_pd(z1, _mm256_mul_pd(_mm256_loadu_pd(t_ + 8 * k + 4), xk)); \
    } \
    m0 = _mm256_cmp_pd(z0, bv, _CMP_GT_OQ); \
    m1 = _mm256_cmp_pd(z1, bv, _CMP_GT_OQ); \
    if (lm_) { \
        m0 = _mm256_and_pd(m0, _mm256_loadu_pd((const double*)lm_)); \
        m1 = _mm256_and_pd(m1, _mm256_loadu_pd((const double*)(lm_ + 4))); \
    } \
    bits = (unsigned)_mm256_movemask_pd(m0) | ((unsigned)_mm256_movemask_pd(m1) << 4); \
    if (bits) { \
        __asm__("" : "+r"(t_)); \
        c0 = _mm256_loadu_pd(ct + p_); \
        c1 = _mm256_loadu_pd(ct + p_ + 4); \
        F0 = _mm256_add_pd(F0, _mm256_and_pd(_mm256_mul_pd(c0, _mm256_sub_pd(z0, bv)), m0)); \
        F1 = _mm256_add_pd(F1, _mm256_and_pd(_mm256_mul_pd(c1, _mm256_sub_pd(z1, bv)), m1)); \
        if (hv) { \
            c0 = _mm256_and_pd(c0, m0); \
            c1 = _mm256_and_pd(c1, m1); \
            for (k = 0; k < d; ++k) { \
                H[2 * k] = _mm256_add_pd(H[2 * k], _mm256_mul_pd(c0, _mm256_loadu_pd(t_ + 8 * k))); \
                H[2 * k + 1] = _mm256_add_pd(H[2 * k + 1], \
                                             _mm256_mul_pd(c1, _mm256_loadu_pd(t_ + 8 * k + 4))); \
            } \
        } \
        if (out) { \
            const unsigned lo_ = bits & 15u, hi_ = bits >> 4; \
            _mm256_storeu_si256((__m256i*)(out + nf), _mm256_permutevar8x32_epi32( \
                _mm256_maskload_epi64((const long long*)(idx + p_), _mm256_castpd_si256(m0)), \
                _mm256_loadu_si256((const __m256i*)sa_tree_pack4[lo_]))); \
            nf += sa_popcnt(lo_); \
            _mm256_storeu_si256((__m256i*)(out + nf), _mm256_permutevar8x32_epi32( \
                _mm256_maskload_epi64((const long long*)(idx + p_ + 4), \
                                      _mm256_castpd_si256(m1)), \
                _mm256_loadu_si256((const __m256i*)sa_tree_pack4[hi_]))); \
            nf += sa_popcnt(hi_); \
        } else { \
            nf += sa_popcnt(bits); \
        } \
    } } while (0)

SA_TREE_AVX2 SA_BODY int64_t
sa_tree_scan_avx2_body(const sa_tree_pass* t, ptrdiff_t d, const int64_t* rg, ptrdiff_t nr,
                       const double* x, double b, double* f, double* h, int64_t* fired,
                       int64_t* out, double* scratch, int64_t* cnt)
{
    /* lanes + 8 - h: lanes j >= h set; lanes + 16 - t: lanes j < t set */
    static const int64_t lanes[24] = {0, 0, 0, 0, 0, 0, 0, 0, -1, -1, -1, -1, -1, -1, -1, -1,
                                      0, 0, 0, 0, 0, 0, 0, 0};
    const double* tile = t->tile;
    const double* ct = t->ct;
    const double* bk = t->blk;
    const int64_t* idx = t->idx;
    const ptrdiff_t nbs = t->nbs;
    const double xn = sa_norm_safe(x, d);
    const __m256d zero = _mm256_setzero_pd(), bv = _mm256_set1_pd(b), xnv = _mm256_set1_pd(xn);
    const __m256d abv = _mm256_set1_pd(fabs(b)), relv = _mm256_set1_pd(SA_TREE_SLACK_REL);
    const __m256d sabsv = _mm256_set1_pd((2.0 * (double)d + 8.0) * 0x1p-1074);
    __m256d F0 = zero, F1 = zero, hl[8], xv[4];
    __m256d* H = d <= 4 ? hl : (__m256d*)scratch;
    const int hv = h != NULL;
    int64_t nf = 0, tests = 0, evals = 0;
    ptrdiff_t i, k;
    for (k = 0; k < 2 * d; ++k) H[k] = zero;
    for (k = 0; k < d && k < 4; ++k) xv[k] = _mm256_set1_pd(x[k]);
    for (i = 0; i < nr; ++i) {
        const int64_t s = rg[2 * i], e = rg[2 * i + 1];
        const ptrdiff_t j1 = (e + 7) >> 3;
        ptrdiff_t jb;
        tests += j1 - (s >> 3);
        for (jb = s >> 3; jb < j1; jb += 4) {       /* blocks jb .. jb + 3 */
            __m256d cx, rx, sl;
            unsigned keep;
            cx = _mm256_mul_pd(_mm256_loadu_pd(bk + jb), xv[0]);
            for (k = 1; k < d; ++k)
                cx = _mm256_add_pd(cx, _mm256_mul_pd(_mm256_loadu_pd(bk + k * nbs + jb),
                                                     d <= 4 ? xv[k] : _mm256_set1_pd(x[k])));
            rx = _mm256_mul_pd(_mm256_loadu_pd(bk + d * nbs + jb), xnv);
            sl = _mm256_add_pd(_mm256_mul_pd(relv, _mm256_add_pd(
                     _mm256_mul_pd(_mm256_loadu_pd(bk + (d + 1) * nbs + jb), xnv), abv)), sabsv);
            keep = (unsigned)_mm256_movemask_pd(_mm256_cmp_pd(
                _mm256_add_pd(cx, rx), _mm256_sub_pd(bv, sl), _CMP_NLE_UQ));
            if (j1 - jb < 4) keep &= (1u << (j1 - jb)) - 1u;
            while (keep) {
                const ptrdiff_t p = (jb + sa_ctz64(keep)) << 3;
                keep &= keep - 1;
                if (p >= s && p + 8 <= e) {
                    evals += 8;
                    SA_TREE_GRP_AVX2(p, NULL);
                } else {
                    int64_t lm[8];
                    const int64_t* g = lanes + 8 - (p < s ? s - p : 0);
                    const int64_t* l = lanes + 16 - (e - p < 8 ? e - p : 8);
                    for (k = 0; k < 8; ++k) lm[k] = g[k] & l[k];
                    evals += sa_popcnt(sa_tree_lanes(p, s, e));
                    SA_TREE_GRP_AVX2(p, lm);
                }
            }
        }
    }
    {
        double v[4];
        _mm256_storeu_pd(v, _mm256_add_pd(F0, F1));
        *f = (v[0] + v[1]) + (v[2] + v[3]);
        if (h) for (k = 0; k < d; ++k) {
            _mm256_storeu_pd(v, _mm256_add_pd(H[2 * k], H[2 * k + 1]));
            h[k] = (v[0] + v[1]) + (v[2] + v[3]);
        }
    }
    *fired = nf;
    cnt[0] += tests;
    cnt[1] += evals;
    return nf;
}

/* AVX-512: eight blocks tested at once; the eight lanes as one zmm, the fired lanes as a
   mask register (masked adds) */
SA_TREE_AVX512 SA_BODY int64_t
sa_tree_scan_avx512_body(const sa_tree_pass* t, ptrdiff_t d, const int64_t* rg,
                         ptrdiff_t nr, const double* x, double b, double* f, double* h,
                         int64_t* fired, int64_t* out, double* scratch, int64_t* cnt)
{
    const ptrdiff_t nbs = t->nbs;
    const double* tile = t->tile;
    const double* bk = t->blk;
    const double xn = sa_norm_safe(x, d);
    const __m512d bv = _mm512_set1_pd(b), zero = _mm512_setzero_pd(), xnv = _mm512_set1_pd(xn);
    const __m512d abv = _mm512_set1_pd(fabs(b)), relv = _mm512_set1_pd(SA_TREE_SLACK_REL);
    const __m512d sabsv = _mm512_set1_pd((2.0 * (double)d + 8.0) * 0x1p-1074);
    __m512d F = zero, hl[4], xv[4];
    __m512d* H = d <= 4 ? hl : (__m512d*)scratch;
    int64_t nf = 0, tests = 0, evals = 0;
    ptrdiff_t i, k;
    for (k = 0; k < d; ++k) H[k] = zero;
    for (k = 0; k < d && k < 4; ++k) xv[k] = _mm512_set1_pd(x[k]);
    for (i = 0; i < nr; ++i) {
        const int64_t s = rg[2 * i], e = rg[2 * i + 1];
        const ptrdiff_t j1 = (e + 7) >> 3;
        ptrdiff_t jb;
        tests += j1 - (s >> 3);
        for (jb = s >> 3; jb < j1; jb += 8) {       /* blocks jb .. jb + 7 */
            __m512d cx, rx, sl;
            unsigned keep;
            cx = _mm512_mul_pd(_mm512_loadu_pd(bk + jb), xv[0]);
            for (k = 1; k < d; ++k)
                cx = _mm512_add_pd(cx, _mm512_mul_pd(_mm512_loadu_pd(bk + k * nbs + jb),
                                                     d <= 4 ? xv[k] : _mm512_set1_pd(x[k])));
            rx = _mm512_mul_pd(_mm512_loadu_pd(bk + d * nbs + jb), xnv);
            sl = _mm512_add_pd(_mm512_mul_pd(relv, _mm512_add_pd(
                     _mm512_mul_pd(_mm512_loadu_pd(bk + (d + 1) * nbs + jb), xnv), abv)), sabsv);
            keep = (unsigned)_mm512_cmp_pd_mask(_mm512_add_pd(cx, rx), _mm512_sub_pd(bv, sl),
                                                _CMP_NLE_UQ);
            if (j1 - jb < 8) keep &= (1u << (j1 - jb)) - 1u;
            while (keep) {
                const ptrdiff_t p = (jb + sa_ctz64(keep)) << 3;
                __m512d z, c;
                __mmask8 m;
                keep &= keep - 1;
                const double* tp = tile + p * d;
                z = _mm512_mul_pd(_mm512_loadu_pd(tp), xv[0]);
                for (k = 1; k < d; ++k)
                    z = _mm512_add_pd(z, _mm512_mul_pd(_mm512_loadu_pd(tp + 8 * k),
                                                       d <= 4 ? xv[k] : _mm512_set1_pd(x[k])));
                m = _mm512_cmp_pd_mask(z, bv, _CMP_GT_OQ);
                if (p < s || p + 8 > e) {
                    const unsigned lanes = sa_tree_lanes(p, s, e);
                    m &= (__mmask8)lanes;
                    evals += sa_popcnt(lanes);
                } else {
                    evals += 8;
                }
                if (!m) continue;
                c = _mm512_loadu_pd(t->ct + p);
                F = _mm512_mask_add_pd(F, m, F, _mm512_mul_pd(c, _mm512_sub_pd(z, bv)));
                if (h) for (k = 0; k < d; ++k)
                    H[k] = _mm512_mask_add_pd(H[k], m, H[k],
                                              _mm512_mul_pd(c, _mm512_loadu_pd(tp + 8 * k)));
                if (out)    /* a masked load: no lane past m is read */
                    _mm512_mask_compressstoreu_epi64(out + nf, m,
                                                     _mm512_maskz_loadu_epi64(m, t->idx + p));
                nf += sa_popcnt((unsigned)m);
            }
        }
    }
    {
        double v[8];
        _mm512_storeu_pd(v, F);
        *f = ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
        if (h) for (k = 0; k < d; ++k) {
            _mm512_storeu_pd(v, H[k]);
            h[k] = ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
        }
    }
    *fired = nf;
    cnt[0] += tests;
    cnt[1] += evals;
    return nf;
}

SA_TREE_AVX512 static int64_t sa_tree_scan_avx512 SA_TREE_SCAN_PARAMS
{ SA_TREE_SCAN_D(sa_tree_scan_avx512_body) }
SA_TREE_AVX2 static int64_t sa_tree_scan_avx2 SA_TREE_SCAN_PARAMS
{ SA_TREE_SCAN_D(sa_tree_scan_avx2_body) }
SA_TREE_NOCONTRACT static int64_t sa_tree_scan_base SA_TREE_SCAN_PARAMS
{ SA_TREE_SCAN_D(sa_tree_scan_gen_body) }
SA_UNUSED static int64_t sa_tree_scan SA_TREE_SCAN_PARAMS
{
    if (sa_use_avx512) return sa_tree_scan_avx512 SA_TREE_SCAN_ARGS;
    if (sa_use_avx2) return sa_tree_scan_avx2 SA_TREE_SCAN_ARGS;
    return sa_tree_scan_base SA_TREE_SCAN_ARGS;
}
#else
SA_TREE_NOCONTRACT SA_UNUSED static int64_t sa_tree_scan SA_TREE_SCAN_PARAMS
{ SA_TREE_SCAN_D(sa_tree_scan_gen_body) }
#endif

#endif /* SPARSEADV_SA_TREE_H */
