/* sa_certified.h: the neuron-major kernels of the certified engine (docs/design.md §3):
   forward over candidate pairs, weight gradient, the tracked pass, the anchoring test.
   Declared to Cython in sparseadv/_certified.pxi and sparseadv/_candidates.pxi. */
#ifndef SPARSEADV_SA_CERTIFIED_H
#define SPARSEADV_SA_CERTIFIED_H

#include "sa_simd.h"

/* Neuron-major forward (+ input-gradient helper H) for neurons [r0, r1) restricted to the
   points [lo, hi). Writes only rows lo..hi-1 of f, H, fired. */
SA_BODY void
sa_nm_fwd_body(const double* X, ptrdiff_t d, const double* W, const double* a, double b,
          double scale, const int64_t* cptr, const int32_t* cidx, int64_t r0, int64_t r1,
          int32_t lo, int32_t hi, double* f, double* H, int64_t* fired, uint8_t* mask,
          const double* keep, double* F0, double* zo, int64_t* n_eval, int64_t* n_fired)
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
                    if (zo) zo[k + t] = z;
                    if (z > b) {
                        f[i] += c * (z - b);
                        if (H) sa_axpy(c, w, H + i * d, d);
                        if (F0) F0[i] += c;
                        if (fired) fired[i] += 1;
                        if (mask) mask[k + t] = keep ? 3 : 1;  /* fired: bit 0; kept: bit 1 */
                        ++nf;
                    } else if (mask) {
                        mask[k + t] = (keep && z > keep[r]) ? 2 : 0;
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
    int64_t k, p, ev = 0, nf = 0;
    for (k = k0; k < k1; ++k) {
        const int64_t r = rows[k];
        const double* w = W + r * d;
        const double ar = a[r];
        double* g = G + k * d;
        memset(g, 0, (size_t)d * sizeof(double));
        for (p = cptr[r]; p < cptr[r + 1]; ++p) {
            const int64_t i = cidx[p];
            int on;
            if (mask) {
                on = (mask[p] & 1) != 0;
            } else {
                on = sa_dot(w, X + i * d, d) > b;
                ++ev;
            }
            if (on) {
                sa_axpy(coef[i] * ar, X + i * d, g, d);
                ++nf;
            }
        }
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
     int32_t hi, double* f, double* H, int64_t* fired, uint8_t* mask, const double* keep,
     double* F0, double* zo, int64_t* n_eval, int64_t* n_fired),
    (X, d, W, a, b, scale, cptr, cidx, r0, r1, lo, hi, f, H, fired, mask, keep, F0, zo,
     n_eval, n_fired),
    (X, sa_d, W, a, b, scale, cptr, cidx, r0, r1, lo, hi, f, H, fired, mask, keep, F0, zo,
     n_eval, n_fired))
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

/* Tracked neuron-major pass over a candidate list that stays fixed while the points
   move (the certified engine's refined sets during one iteration's attack). Carried per
   pair k = (r, i): z_last[k], its score when last evaluated, path_last[k], the path length
   mv[i] of point i at that time, st[k] (1 = fired); per point: H_i = sum over fired r of
   scale a_r w_r, F0_i = sum of scale a_r, cnt_i = their number. The score now is within
   g wd[r] of z_last[k], g = min(mv[i] - path_last[k], cap) (path length since then, at most
   the ball's diameter cap; wd[r] the dual norm of w_r), so a pair clear of b by slack[r]
   on either side gets its state without an inner product (a reference at path length 0 is
   the clean point, so there g is at most cap0, the ball's radius: cap0 = cap keeps the
   diameter bound everywhere); the others are evaluated
   (exactly: no pair's state is guessed). A pair whose state flips adds or removes its
   term in H_i, F0_i, cnt_i: per point, in increasing neuron order. Two phases per neuron:
   a scan that decides the clear pairs and lists the others in ``sel`` (thread scratch),
   then those pairs through sa_dot4 in fours, rows prefetched SA_PF pairs ahead. */
