/* sa_certified.h: the neuron-major kernels of the certified engine (docs/design.md §3):
   the float64 forward over candidate pairs (the oracle's), the weight gradient, the
   anchoring test (float64 and float32 scores), and the engine's pass (sa_nm_pass: the
   float32 screen, pair states and deadlines, records handed to the sums).
   Declared to Cython in sparseadv/_certified.pxi and sparseadv/_candidates.pxi. */
#ifndef SPARSEADV_SA_CERTIFIED_H
#define SPARSEADV_SA_CERTIFIED_H

#include <stdlib.h>

#include "sa_simd.h"

/* Neuron-major forward (+ input-gradient helper H) for neurons [r0, r1) restricted to the
   points [lo, hi). Writes only rows lo..hi-1 of f, H, fired. */
SA_BODY void
sa_nm_fwd_body(const double* X, ptrdiff_t d, const double* W, const double* a, double b,
          double scale, const int64_t* cptr, const int32_t* cidx, int64_t r0, int64_t r1,
          int32_t lo, int32_t hi, double* f, double* H, int64_t* fired, uint8_t* mask,
          int64_t* n_eval, int64_t* n_fired)
{
    int64_t r, k, p, q, ev = 0, nf = 0;
    for (r = r0; r < r1; ++r) {
        if (!sa_candidates_in_range(cptr, cidx, r, lo, hi, &p, &q)) continue;
        {
            const double* w = W + r * d;
            const double c = scale * a[r];
            ev += q - p;
            for (k = p; k < q; k += 4) {
                double zz[4];
                int t, cnt = (q - k) < 4 ? (int)(q - k) : 4;
                if (cnt == 4) {
                    sa_dot4(w, X + (int64_t)cidx[k] * d, X + (int64_t)cidx[k + 1] * d,
                            X + (int64_t)cidx[k + 2] * d, X + (int64_t)cidx[k + 3] * d,
                            d, zz);
                } else {
                    for (t = 0; t < cnt; ++t) zz[t] = sa_dot(w, X + (int64_t)cidx[k + t] * d, d);
                }
                for (t = 0; t < cnt; ++t) {
                    const int64_t i = cidx[k + t];
                    const double z = zz[t];
                    if (z > b) {
                        f[i] += c * (z - b);
                        if (H) sa_axpy(c, w, H + i * d, d);
                        if (fired) fired[i] += 1;
                        if (mask) mask[k + t] = 1;
                        ++nf;
                    } else if (mask) {
                        mask[k + t] = 0;
                    }
                }
            }
        }
    }
    *n_eval += ev;
    *n_fired += nf;
}

/* Neuron-major weight gradient: G[k] = sum_{i listed for rows[k], fired} coef_i a_r x_i
   for k in [k0, k1). Fired = mask[p] when mask is given, else <w_r, x_i> > b. */