SA_BODY void
sa_nm_track_body(const double* X, ptrdiff_t d, const double* W, const double* a,
          double b, double scale, const int64_t* cptr, const int32_t* cidx, int64_t r0,
          int64_t r1, int32_t lo, int32_t hi, double* z_last, double* path_last, uint8_t* st,
          const double* mv, double cap, const double* wd, const double* slack, double* H,
          double* F0, int64_t* cnt, int32_t* sel, int64_t* n_eval, int64_t* n_flip,
          uint8_t* pass_last, const double* hist, int64_t hn, uint8_t pass_now, double cap0)
{
    int64_t r, k, p, q, s, ns, ev = 0, fl = 0;
    for (r = r0; r < r1; ++r) {
        if (!sa_candidates_in_range(cptr, cidx, r, lo, hi, &p, &q)) continue;
        {
            const double* w = W + r * d;
            const double c = scale * a[r], wr = wd[r];
            const double above = b + slack[r], below = b - slack[r];
            const int32_t* ci = cidx + p;
            double* zl = z_last + p;
            /* one of the two: the path length at the last evaluation, or its pass */
            double* pl = path_last ? path_last + p : NULL;
            uint8_t* pp = pass_last ? pass_last + p : NULL;
            uint8_t* sp = st + p;
            const int64_t len = q - p;
            ns = 0;
            for (k = 0; k < len; ++k) {
                const int64_t i = ci[k];
                /* a reference at path length 0 is the clean point: any position of the
                   point is within cap0 (the ball's radius) of it, else within cap */
                const double ref = pl ? pl[k] : hist[pp[k] * hn + i];
                const double gc = ref == 0.0 ? cap0 : cap;
                double g = mv[i] - ref;
                g = g < gc ? g : gc;
                {
                    const double t = g * wr, z = zl[k];
                    const int on = z - t > above, off = z + t <= below, was = sp[k];
                    sel[ns] = (int32_t)k;
                    ns += !(on | off);
                    /* bitwise, not logical, operators: one rarely taken branch */
                    if ((on & (was ^ 1)) | (off & was)) {
                        sa_track_flip(on, c, w, d, H + i * d, F0 + i, cnt + i);
                        sp[k] = (uint8_t)on;
                        ++fl;
                    }
                }
            }
            ev += ns;
            for (s = 0; s < ns; s += 4) {
                double zz[4];
                int t, n4 = (ns - s) < 4 ? (int)(ns - s) : 4;
                for (t = 0; t < 4 && s + SA_PF + t < ns; ++t)
                    sa_prefetch_row(X + (int64_t)ci[sel[s + SA_PF + t]] * d, d);
                if (n4 == 4) {
                    sa_dot4(w, X + (int64_t)ci[sel[s]] * d, X + (int64_t)ci[sel[s + 1]] * d,
                            X + (int64_t)ci[sel[s + 2]] * d,
                            X + (int64_t)ci[sel[s + 3]] * d, d, zz);
                } else {
                    for (t = 0; t < n4; ++t)
                        zz[t] = sa_dot(w, X + (int64_t)ci[sel[s + t]] * d, d);
                }
                for (t = 0; t < n4; ++t) {
                    const int64_t kk = sel[s + t], i = ci[kk];
                    const uint8_t on = zz[t] > b;
                    zl[kk] = zz[t];
                    if (pl) pl[kk] = mv[i]; else pp[kk] = pass_now;
                    if (on != sp[kk]) {
                        sa_track_flip(on, c, w, d, H + i * d, F0 + i, cnt + i);
                        sp[kk] = on;
                        ++fl;
                    }
                }
            }
        }
    }
    *n_eval += ev;
    *n_flip += fl;
}

SA_KERNEL_D(sa_nm_track,
    (const double* X, ptrdiff_t d, const double* W, const double* a, double b, double scale,
     const int64_t* cptr, const int32_t* cidx, int64_t r0, int64_t r1, int32_t lo,
     int32_t hi, double* z_last, double* path_last, uint8_t* st, const double* mv, double cap,
     const double* wd, const double* slack, double* H, double* F0, int64_t* cnt,
     int32_t* sel, int64_t* n_eval, int64_t* n_flip, double cap0),
    (X, d, W, a, b, scale, cptr, cidx, r0, r1, lo, hi, z_last, path_last, st, mv, cap, wd, slack,
     H, F0, cnt, sel, n_eval, n_flip, cap0),
    (X, sa_d, W, a, b, scale, cptr, cidx, r0, r1, lo, hi, z_last, path_last, st, mv, cap, wd, slack,
     H, F0, cnt, sel, n_eval, n_flip, NULL, NULL, 0, 0, cap0))
SA_KERNEL(sa_anchor_rows,
    (const double* S, int64_t n, const double* thr, const double* budget,
     const double* xnorm, double h, int64_t k0, int64_t k1, int mode, int64_t* cnt,
     int64_t* band, const int64_t* off, int32_t* out),
    (S, n, thr, budget, xnorm, h, k0, k1, mode, cnt, band, off, out))

/* The tracked pass with 1 byte per pair instead of a double for the path length at the
   last evaluation: pass_last[k] is the pass in which pair k was last evaluated, and the path
   length of every point at every pass of the iteration is kept in hist (pass-major,
   hist[p * hn + i]; mv = hist + pass_now * hn is the current one). Same decisions, same
   bits as sa_nm_track (the reference path length is the same double). */
SA_BODY void
sa_nm_track_passes_body(const double* X, ptrdiff_t d, const double* W, const double* a,
          double b, double scale, const int64_t* cptr, const int32_t* cidx, int64_t r0,
          int64_t r1, int32_t lo, int32_t hi, double* z_last, uint8_t* pass_last, uint8_t* st,
          const double* hist, int64_t hn, uint8_t pass_now, double cap, const double* wd,
          const double* slack, double* H, double* F0, int64_t* cnt, int32_t* sel,
          int64_t* n_eval, int64_t* n_flip, double cap0)
{
    sa_nm_track_body(X, d, W, a, b, scale, cptr, cidx, r0, r1, lo, hi, z_last, NULL, st,
                     hist + pass_now * hn, cap, wd, slack, H, F0, cnt, sel, n_eval, n_flip,
                     pass_last, hist, hn, pass_now, cap0);
}

SA_KERNEL_D(sa_nm_track_passes,
    (const double* X, ptrdiff_t d, const double* W, const double* a, double b, double scale,
     const int64_t* cptr, const int32_t* cidx, int64_t r0, int64_t r1, int32_t lo,
     int32_t hi, double* z_last, uint8_t* pass_last, uint8_t* st, const double* hist,
     int64_t hn, uint8_t pass_now, double cap, const double* wd, const double* slack,
     double* H, double* F0, int64_t* cnt, int32_t* sel, int64_t* n_eval, int64_t* n_flip,
     double cap0),
    (X, d, W, a, b, scale, cptr, cidx, r0, r1, lo, hi, z_last, pass_last, st, hist, hn,
     pass_now, cap, wd, slack, H, F0, cnt, sel, n_eval, n_flip, cap0),
    (X, sa_d, W, a, b, scale, cptr, cidx, r0, r1, lo, hi, z_last, pass_last, st, hist, hn,
     pass_now, cap, wd, slack, H, F0, cnt, sel, n_eval, n_flip, cap0))

#endif /* SPARSEADV_SA_CERTIFIED_H */