SA_BODY void
sa_nm_wgrad_body(const double* X, ptrdiff_t d, const double* W, const double* a, double b,
            const double* coef, const int64_t* cptr, const int32_t* cidx,
            const uint8_t* mask, const int64_t* rows, int64_t k0, int64_t k1, double* G,
            int64_t* n_eval, int64_t* n_fired)
{
    /* the fired points of a row are listed (branch-free) in chunks of SA_WG, then summed in
       increasing order: g += (coef_i a_r) x_i, in registers when d is a multiple of 8 up to
       SA_WG_D (the same operations in the same order as the axpy into g: the same bits) */
    enum { SA_WG = 64, SA_WG_D = 128 };
    int32_t fi[SA_WG];
    int64_t k, p, ev = 0, nf = 0;
    for (k = k0; k < k1; ++k) {
        const int64_t r = rows[k];
        const double* w = W + r * d;
        const double ar = a[r];
        double* g = G + k * d;
#if defined(__GNUC__)
        const int inreg = d % 8 == 0 && d <= SA_WG_D;
        sa_v8d acc[SA_WG_D / 8];
        ptrdiff_t j;
        if (inreg)
            for (j = 0; j < d / 8; ++j)
                acc[j] = (sa_v8d){0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        else
#endif
        memset(g, 0, (size_t)d * sizeof(double));
        for (p = cptr[r]; p < cptr[r + 1]; p += SA_WG) {
            const int64_t e = p + SA_WG < cptr[r + 1] ? p + SA_WG : cptr[r + 1];
            int64_t q, c = 0, u;
            if (mask) {
                for (q = p; q < e; ++q) { fi[c] = cidx[q]; c += mask[q] & 1; }
            } else {
                for (q = p; q < e; ++q) {
                    fi[c] = cidx[q];
                    c += sa_dot(w, X + (int64_t)cidx[q] * d, d) > b;
                }
                ev += e - p;
            }
            nf += c;
            for (u = 0; u < c; ++u) {
                const double* x = X + (int64_t)fi[u] * d;
                const double cf = coef[fi[u]] * ar;
#if defined(__GNUC__)
                if (inreg) {
                    for (j = 0; j < d / 8; ++j) acc[j] += cf * SA_LD8(x + 8 * j);
                    continue;
                }
#endif
                sa_axpy(cf, x, g, d);
            }
        }
#if defined(__GNUC__)
        if (inreg)
            for (j = 0; j < d / 8; ++j) *(sa_v8d*)(g + 8 * j) = acc[j];
#endif
    }
    *n_eval += ev;
    *n_fired += nf;
}

/* Candidate test of rows [k0, k1) of a score block S (kb x n): keep point i of row k iff
   S[k, i] + budget[k] * xnorm[i] > thr[k]. Mode 0 counts (cnt[k], band[k] = kept pairs
   within h of the threshold), mode 1 writes the kept point ids at out + off[k]. */
SA_BODY void
sa_anchor_rows_body(const double* S, int64_t n, const double* thr, const double* budget,
               const double* xnorm, double h, int64_t k0, int64_t k1, int mode,
               int64_t* cnt, int64_t* band, const int64_t* off, int32_t* out)
{
    int64_t k, i;
    for (k = k0; k < k1; ++k) {
        const double* s = S + k * n;
        const double t = thr[k], B = budget[k];
        if (mode == 0) {
            int64_t c = 0, bc = 0;
            for (i = 0; i < n; ++i) {
                const double v = s[i] + B * xnorm[i] - t;
                c += v > 0.0;
                bc += (v > 0.0) & (v <= h);
            }
            cnt[k] = c;
            band[k] = bc;
        } else {
            int32_t* o = out + off[k];
            int64_t c = 0;
            for (i = 0; i < n; ++i) {
                if (s[i] + B * xnorm[i] > t) o[c++] = (int32_t)i;
            }
        }
    }
}

SA_KERNEL_D(sa_nm_fwd,
    (const double* X, ptrdiff_t d, const double* W, const double* a, double b, double scale,
     const int64_t* cptr, const int32_t* cidx, int64_t r0, int64_t r1, int32_t lo,
     int32_t hi, double* f, double* H, int64_t* fired, uint8_t* mask, int64_t* n_eval,
     int64_t* n_fired),
    (X, d, W, a, b, scale, cptr, cidx, r0, r1, lo, hi, f, H, fired, mask, n_eval, n_fired),
    (X, sa_d, W, a, b, scale, cptr, cidx, r0, r1, lo, hi, f, H, fired, mask, n_eval,
     n_fired))
SA_KERNEL_D(sa_nm_wgrad,
    (const double* X, ptrdiff_t d, const double* W, const double* a, double b,
     const double* coef, const int64_t* cptr, const int32_t* cidx, const uint8_t* mask,
     const int64_t* rows, int64_t k0, int64_t k1, double* G, int64_t* n_eval,
     int64_t* n_fired),
    (X, d, W, a, b, coef, cptr, cidx, mask, rows, k0, k1, G, n_eval, n_fired),
    (X, sa_d, W, a, b, coef, cptr, cidx, mask, rows, k0, k1, G, n_eval, n_fired))
/* A pair of point i starts (on) or stops firing: add or remove c w_r in H_i, c in F0_i.
   When the last fired neuron of a point stops, H_i and F0_i are reset to exact zeros
   (a fresh sum has no terms; removing the terms would leave round-off, whose signs an
   l-inf attack would follow). */
static inline __attribute__((always_inline)) void
sa_track_flip(int on, double c, const double* w, ptrdiff_t d, double* h, double* F0,
              int64_t* cnt)
{
    if (on) {
        sa_axpy(c, w, h, d);
        *F0 += c;
        *cnt += 1;
    } else if (--*cnt == 0) {
        memset(h, 0, (size_t)d * sizeof(double));
        *F0 = 0.0;
    } else {
        sa_axpy(-c, w, h, d);
        *F0 -= c;
    }
}

/* sa_anchor_rows on float32 scores, in one pass: the kept point ids of row k are appended
   to out (which has room for (k1 - k0) n more), their number to cnt[k] and the band count
   to band[k]. The caller folds the float32 scores' error bound into budget and thr. */
SA_BODY void
sa_anchor_rows32_body(const float* S, int64_t n, const double* thr, const double* budget,
                      const double* xnorm, double h, int64_t k0, int64_t k1, int64_t* cnt,
                      int64_t* band, int32_t* out)
{
    int64_t k, i, o = 0;
    for (k = k0; k < k1; ++k) {
        const float* s = S + k * n;
        const double t = thr[k], B = budget[k];
        int64_t c = 0, bc = 0;
        for (i = 0; i < n; ++i) {
            const double v = (double)s[i] + B * xnorm[i] - t;
            out[o + c] = (int32_t)i;                /* branch-free append */
            c += v > 0.0;
            bc += (v > 0.0) & (v <= h);
        }
        o += c;
        cnt[k] = c;
        band[k] = bc;
    }
}
SA_KERNEL(sa_anchor_rows32,
    (const float* S, int64_t n, const double* thr, const double* budget, const double* xnorm,
     double h, int64_t k0, int64_t k1, int64_t* cnt, int64_t* band, int32_t* out),
    (S, n, thr, budget, xnorm, h, k0, k1, cnt, band, out))

SA_KERNEL(sa_anchor_rows,
    (const double* S, int64_t n, const double* thr, const double* budget,
     const double* xnorm, double h, int64_t k0, int64_t k1, int mode, int64_t* cnt,
     int64_t* band, const int64_t* off, int32_t* out),
    (S, n, thr, budget, xnorm, h, k0, k1, mode, cnt, band, off, out))

/* One pass of the certified engine over neuron-major pairs (docs/design.md §3), in two
   phases. Decisions (sa_nm_pass, parallel over chunks of neurons [r0, r1), each neuron's
   list decided by one thread): the pairs' states and deadlines below, and a record (neuron
   r, point i, on) of every change the sums need, appended to the thread's buffer for the
   block of points that i lies in. Sums (sa_pass_sums, parallel over blocks of points): the
   records of a block, read from the threads' buffers in thread order (= neuron order), applied
   to H, F0 and the counts. The arguments that do not change within a pass travel in
   sa_pass_args:

   Pairs and their state. Pair k = (r, i = cidx[k]) of neuron r's sorted list. st[k] bit 0:
   fired at its last evaluation; bit 1: kept by the refinement (can fire anywhere in the
   ball). With ``kept_only`` only pairs with bit 1 are candidates of the pass (the others
   cannot fire and keep bit 0 clear).
   Deciding a pair: its fired state is <w_r, x_i> > b with the score of sa_dot. With
   ``screen`` it is decided by the float32 screen: the row rounded to float32 with its factor
   er = sa_screen_row (made by the thread that decides the neuron, in its scratch w32),
   x32 = X rounded to float32 and xmax >= max_i |x_i|_2 + 2^-50 (or +inf); a float32 score
   that clears b by e = er xmax (twice its proven error) decides, the others are evaluated by
   sa_dot. Without it, sa_dot decides
   every pair. With ``keep`` (per neuron, keep[r] <= b) bit 1 is set to <w_r, x_i> > keep[r],
   decided the same way, else left as it is.
   Deadlines (optional, ``dl``): the passes share a clock, ``clock`` >= the sum over the
   passes so far of the largest step any point took (attack norm), so that a point moved at
   most clock - c between the passes at clocks c and clock. dl[k] is a clock below which pair
   k's state cannot change: wd[r] is the dual norm of w_r, slack[r] a bound on the round-off
   of scores and clocks. A pair decided now with margin M = |score - b| - (error bound) -
   slack[r] cannot flip before its point moves M / wd[r]: dl[k] = clock + M / wd[r] (rounded
   down to float32), or +inf when M / wd[r] is at least ``cap`` (no later position of the
   point is that far: the ball's radius when the points are its centres, else its diameter),
   and +inf for a pair a fresh pass with ``keep`` does not keep (it cannot fire in the ball).
   A tracked pass (not ``fresh``) evaluates only the pairs with dl[k] <= clock_up, ``clock``
   rounded up to float32 (then ``kept_only`` is implied by the infinite deadlines).
   Sums: ``fresh``: H_i += c w_r, F0_i += c, cnt_i += 1 for every fired pair, c = scale a_r
   (the caller zeroed them); else only a pair whose bit 0 flips adds (on) or removes (off)
   its term (sa_track_flip). Per point in increasing neuron order either way: the bits do not
   depend on the thread count. Scratch per thread: sel (one int32 per listed pair of the
   neuron), w32 (d floats), zs (one float per listed pair of the neuron, plus 3). */
typedef struct {
    const double* X; const float* x32; double xmax;
    const double* W; const double* a;
    double b, scale;
    const int64_t* cptr; const int32_t* cidx;
    uint8_t* st; int screen, fresh, kept_only; const double* keep;
    float* dl; double clock; float clock_up; const double* wd; const double* slack; double cap;
    double* H; double* F0; int64_t* cnt;
} sa_pass_args;

/* Screen thresholds around t: a float32 score above *hi is above t, one at most *lo is not.
   The rounding of t +- e stays below e / 2 when e >= |t| 2^-51; otherwise, and when e is
   infinite (a norm past 2^60: a float32 score may have overflowed to +-inf), both are NaN
   and no comparison holds: every pair goes to float64. */
static inline __attribute__((always_inline)) void
sa_screen_band(double t, double e, double* hi, double* lo)
{
    if (!(e >= fabs(t) * 4.440892098500626e-16) || e == INFINITY) {
        *hi = *lo = NAN;
        return;
    }
    *hi = t + e;
    *lo = t - e;
}

#define SA_PF_H 4
#if defined(__GNUC__)
typedef float sa_v4f __attribute__((vector_size(16), aligned(4)));
typedef long long sa_v4l __attribute__((vector_size(32)));
#if defined(__x86_64__) || defined(__i386__)
typedef double sa_v2d __attribute__((vector_size(16)));
/* bit t set where lane t of a vector comparison holds: the sign bits of the two halves
   (movmskpd, SSE2: every x86-64 build), no lane extraction */
static inline __attribute__((always_inline)) int sa_bits4(sa_v4l m)
{
    const sa_v4d v = (sa_v4d)m;
    const sa_v2d lo = {v[0], v[1]}, hi = {v[2], v[3]};
    return __builtin_ia32_movmskpd(lo) | (__builtin_ia32_movmskpd(hi) << 2);
}
#else
static inline __attribute__((always_inline)) int sa_bits4(sa_v4l m)
{
    return (int)((m[0] & 1) | (m[1] & 2) | (m[2] & 4) | (m[3] & 8));
}
#endif
#endif

/* The states of four float32 scores zs against the band (bh, bl) of b: bit t of *on where
   the score of lane t is above it; returns the lanes the band cannot tell (float64). With
   ``kon`` also against the band (kh, kl) of the keep threshold. */
static inline __attribute__((always_inline)) int
sa_screen4(const float* zs, double bh, double bl, double kh, double kl, int* on, int* kon)
{
#if defined(__GNUC__)
    const sa_v4d z = __builtin_convertvector(*(const sa_v4f*)zs, sa_v4d);
    const sa_v4d vbh = {bh, bh, bh, bh}, vbl = {bl, bl, bl, bl};
    const int up = sa_bits4(z > vbh), down = sa_bits4(z <= vbl);
    int und = ~(up | down);
    *on = up;
    if (kon) {
        const sa_v4d vkh = {kh, kh, kh, kh}, vkl = {kl, kl, kl, kl};
        const int kup = sa_bits4(z > vkh), kdown = sa_bits4(z <= vkl);
        *kon = kup;
        und |= ~(kup | kdown);
    }
#else
    int up = 0, down = 0, kup = 0, kdown = 0, t, und;
    for (t = 0; t < 4; ++t) {
        up |= (zs[t] > bh) << t; down |= (zs[t] <= bl) << t;
        kup |= (zs[t] > kh) << t; kdown |= (zs[t] <= kl) << t;
    }
    *on = up;
    und = ~(up | down);
    if (kon) { *kon = kup; und |= ~(kup | kdown); }
#endif
    return und & 15;
}

/* dl (comment above sa_pass_args) of four pairs decided now at clock p0 with scores z and
   error bounds err; non-kept lanes (bit t of ``drop``) get +inf. Rounded down to float32:
   t (1 - 2^-23) rounds to a float below t. Vector selects on the bits: the margins are data,
   and a float ?: would compile to a mispredicted branch. */
static inline __attribute__((always_inline)) void
sa_deadline4(double p0, const double* z, double b, const double* err, double inv_wd,
             double cap, int drop, float* out)
{
#if defined(__GNUC__)
    typedef int sa_v4i __attribute__((vector_size(16)));
    const sa_v4d vz = {z[0], z[1], z[2], z[3]}, ve = {err[0], err[1], err[2], err[3]};
    const sa_v4d vb = {b, b, b, b}, dz = vz - vb;
    const sa_v4l sign = {INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN};
    const sa_v4d gap = (sa_v4d)((sa_v4l)dz & ~sign);        /* |z - b| */
    const sa_v4d move = (gap - ve) * inv_wd;
    const sa_v4d vcap = {cap, cap, cap, cap}, zero = {0.0, 0.0, 0.0, 0.0};
    const sa_v4d t = (p0 + move) * (1.0 - 1.1920928955078125e-07);
    const sa_v4i lane = {1, 2, 4, 8}, vdrop = {drop, drop, drop, drop};
    const sa_v4i dropm = (vdrop & lane) != 0;
    const sa_v4i never = __builtin_convertvector(move >= vcap, sa_v4i) | dropm;
    const sa_v4i later = __builtin_convertvector(move > zero, sa_v4i) | dropm;
    const sa_v4i inf = {0x7f800000, 0x7f800000, 0x7f800000, 0x7f800000};
    sa_v4i bits = (sa_v4i)__builtin_convertvector(t, sa_v4f);
    bits = ((bits & ~never) | (inf & never)) & later;
    memcpy(out, &bits, sizeof bits);
#else
    int u;
    for (u = 0; u < 4; ++u) {
        const double move = (fabs(z[u] - b) - err[u]) * inv_wd;
        const float f = (float)((p0 + move) * (1.0 - 1.1920928955078125e-07));
        out[u] = ((drop >> u) & 1) || move >= cap ? INFINITY : (move > 0.0 ? f : 0.0f);
    }
#endif
}

/* Growable buffer of records (neuron r, point i, on) coded r << 33 | i << 1 | on: code
   order is neuron order. It starts in a slice of the caller's memory (``owned`` 0: reused
   from pass to pass, no page faults) and moves to the heap if it outgrows it. */
typedef struct { int64_t* v; int64_t n, cap; int owned; } sa_recs;

/* Room for ``extra`` more records (moved to the heap when the caller's slice is too
   small); 0, or -1 when out of memory. */
static inline int sa_recs_reserve(sa_recs* b, int64_t extra)
{
    if (b->n + extra > b->cap) {
        int64_t cap = b->cap ? 2 * b->cap : 4096;
        int64_t* v;
        while (cap < b->n + extra) cap *= 2;
        v = (int64_t*)(b->owned ? realloc(b->v, (size_t)cap * sizeof(int64_t))
                                : malloc((size_t)cap * sizeof(int64_t)));
        if (v == NULL) return -1;
        if (!b->owned && b->n) memcpy(v, b->v, (size_t)b->n * sizeof(int64_t));
        b->v = v;
        b->cap = cap;
        b->owned = 1;
    }
    return 0;
}

static inline int sa_recs_push(sa_recs* b, int64_t code)
{
    if (b->n == b->cap && sa_recs_reserve(b, 1)) return -1;
    b->v[b->n++] = code;
    return 0;
}

/* The sums phase for one block of points: the nt buffers bufs[t * stride] (one per thread of
   the decision phase, which took contiguous ranges of neurons in thread order: one after
   the other, they are in increasing neuron order) applied in that order, with the H and W
   rows of later records prefetched (a record's H row is a random one, usually no longer in
   cache). */
#define SA_PF_FLIP 6
SA_BODY void
sa_pass_sums(const sa_pass_args* A, ptrdiff_t d, const sa_recs* bufs, int64_t nt,
             int64_t stride)
{
    int64_t t, k;
    for (t = 0; t < nt; ++t) {
        const int64_t* v = bufs[t * stride].v;
        const int64_t n = bufs[t * stride].n;
        for (k = 0; k < n; ++k) {
            const int64_t c0 = v[k], r = c0 >> 33, i = (c0 >> 1) & 0xffffffff;
            if (k + SA_PF_FLIP < n) {
                const int64_t rr = v[k + SA_PF_FLIP] >> 33;
                const int64_t ii = (v[k + SA_PF_FLIP] >> 1) & 0xffffffff;
                ptrdiff_t j;
                for (j = 0; j < d; j += 8) {
                    __builtin_prefetch(A->H + ii * d + j, 1, 3);
                    __builtin_prefetch(A->W + rr * d + j, 0, 3);
                }
            }
            sa_track_flip((int)(c0 & 1), A->scale * A->a[r], A->W + r * d, d, A->H + i * d,
                          A->F0 + i, A->cnt + i);
        }
    }
}

SA_BODY void
sa_nm_pass_body(const sa_pass_args* A, ptrdiff_t d, int64_t r0, int64_t r1, int32_t* sel,
                float* w32, float* zs, sa_recs* out, int64_t nblk, const int32_t* block,
                int64_t* n_eval, int64_t* n_exact, int64_t* n_flip, int64_t* n_kept,
                int* failed)
{
    const double* X = A->X;
    const float* x32 = A->x32;
    const double b = A->b;
    const int screen = A->screen, fresh = A->fresh;
    const double* keep = A->keep;
    float* dl = A->dl;
    int64_t r, k, p, q, s, ns, ev = 0, ex = 0, fl = 0, kp = 0, bad = 0;
    for (r = r0; r < r1; ++r) {
        p = A->cptr[r];
        q = A->cptr[r + 1];
        if (p == q) continue;
        {
            const int32_t* ci = A->cidx + p;
            uint8_t* sp = A->st + p;
            float* dp = dl ? dl + p : NULL;
            const int64_t len = q - p;
            const int ident = !(!fresh && dp) && !A->kept_only;
            if (!fresh && dp) {             /* tracked: the pairs past their deadline */
                const float now = A->clock_up;
                ns = 0;
                for (k = 0; k < len; ++k) {
                    sel[ns] = (int32_t)k;
                    ns += dp[k] <= now;
                }
            } else if (A->kept_only) {
                ns = 0;
                for (k = 0; k < len; ++k) { sel[ns] = (int32_t)k; ns += (sp[k] >> 1) & 1; }
            } else {                        /* every pair: sel is the identity, not built */
                ns = len;
            }
            if (ns == 0) continue;          /* the row is not even read */
            ev += ns;
            if (r + 1 < r1) {               /* the next row, while this one is decided */
                ptrdiff_t j;
                for (j = 0; j < d; j += 8) __builtin_prefetch(A->W + (r + 1) * d + j, 0, 3);
            }
        {
            const double* w = A->W + r * d;
            const double kr = keep ? keep[r] : 0.0;
            const double e = screen ? sa_screen_row(w, d, w32) * A->xmax : INFINITY;
            /* a decided pair's margin loses the screen's bound (float64: none) and slack */
            const double sl = dl ? A->slack[r] : 0.0, inv_wd = dl ? 1.0 / A->wd[r] : 0.0;
            int64_t nf = 0;
            double bh, bl, kh = -INFINITY, kl = -INFINITY;
            sa_screen_band(b, e, &bh, &bl);
            if (keep) sa_screen_band(kr, e, &kh, &kl);
#define SA_SEL(t) (ident ? (int32_t)(t) : sel[t])
            /* every float32 score first (independent products, no decision in between: the
               core overlaps them), then the decisions */
            if (screen) {
                for (s = 0; s < ns; s += 4) {
                    const int n4 = (ns - s) < 4 ? (int)(ns - s) : 4;
                    const int32_t i0 = ci[SA_SEL(s)];
                    const int32_t i1 = n4 > 1 ? ci[SA_SEL(s + 1)] : i0;
                    const int32_t i2 = n4 > 2 ? ci[SA_SEL(s + 2)] : i0;
                    const int32_t i3 = n4 > 3 ? ci[SA_SEL(s + 3)] : i0;
                    sa_sdot4(w32, x32 + (int64_t)i0 * d, x32 + (int64_t)i1 * d,
                             x32 + (int64_t)i2 * d, x32 + (int64_t)i3 * d, d, zs + s);
                }
            }
            for (s = 0; s < ns; s += 4) {
                const float* z32 = zs + s;
                double z64[4] = {0.0, 0.0, 0.0, 0.0}, err[4] = {e, e, e, e};
                const int n4 = (ns - s) < 4 ? (int)(ns - s) : 4, valid = (1 << n4) - 1;
                const int32_t i0 = ci[SA_SEL(s)];
                const int32_t i1 = n4 > 1 ? ci[SA_SEL(s + 1)] : i0;
                const int32_t i2 = n4 > 2 ? ci[SA_SEL(s + 2)] : i0;
                const int32_t i3 = n4 > 3 ? ci[SA_SEL(s + 3)] : i0;
                int t, on, kon, slow;
                if (screen) {
                    kon = 0;
                    slow = sa_screen4(z32, bh, bl, kh, kl, &on, keep ? &kon : NULL) & valid;
                    for (t = 0; t < 4; ++t) z64[t] = (double)z32[t];
                    while (slow) {                  /* rare with the screen: float64 */
                        const int u = __builtin_ctz((unsigned)slow);
                        const int64_t i = ci[SA_SEL(s + u)];
                        const double z = sa_dot(w, X + i * d, d);
                        on = (on & ~(1 << u)) | ((z > b) << u);
                        kon = (kon & ~(1 << u)) | ((z > kr) << u);
                        z64[u] = z;
                        err[u] = 0.0;
                        slow &= slow - 1;
                        ++ex;
                    }
                } else {                            /* float64 scores straight away */
                    sa_dot4(w, X + (int64_t)i0 * d, X + (int64_t)i1 * d, X + (int64_t)i2 * d,
                            X + (int64_t)i3 * d, d, z64);
                    on = kon = 0;
                    for (t = 0; t < 4; ++t) {
                        on |= (z64[t] > b) << t;
                        kon |= (z64[t] > kr) << t;
                        err[t] = 0.0;
                    }
                }
                on &= valid;
                if (dp) {
                    float nd[4];
                    for (t = 0; t < 4; ++t) err[t] += sl;
                    /* a fresh pass with keep thresholds: the pairs it does not keep never fire */
                    sa_deadline4(A->clock, z64, b, err, inv_wd, A->cap,
                                 fresh && keep ? ~kon & 15 : 0, nd);
                    if (ident) memcpy(dp + s, nd, (size_t)n4 * sizeof(float));
                    else for (t = 0; t < n4; ++t) dp[sel[s + t]] = nd[t];
                }
                if (fresh) {
                    for (t = 0; t < n4; ++t) {
                        const int32_t kk = SA_SEL(s + t);
                        const int bit = (on >> t) & 1;
                        sp[kk] = (uint8_t)(bit | (keep ? ((kon >> t) & 1) << 1 : sp[kk] & 2));
                        kp += sp[kk] >> 1;
                        sel[nf] = kk;               /* fired pairs, in order, over sel's */
                        nf += bit;                  /* evaluated head (nf <= s + t) */
                    }
                } else {
                    int was = 0, flip;
                    for (t = 0; t < n4; ++t) was |= (sp[SA_SEL(s + t)] & 1) << t;
                    flip = on ^ was;
                    while (flip) {                  /* rare: a pair changes state */
                        const int u = __builtin_ctz((unsigned)flip);
                        const int32_t kk = SA_SEL(s + u);
                        bad |= sa_recs_push(out + block[ci[kk]],
                                            r << 33 | (int64_t)ci[kk] << 1 | ((on >> u) & 1));
                        sp[kk] ^= 1;
                        flip &= flip - 1;
                        ++fl;
                    }
                }
            }
            if (nf) {                               /* fresh: a record per fired pair */
                int64_t j;
                for (j = 0; j < nblk; ++j) bad |= sa_recs_reserve(out + j, nf);
                if (!bad) {
                    for (k = 0; k < nf; ++k) {
                        const int32_t i = ci[sel[k]];
                        sa_recs* o = out + block[i];
                        o->v[o->n++] = r << 33 | (int64_t)i << 1 | 1;
                    }
                }
            }
#undef SA_SEL
        }
        }
    }
    *n_eval += ev;
    *n_exact += ex;
    *n_flip += fl;
    *n_kept += kp;
    if (bad) *failed = 1;
}

SA_KERNEL_D(sa_nm_pass,
    (const sa_pass_args* A, ptrdiff_t d, int64_t r0, int64_t r1, int32_t* sel, float* w32,
     float* zs, sa_recs* out, int64_t nblk, const int32_t* block, int64_t* n_eval,
     int64_t* n_exact, int64_t* n_flip, int64_t* n_kept, int* failed),
    (A, d, r0, r1, sel, w32, zs, out, nblk, block, n_eval, n_exact, n_flip, n_kept, failed),
    (A, sa_d, r0, r1, sel, w32, zs, out, nblk, block, n_eval, n_exact, n_flip, n_kept,
     failed))
#define sa_pass_sums_k_body sa_pass_sums
SA_KERNEL_D(sa_pass_sums_k,
    (const sa_pass_args* A, ptrdiff_t d, const sa_recs* bufs, int64_t nt, int64_t stride),
    (A, d, bufs, nt, stride), (A, sa_d, bufs, nt, stride))

#endif /* SPARSEADV_SA_CERTIFIED_H */
