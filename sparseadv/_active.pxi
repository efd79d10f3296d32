# Active-set kernels: forward, input gradient and weight gradient over a sparse set of
# (point, neuron) pairs, and the helpers of the certified engine (anchoring, CSR surgery).
#
# Two layouts of a pair set:
#
# * NEURON-MAJOR ("candidates"): ``cptr`` (m + 1, int64) and ``cidx`` (int32 point ids), the
#   points of neuron r in cidx[cptr[r]:cptr[r+1]], sorted increasingly within each neuron.
#   This is the fast layout (DESIGN.md §3): a weight row is loaded once and its points are
#   gathered from X, which stays in cache.
# * POINT-MAJOR: ``indptr`` (n + 1, int64) and ``indices`` (int64 neuron ids), the layout of
#   ``dense_fired_pairs`` and of a tree query; any order within a point.
#
# Every kernel evaluates z = <w_r, x_i> for every listed pair and only uses the pairs with
# z > b, so a superset of the fired pairs may be passed. They return the number of inner
# products evaluated and the number of pairs that fired. The exception is the tracked pass
# (``nm_track_forward``): over a list that stays fixed while the points move, it carries each
# pair's last score and decides most pairs by two-sided bounds, evaluating only the rest.
#
# Parallelism and determinism. The neuron-major forward kernel splits the POINTS into one
# contiguous block per thread and walks the neurons in chunks (a chunk of W, ~512 KB, is read
# from memory once and shared by the threads through the L3 cache); within its block a thread
# finds each neuron's sub-list by binary search. Every point therefore accumulates its
# contributions in increasing neuron order, whatever the thread count: results are bitwise
# independent of the number of threads (and of the blocking). The weight-gradient kernel is
# parallel over neurons (no collisions); each neuron sums its points in increasing order.
# The point-major forward kernel is parallel over points; with neuron ids sorted within each
# point it produces the same bits as the neuron-major kernel on the same pairs. The tracked
# pass splits points like the forward kernel and adds or removes a point's terms in
# increasing neuron order within a pass. No atomics.
#
# The inner loops are C (below) with explicit 4-wide vector accumulators. With GCC or clang on
# x86, each kernel is instantiated twice, once with __attribute__((target("avx2,fma"))) and
# once for the baseline ISA, and a small wrapper dispatches on CPU features detected once at
# import (``sa_cpu_init``; manual dispatch, not target_clones): the package is built without
# -march=native. FMA contraction in the AVX2 build means the last bits can differ between CPUs
# (not between thread counts).

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* Runtime dispatch: each kernel body is an always-inline function, instantiated twice,
       once compiled for AVX2+FMA and once for the baseline ISA; sa_cpu_init() (called at
       import) picks one by CPU features (not by CPU model, which is what target_clones'
       arch= clones test). */
    #if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(SA_NO_DISPATCH)
    #define SA_DISPATCH 1
    #define SA_AVX2 __attribute__((target("avx2,fma")))
    #else
    #define SA_DISPATCH 0
    #endif
    #define SA_BODY static inline __attribute__((always_inline))
    static int sa_use_avx2 = 0;
    static int sa_cpu_init(void)
    {
    #if SA_DISPATCH
        __builtin_cpu_init();
        sa_use_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    #endif
        return sa_use_avx2;
    }
    #if SA_DISPATCH
    #define SA_KERNEL(name, params, args) \
        SA_AVX2 static void name##_avx2 params { name##_body args; } \
        static void name##_base params { name##_body args; } \
        static void name params { if (sa_use_avx2) name##_avx2 args; else name##_base args; }
    #else
    #define SA_KERNEL(name, params, args) \
        static void name params { name##_body args; }
    #endif

    /* The canonical dot product: two 4-wide accumulators (lanes j mod 8 < 4 and >= 4) over
       blocks of 8, a last block of 4 into the first, then a fixed-order horizontal sum and
       the scalar tail. sa_dot4 computes four of them with exactly the same operations, so a
       pair's score does not depend on how the candidates are grouped. */
    #if defined(__GNUC__)
    typedef double sa_v4d __attribute__((vector_size(32), aligned(8)));
    #define SA_LD(p) (*(const sa_v4d*)(p))
    static inline __attribute__((always_inline)) double sa_hsum(sa_v4d a, sa_v4d b)
    {
        a = a + b;
        return (a[0] + a[1]) + (a[2] + a[3]);
    }
    static inline __attribute__((always_inline)) double
    sa_dot(const double* w, const double* x, Py_ssize_t d)
    {
        sa_v4d a = {0.0, 0.0, 0.0, 0.0}, b = a;
        Py_ssize_t j = 0;
        double s;
        for (; j + 8 <= d; j += 8) {
            a += SA_LD(w + j) * SA_LD(x + j);
            b += SA_LD(w + j + 4) * SA_LD(x + j + 4);
        }
        if (j + 4 <= d) { a += SA_LD(w + j) * SA_LD(x + j); j += 4; }
        s = sa_hsum(a, b);
        for (; j < d; ++j) s += w[j] * x[j];
        return s;
    }
    static inline __attribute__((always_inline)) void
    sa_dot4(const double* w, const double* x0, const double* x1, const double* x2,
            const double* x3, Py_ssize_t d, double* z)
    {
        sa_v4d a0 = {0.0, 0.0, 0.0, 0.0}, a1 = a0, a2 = a0, a3 = a0;
        sa_v4d b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        Py_ssize_t j = 0, t;
        for (; j + 8 <= d; j += 8) {
            const sa_v4d u = SA_LD(w + j), v = SA_LD(w + j + 4);
            a0 += u * SA_LD(x0 + j); b0 += v * SA_LD(x0 + j + 4);
            a1 += u * SA_LD(x1 + j); b1 += v * SA_LD(x1 + j + 4);
            a2 += u * SA_LD(x2 + j); b2 += v * SA_LD(x2 + j + 4);
            a3 += u * SA_LD(x3 + j); b3 += v * SA_LD(x3 + j + 4);
        }
        if (j + 4 <= d) {
            const sa_v4d u = SA_LD(w + j);
            a0 += u * SA_LD(x0 + j); a1 += u * SA_LD(x1 + j);
            a2 += u * SA_LD(x2 + j); a3 += u * SA_LD(x3 + j);
            j += 4;
        }
        z[0] = sa_hsum(a0, b0); z[1] = sa_hsum(a1, b1);
        z[2] = sa_hsum(a2, b2); z[3] = sa_hsum(a3, b3);
        for (t = j; t < d; ++t) z[0] += w[t] * x0[t];
        for (t = j; t < d; ++t) z[1] += w[t] * x1[t];
        for (t = j; t < d; ++t) z[2] += w[t] * x2[t];
        for (t = j; t < d; ++t) z[3] += w[t] * x3[t];
    }
    #else
    static inline double sa_dot(const double* w, const double* x, Py_ssize_t d)
    {
        double a[4] = {0.0, 0.0, 0.0, 0.0}, b[4] = {0.0, 0.0, 0.0, 0.0}, s;
        Py_ssize_t j = 0, l;
        for (; j + 8 <= d; j += 8)
            for (l = 0; l < 4; ++l) { a[l] += w[j + l] * x[j + l]; b[l] += w[j + 4 + l] * x[j + 4 + l]; }
        if (j + 4 <= d) { for (l = 0; l < 4; ++l) a[l] += w[j + l] * x[j + l]; j += 4; }
        for (l = 0; l < 4; ++l) a[l] += b[l];
        s = (a[0] + a[1]) + (a[2] + a[3]);
        for (; j < d; ++j) s += w[j] * x[j];
        return s;
    }
    static inline void sa_dot4(const double* w, const double* x0, const double* x1,
                               const double* x2, const double* x3, Py_ssize_t d, double* z)
    {
        z[0] = sa_dot(w, x0, d); z[1] = sa_dot(w, x1, d);
        z[2] = sa_dot(w, x2, d); z[3] = sa_dot(w, x3, d);
    }
    #endif

    static inline void sa_axpy(double alpha, const double* x, double* y, Py_ssize_t d)
    {
        Py_ssize_t j;
        for (j = 0; j < d; ++j) y[j] += alpha * x[j];
    }

    /* Rows gathered at random are prefetched a few pairs ahead: rows of X in the tracked
       kernel (a thread's X and H rows together do not fit in L2), rows of W in the
       point-major forward (measured at m = 2^18, d = 3: 0.044 -> 0.025 s per pass). */
    #define SA_PF 8
    #define SA_PF_PM 16
    static inline __attribute__((always_inline)) void
    sa_prefetch_row(const double* p, Py_ssize_t d)
    {
        Py_ssize_t j;
        for (j = 0; j < d; j += 8) __builtin_prefetch(p + j, 0, 3);
    }

    static inline int64_t sa_lower_bound(const int32_t* v, int64_t p, int64_t q, int32_t key)
    {
        while (p < q) {
            int64_t mid = p + ((q - p) >> 1);
            if (v[mid] < key) p = mid + 1; else q = mid;
        }
        return p;
    }

    /* Neuron-major forward (+ input-gradient helper H) for neurons [r0, r1) restricted to the
       points [lo, hi). Writes only rows lo..hi-1 of f, H, fired. */
    SA_BODY void
    sa_nm_fwd_body(const double* X, Py_ssize_t d, const double* W, const double* a, double b,
              double scale, const int64_t* cptr, const int32_t* cidx, int64_t r0, int64_t r1,
              int32_t lo, int32_t hi, double* f, double* H, int64_t* fired, uint8_t* mask,
              const double* keep, double* F0, double* zo, int64_t* n_eval, int64_t* n_fired)
    {
        int64_t r, k, p, q, ev = 0, nf = 0;
        for (r = r0; r < r1; ++r) {
            p = cptr[r]; q = cptr[r + 1];
            if (p == q) continue;
            if (cidx[p] < lo) p = sa_lower_bound(cidx, p, q, lo);
            if (p < q && cidx[q - 1] >= hi) q = sa_lower_bound(cidx, p, q, hi);
            if (p >= q) continue;
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
    sa_nm_wgrad_body(const double* X, Py_ssize_t d, const double* W, const double* a, double b,
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

    /* Point-major forward (+ H) for points [i0, i1). */
    SA_BODY void
    sa_pm_fwd_body(const double* X, Py_ssize_t d, const double* W, const double* a, double b,
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

    SA_KERNEL(sa_nm_fwd,
        (const double* X, Py_ssize_t d, const double* W, const double* a, double b, double scale,
         const int64_t* cptr, const int32_t* cidx, int64_t r0, int64_t r1, int32_t lo,
         int32_t hi, double* f, double* H, int64_t* fired, uint8_t* mask, const double* keep,
         double* F0, double* zo, int64_t* n_eval, int64_t* n_fired),
        (X, d, W, a, b, scale, cptr, cidx, r0, r1, lo, hi, f, H, fired, mask, keep, F0, zo,
         n_eval, n_fired))
    SA_KERNEL(sa_nm_wgrad,
        (const double* X, Py_ssize_t d, const double* W, const double* a, double b,
         const double* coef, const int64_t* cptr, const int32_t* cidx, const uint8_t* mask,
         const int64_t* rows, int64_t k0, int64_t k1, double* G, int64_t* n_eval,
         int64_t* n_fired),
        (X, d, W, a, b, coef, cptr, cidx, mask, rows, k0, k1, G, n_eval, n_fired))
    /* A pair of point i starts (on) or stops firing: add or remove c w_r in H_i, c in F0_i.
       When the last fired neuron of a point stops, H_i and F0_i are reset to exact zeros
       (a fresh sum has no terms; removing the terms would leave round-off, whose signs an
       l-inf attack would follow). */
    static inline __attribute__((always_inline)) void
    sa_track_flip(int on, double c, const double* w, Py_ssize_t d, double* h, double* F0,
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
       pair k = (r, i): zref[k], its score when last evaluated, mref[k], the path length
       mv[i] of point i at that time, st[k] (1 = fired); per point: H_i = sum over fired r of
       scale a_r w_r, F0_i = sum of scale a_r, cnt_i = their number. The score now is within
       g wd[r] of zref[k], g = min(mv[i] - mref[k], cap) (path length since then, at most
       the ball's diameter cap; wd[r] the dual norm of w_r), so a pair clear of b by slack[r]
       on either side gets its state without an inner product; the others are evaluated
       (exactly: no pair's state is guessed). A pair whose state flips adds or removes its
       term in H_i, F0_i, cnt_i: per point, in increasing neuron order. Two phases per neuron:
       a scan that decides the clear pairs and lists the others in ``sel`` (thread scratch),
       then those pairs through sa_dot4 in fours, rows prefetched SA_PF pairs ahead. */
    SA_BODY void
    sa_nm_track_body(const double* X, Py_ssize_t d, const double* W, const double* a,
              double b, double scale, const int64_t* cptr, const int32_t* cidx, int64_t r0,
              int64_t r1, int32_t lo, int32_t hi, double* zref, double* mref, uint8_t* st,
              const double* mv, double cap, const double* wd, const double* slack, double* H,
              double* F0, int64_t* cnt, int32_t* sel, int64_t* n_eval, int64_t* n_flip)
    {
        int64_t r, k, p, q, s, ns, ev = 0, fl = 0;
        for (r = r0; r < r1; ++r) {
            p = cptr[r]; q = cptr[r + 1];
            if (p == q) continue;
            if (cidx[p] < lo) p = sa_lower_bound(cidx, p, q, lo);
            if (p < q && cidx[q - 1] >= hi) q = sa_lower_bound(cidx, p, q, hi);
            if (p >= q) continue;
            {
                const double* w = W + r * d;
                const double c = scale * a[r], wr = wd[r];
                const double above = b + slack[r], below = b - slack[r];
                const int32_t* ci = cidx + p;
                double* zp = zref + p;
                double* mp = mref + p;
                uint8_t* sp = st + p;
                const int64_t len = q - p;
                ns = 0;
                for (k = 0; k < len; ++k) {
                    const int64_t i = ci[k];
                    double g = mv[i] - mp[k];
                    g = g < cap ? g : cap;
                    {
                        const double t = g * wr, z = zp[k];
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
                        zp[kk] = zz[t];
                        mp[kk] = mv[i];
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

    SA_KERNEL(sa_nm_track,
        (const double* X, Py_ssize_t d, const double* W, const double* a, double b, double scale,
         const int64_t* cptr, const int32_t* cidx, int64_t r0, int64_t r1, int32_t lo,
         int32_t hi, double* zref, double* mref, uint8_t* st, const double* mv, double cap,
         const double* wd, const double* slack, double* H, double* F0, int64_t* cnt,
         int32_t* sel, int64_t* n_eval, int64_t* n_flip),
        (X, d, W, a, b, scale, cptr, cidx, r0, r1, lo, hi, zref, mref, st, mv, cap, wd, slack,
         H, F0, cnt, sel, n_eval, n_flip))
    SA_KERNEL(sa_pm_fwd,
        (const double* X, Py_ssize_t d, const double* W, const double* a, double b, double scale,
         const int64_t* indptr, const int64_t* indices, int64_t i0, int64_t i1, double* f,
         double* H, int64_t* fired, int64_t* n_eval, int64_t* n_fired),
        (X, d, W, a, b, scale, indptr, indices, i0, i1, f, H, fired, n_eval, n_fired))
    SA_KERNEL(sa_anchor_rows,
        (const double* S, int64_t n, const double* thr, const double* budget,
         const double* xnorm, double h, int64_t k0, int64_t k1, int mode, int64_t* cnt,
         int64_t* band, const int64_t* off, int32_t* out),
        (S, n, thr, budget, xnorm, h, k0, k1, mode, cnt, band, off, out))
    """
    int sa_cpu_init() noexcept nogil
    void sa_nm_fwd(const double* X, Py_ssize_t d, const double* W, const double* a, double b,
                   double scale, const cnp.int64_t* cptr, const cnp.int32_t* cidx,
                   cnp.int64_t r0, cnp.int64_t r1, cnp.int32_t lo, cnp.int32_t hi, double* f,
                   double* H, cnp.int64_t* fired, cnp.uint8_t* mask, const double* keep,
                   double* F0, double* zo, cnp.int64_t* n_eval,
                   cnp.int64_t* n_fired) noexcept nogil
    void sa_nm_wgrad(const double* X, Py_ssize_t d, const double* W, const double* a, double b,
                     const double* coef, const cnp.int64_t* cptr, const cnp.int32_t* cidx,
                     const cnp.uint8_t* mask, const cnp.int64_t* rows, cnp.int64_t k0,
                     cnp.int64_t k1, double* G, cnp.int64_t* n_eval,
                     cnp.int64_t* n_fired) noexcept nogil
    void sa_pm_fwd(const double* X, Py_ssize_t d, const double* W, const double* a, double b,
                   double scale, const cnp.int64_t* indptr, const cnp.int64_t* indices,
                   cnp.int64_t i0, cnp.int64_t i1, double* f, double* H, cnp.int64_t* fired,
                   cnp.int64_t* n_eval, cnp.int64_t* n_fired) noexcept nogil
    void sa_anchor_rows(const double* S, cnp.int64_t n, const double* thr, const double* budget,
                        const double* xnorm, double h, cnp.int64_t k0, cnp.int64_t k1, int mode,
                        cnp.int64_t* cnt, cnp.int64_t* band, const cnp.int64_t* off,
                        cnp.int32_t* out) noexcept nogil
    void sa_nm_track(const double* X, Py_ssize_t d, const double* W, const double* a, double b,
                     double scale, const cnp.int64_t* cptr, const cnp.int32_t* cidx,
                     cnp.int64_t r0, cnp.int64_t r1, cnp.int32_t lo, cnp.int32_t hi,
                     double* zref, double* mref, cnp.uint8_t* st, const double* mv, double cap,
                     const double* wd, const double* slack, double* H, double* F0,
                     cnp.int64_t* cnt, cnp.int32_t* sel, cnp.int64_t* n_eval,
                     cnp.int64_t* n_flip) noexcept nogil
    double sa_dot(const double* x, const double* y, Py_ssize_t d) noexcept nogil


cdef int _SA_AVX2 = sa_cpu_init()


def active_kernels_simd():
    """'avx2+fma' when the active-set kernels run their AVX2+FMA build, else 'baseline'."""
    return "avx2+fma" if _SA_AVX2 else "baseline"


# ------------------------------------------------------------------------------------------
# validation helpers (O(nnz) integer scans; the O(nnz d) kernels dominate)

cdef int _check_offsets(const cnp.int64_t[::1] ptr, Py_ssize_t nnz) noexcept nogil:
    """0 if ptr (at least one entry) starts at 0, never decreases and ends at nnz, else 1."""
    cdef Py_ssize_t m = ptr.shape[0] - 1, r
    if m < 0 or ptr[0] != 0 or ptr[m] != nnz:
        return 1
    for r in range(m):
        if ptr[r + 1] < ptr[r]:
            return 1
    return 0


cdef int _rows_in_range(const cnp.int64_t[::1] rows, Py_ssize_t m) noexcept nogil:
    """1 if every entry of rows is in [0, m), else 0."""
    cdef Py_ssize_t k
    for k in range(rows.shape[0]):
        if rows[k] < 0 or rows[k] >= m:
            return 0
    return 1


cdef int _check_nm_csr(const cnp.int64_t[::1] cptr, const cnp.int32_t[::1] cidx,
                       Py_ssize_t n) noexcept nogil:
    """0 if cptr is a valid offsets array over cidx and every row is strictly increasing within
    [0, n); 1 bad offsets, 2 index out of range, 3 unsorted row."""
    cdef Py_ssize_t m = cptr.shape[0] - 1, r
    cdef cnp.int64_t k
    if _check_offsets(cptr, cidx.shape[0]) != 0:
        return 1
    for r in range(m):
        for k in range(cptr[r], cptr[r + 1]):
            if cidx[k] < 0 or cidx[k] >= n:
                return 2
            if k > cptr[r] and cidx[k] <= cidx[k - 1]:
                return 3
    return 0


def _raise_csr(int code, str what):
    if code == 1:
        raise ValueError(f"{what}: offsets must start at 0, be non-decreasing and end at the "
                         f"number of indices")
    if code == 2:
        raise ValueError(f"{what}: index out of range")
    if code == 3:
        raise ValueError(f"{what}: indices must be strictly increasing within each row")


cdef int _check_pm_csr(const cnp.int64_t[::1] indptr, const cnp.int64_t[::1] indices,
                       Py_ssize_t m) noexcept nogil:
    cdef cnp.int64_t k
    if _check_offsets(indptr, indices.shape[0]) != 0:
        return 1
    for k in range(indices.shape[0]):
        if indices[k] < 0 or indices[k] >= m:
            return 2
    return 0


cdef inline Py_ssize_t _nthreads() noexcept nogil:
    cdef int t = sa_omp_max_threads()
    return t if t > 0 else 1


cdef inline Py_ssize_t _neuron_chunk(Py_ssize_t d) noexcept nogil:
    """Neurons per chunk of the neuron-major passes: ~512 KB of W (65536 doubles), at least 64
    neurons, 128 when d >= 512. d >= 1 (checked by the callers)."""
    cdef Py_ssize_t chunk = 65536 // d if d < 512 else 128
    return chunk if chunk >= 64 else 64


cdef tuple _point_blocks(Py_ssize_t n):
    """One contiguous block of points per thread (at most n blocks, at least one): (bounds
    (nb + 1,) int64 with block j = [bounds[j], bounds[j + 1]), counters (2, nb) int64 zeros,
    one row per work counter)."""
    cdef Py_ssize_t nb = _nthreads()
    if nb > n:
        nb = n if n > 0 else 1
    return (np.arange(nb + 1, dtype=np.int64) * n) // nb, np.zeros((2, nb), dtype=np.int64)


# ------------------------------------------------------------------------------------------
# (a) neuron-major kernels

def nm_forward(const double[:, ::1] X, const double[:, ::1] W, const double[::1] a, double b,
               double scale, const cnp.int64_t[::1] cptr, const cnp.int32_t[::1] cidx,
               double[::1] f_out, double[:, ::1] H_out=None, cnp.int64_t[::1] fired_out=None,
               cnp.uint8_t[::1] mask_out=None, bint check=True,
               const double[::1] keep_thr=None, double[::1] F0_out=None,
               double[::1] z_out=None):
    """Forward pass over neuron-major candidate pairs (outputs overwritten):

    f_i = scale * sum_{r: i in cand(r), <w_r,x_i> > b} a_r (<w_r,x_i> - b),
    H_i = scale * sum_{same r} a_r w_r  (optional; grad_x loss_i = (f_i - y_i) H_i),
    fired_i = number of those r (optional), mask[k] bit 0 set iff pair k of cidx fired
    (optional); with ``keep_thr`` (per neuron), bit 1 of mask[k] is set iff <w_r, x_i> >
    keep_thr[r] (the pair survives into the next pass's candidate list, see
    ``compact_pairs``), under the precondition keep_thr[r] <= b (not checked): bit 1 is set
    for every fired pair whatever keep_thr[r]; F0_i = scale * sum_{same r} a_r (optional);
    z_out[k] = <w_r, x_i> for every pair (optional): with H, F0 and fired, the start state of
    ``nm_track_forward``.

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
        raise ValueError("nm_forward: X must have at least one column")
    if W.shape[1] != d or a.shape[0] != m or cptr.shape[0] != m + 1 or f_out.shape[0] != n:
        raise ValueError("nm_forward: inconsistent shapes")
    if n >= 2 ** 31 - 1:
        raise ValueError("nm_forward: n must be < 2**31")
    if H_out is not None:
        if H_out.shape[0] != n or H_out.shape[1] != d:
            raise ValueError("nm_forward: H_out must have shape (n, d)")
        Hp = &H_out[0, 0]
    if fired_out is not None:
        if fired_out.shape[0] != n:
            raise ValueError("nm_forward: fired_out must have length n")
        Fp = &fired_out[0]
    if mask_out is not None:
        if mask_out.shape[0] != cidx.shape[0]:
            raise ValueError("nm_forward: mask_out must have the length of cidx")
        if mask_out.shape[0] > 0:
            Mp = &mask_out[0]
    cdef const double* Kp = NULL
    if keep_thr is not None:
        if keep_thr.shape[0] != m:
            raise ValueError("nm_forward: keep_thr must have length m")
        if Mp == NULL and cidx.shape[0] > 0:
            raise ValueError("nm_forward: keep_thr needs mask_out")
        if m > 0:
            Kp = &keep_thr[0]
    cdef double* F0p = NULL
    cdef double* Zp = NULL
    if F0_out is not None:
        if F0_out.shape[0] != n:
            raise ValueError("nm_forward: F0_out must have length n")
        if n > 0:
            F0p = &F0_out[0]
            F0_out[:] = 0.0
    if z_out is not None:
        if z_out.shape[0] != cidx.shape[0]:
            raise ValueError("nm_forward: z_out must have the length of cidx")
        if z_out.shape[0] > 0:
            Zp = &z_out[0]
    if check:
        with nogil:
            code = _check_nm_csr(cptr, cidx, n)
        _raise_csr(code, "nm_forward")
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
                          Mp, Kp, F0p, Zp, &cnt[0, j], &cnt[1, j])
                c0 = c1
    return int(counters[0].sum()), int(counters[1].sum())


def nm_track_forward(const double[:, ::1] X, const double[:, ::1] W, const double[::1] a,
                     double b, double scale, const cnp.int64_t[::1] cptr,
                     const cnp.int32_t[::1] cidx, double[::1] zref, double[::1] mref,
                     cnp.uint8_t[::1] state, const double[::1] path, double cap,
                     const double[::1] wd, const double[::1] slack, double[:, ::1] H,
                     double[::1] F0, cnp.int64_t[::1] fired, double[::1] f_out,
                     bint check=True):
    """One pass of a tracked forward over a candidate list that stays fixed while the points
    move. The state (all updated in place) is, per pair k of cidx: zref[k], the score when
    last evaluated, mref[k], the point's path length then, state[k] (1 = fired); per point:
    H (n x d, scale * sum of a_r w_r over its fired r), F0 (scale * sum of those a_r), fired
    (their number). ``path[i]``: path length of point i so far in the norm that ``wd``
    (per neuron) is dual to; ``cap``: bound on the distance between any two positions of a
    point (the diameter of its ball). Start state: ``nm_forward``'s z_out, H, F0, fired and
    mask bit 0 at the start points, with mref = path. A pair is evaluated only when
    zref[k] -+ min(path[i] - mref[k], cap) wd[r] does not clear b by slack[r]; a pair whose
    state flips updates H, F0, fired. Then f_out[i] = <H_i, x_i> - b F0_i (overwritten).
    Lists must be sorted within each neuron (checked when ``check``). Returns (inner
    products: pairs evaluated + n for f, state flips)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], m = W.shape[0]
    cdef Py_ssize_t nb, j, c0, c1, chunk, i
    cdef Py_ssize_t nnz = cidx.shape[0]
    cdef int code
    if d < 1:
        raise ValueError("nm_track_forward: X must have at least one column")
    if (W.shape[1] != d or a.shape[0] != m or cptr.shape[0] != m + 1 or f_out.shape[0] != n
            or zref.shape[0] != nnz or mref.shape[0] != nnz or state.shape[0] != nnz
            or path.shape[0] != n or wd.shape[0] != m or slack.shape[0] != m
            or H.shape[0] != n or H.shape[1] != d or F0.shape[0] != n or fired.shape[0] != n):
        raise ValueError("nm_track_forward: inconsistent shapes")
    if n >= 2 ** 31 - 1:
        raise ValueError("nm_track_forward: n must be < 2**31")
    if not cap >= 0:
        raise ValueError("nm_track_forward: cap must be >= 0")
    if check:
        with nogil:
            code = _check_nm_csr(cptr, cidx, n)
        _raise_csr(code, "nm_track_forward")
    if n == 0:
        return 0, 0
    bounds, counters = _point_blocks(n)
    cdef cnp.int64_t[::1] bd = bounds
    cdef cnp.int64_t[:, ::1] cnt = counters
    nb = bd.shape[0] - 1
    # per-thread scratch for the offsets to evaluate: a thread's part of a list has at most
    # as many pairs as its point range has points
    scratch = np.empty((nb, (n + nb - 1) // nb + 1), dtype=np.int32)
    cdef cnp.int32_t[:, ::1] sel = scratch
    cdef const cnp.int32_t* Cp = &cidx[0] if nnz > 0 else NULL
    cdef double* Zp = &zref[0] if nnz > 0 else NULL
    cdef double* Rp = &mref[0] if nnz > 0 else NULL
    cdef cnp.uint8_t* Sp = &state[0] if nnz > 0 else NULL
    chunk = _neuron_chunk(d)
    with nogil:
        for j in prange(nb, schedule='static', num_threads=nb):
            if nnz > 0:
                c0 = 0
                while c0 < m:
                    c1 = c0 + chunk if c0 + chunk < m else m
                    sa_nm_track(&X[0, 0], d, &W[0, 0], &a[0], b, scale, &cptr[0], Cp, c0, c1,
                                <cnp.int32_t>bd[j], <cnp.int32_t>bd[j + 1], Zp, Rp, Sp,
                                &path[0], cap, &wd[0], &slack[0], &H[0, 0], &F0[0],
                                &fired[0], &sel[j, 0], &cnt[0, j], &cnt[1, j])
                    c0 = c1
            for i in range(bd[j], bd[j + 1]):
                f_out[i] = sa_dot(&H[i, 0], &X[i, 0], d) - b * F0[i]
    return int(counters[0].sum()) + n, int(counters[1].sum())


def nm_weight_grad(const double[:, ::1] X, const double[:, ::1] W, const double[::1] a,
                   double b, const double[::1] coef, const cnp.int64_t[::1] cptr,
                   const cnp.int32_t[::1] cidx, const cnp.int64_t[::1] rows,
                   double[:, ::1] G_out, const cnp.uint8_t[::1] mask=None, bint check=True):
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
    if W.shape[1] != d or a.shape[0] != m or cptr.shape[0] != m + 1 or coef.shape[0] != n:
        raise ValueError("nm_weight_grad: inconsistent shapes")
    if G_out.shape[0] != nr or G_out.shape[1] != d:
        raise ValueError("nm_weight_grad: G_out must have shape (len(rows), d)")
    if mask is not None:
        if mask.shape[0] != cidx.shape[0]:
            raise ValueError("nm_weight_grad: mask must have the length of cidx")
        if mask.shape[0] > 0:
            Mp = &mask[0]
    if check:
        with nogil:
            code = _check_nm_csr(cptr, cidx, n)
            if code == 0 and not _rows_in_range(rows, m):
                code = 2
        _raise_csr(code, "nm_weight_grad")
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


def _out_int32(out, Py_ssize_t size, Py_ssize_t need, str what):
    """The head of length ``size`` of a caller's int32 output buffer (which must hold at least
    ``need`` entries), or a new array when ``out`` is None."""
    if out is None:
        return np.empty(size, dtype=np.int32)
    if not isinstance(out, np.ndarray) or out.dtype != np.int32 or out.ndim != 1 \
            or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"{what}: out_idx must be a writeable contiguous 1-d int32 array")
    if out.shape[0] < need:
        raise ValueError(f"{what}: out_idx must have at least {need} entries, got "
                         f"{out.shape[0]}")
    return out[:size]


def compact_pairs(const cnp.int64_t[::1] cptr, const cnp.int32_t[::1] cidx,
                  const cnp.uint8_t[::1] mask, int bit, out_idx=None,
                  const double[::1] vals=None, double[::1] out_vals=None,
                  cnp.uint8_t[::1] out_bit0=None):
    """The sub-CSR of the pairs whose ``mask`` has bit ``bit`` set (neuron-major, order kept).

    Used by the certified engine to carry the pairs that can still fire into the next pass.
    Parallel over blocks of neurons (count, prefix sum, copy); the result does not depend on
    the blocking. ``out_idx``: optional int32 array with room for the result (len(cidx) is
    always enough), not overlapping cidx, to write into (the result is a view of its head).
    With ``vals`` (one per pair), ``out_vals`` receives the kept pairs' values, and with
    ``out_bit0`` the kept pairs' mask bit 0 (both at least as long as the result; the
    certified engine's start state for ``nm_track_forward``)."""
    cdef Py_ssize_t m = cptr.shape[0] - 1, r, k, j, nb
    cdef cnp.int64_t c
    cdef cnp.uint8_t flag = <cnp.uint8_t>(1 << bit)
    if mask.shape[0] != cidx.shape[0]:
        raise ValueError("compact_pairs: mask must have the length of cidx")
    if m < 0 or cptr[0] != 0 or cptr[m] != cidx.shape[0]:
        raise ValueError("compact_pairs: offsets must start at 0 and end at len(cidx)")
    counts = np.zeros(m + 1, dtype=np.int64)
    cdef cnp.int64_t[::1] cnt = counts
    # blocks of neurons with about equal numbers of pairs, several per thread
    nb = 8 * _nthreads()
    if nb > m:
        nb = m if m > 0 else 1
    bounds = np.searchsorted(np.asarray(cptr), np.linspace(0, cptr[m], nb + 1)[1:-1])
    blk = np.concatenate(([0], np.minimum(bounds, m), [m])).astype(np.int64)
    cdef cnp.int64_t[::1] bl = blk
    with nogil:
        for j in prange(nb, schedule='dynamic'):
            for r in range(bl[j], bl[j + 1]):
                c = 0
                for k in range(cptr[r], cptr[r + 1]):
                    c = c + ((mask[k] & flag) != 0)
                cnt[r + 1] = c
    out_ptr = np.cumsum(counts)
    cdef cnp.int64_t[::1] op = out_ptr
    out_idx = _out_int32(out_idx, op[m], op[m], "compact_pairs")
    if op[m] > 0 and np.may_share_memory(out_idx, np.asarray(cidx)):
        raise ValueError("compact_pairs: out_idx must not overlap cidx")
    cdef cnp.int32_t[::1] oi = out_idx
    cdef const double* Vp = NULL
    cdef double* OVp = NULL
    cdef cnp.uint8_t* OBp = NULL
    if (vals is None) != (out_vals is None):
        raise ValueError("compact_pairs: vals and out_vals go together")
    if vals is not None:
        if vals.shape[0] != cidx.shape[0] or out_vals.shape[0] < op[m]:
            raise ValueError("compact_pairs: vals must have the length of cidx and out_vals "
                             "room for the result")
        if op[m] > 0:
            Vp = &vals[0]
            OVp = &out_vals[0]
    if out_bit0 is not None:
        if out_bit0.shape[0] < op[m]:
            raise ValueError("compact_pairs: out_bit0 must have room for the result")
        if op[m] > 0:
            OBp = &out_bit0[0]
    with nogil:
        for j in prange(nb, schedule='dynamic'):
            for r in range(bl[j], bl[j + 1]):
                # branchless: write every pair, advance past the kept ones; the write past
                # the row's last kept pair is skipped (it belongs to the next row)
                c = op[r]
                for k in range(cptr[r], cptr[r + 1]):
                    if c < op[r + 1]:
                        oi[c] = cidx[k]
                        if Vp != NULL:
                            OVp[c] = Vp[k]
                        if OBp != NULL:
                            OBp[c] = mask[k] & 1
                    c = c + ((mask[k] & flag) != 0)
    return out_ptr, out_idx


# ------------------------------------------------------------------------------------------
# (b) point-major kernels

def pm_forward(const double[:, ::1] X, const double[:, ::1] W, const double[::1] a, double b,
               double scale, const cnp.int64_t[::1] indptr, const cnp.int64_t[::1] indices,
               double[::1] f_out, double[:, ::1] H_out=None, cnp.int64_t[::1] fired_out=None,
               bint check=True):
    """Forward pass over point-major pairs (CSR over points: neurons of point i in
    indices[indptr[i]:indptr[i+1]]); same outputs as ``nm_forward`` (f, optional H, fired),
    overwritten. Parallel over points. With neuron ids sorted within each point, the results
    are bitwise those of ``nm_forward`` on the same pairs. Returns (inner products, fired)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], m = W.shape[0]
    cdef Py_ssize_t nb, j, per
    cdef double* Hp = NULL
    cdef cnp.int64_t* Fp = NULL
    cdef int code
    if W.shape[1] != d or a.shape[0] != m or indptr.shape[0] != n + 1 or f_out.shape[0] != n:
        raise ValueError("pm_forward: inconsistent shapes")
    if H_out is not None:
        if H_out.shape[0] != n or H_out.shape[1] != d:
            raise ValueError("pm_forward: H_out must have shape (n, d)")
        Hp = &H_out[0, 0]
    if fired_out is not None:
        if fired_out.shape[0] != n:
            raise ValueError("pm_forward: fired_out must have length n")
        Fp = &fired_out[0]
    if check:
        with nogil:
            code = _check_pm_csr(indptr, indices, m)
        _raise_csr(code, "pm_forward")
    if n == 0:
        return 0, 0
    per = 16
    nb = (n + per - 1) // per
    ev = np.zeros(nb, dtype=np.int64)
    nf = np.zeros(nb, dtype=np.int64)
    cdef cnp.int64_t[::1] evv = ev, nfv = nf
    cdef const cnp.int64_t* Ip = &indices[0] if indices.shape[0] > 0 else NULL
    with nogil:
        for j in prange(nb, schedule='dynamic'):
            sa_pm_fwd(&X[0, 0], d, &W[0, 0], &a[0], b, scale, &indptr[0], Ip, j * per,
                      (j + 1) * per if (j + 1) * per < n else n, &f_out[0], Hp, Fp,
                      &evv[j], &nfv[j])
    return int(ev.sum()), int(nf.sum())


def csr_transpose(const cnp.int64_t[::1] indptr, const cnp.int64_t[::1] indices,
                  Py_ssize_t ncols, bint check=True):
    """Point-major (indptr over n rows, neuron ids) -> neuron-major (cptr (ncols + 1) int64,
    cidx int32 point ids), by a stable counting sort: point ids increase within each neuron.
    ``check``: validate the offsets and that every neuron id is in [0, ncols) (a serial
    O(n + nnz) scan); pass False only for pairs known valid (e.g. a tree query's answer)."""
    cdef Py_ssize_t n = indptr.shape[0] - 1, nnz = indices.shape[0], i, r
    cdef cnp.int64_t k
    cdef int code = 0
    if n < 0 or ncols < 0:
        raise ValueError("csr_transpose: indptr must have at least one entry and ncols be >= 0")
    if n >= 2 ** 31 - 1:
        raise ValueError("csr_transpose: n must be < 2**31")
    if check:
        with nogil:
            code = _check_pm_csr(indptr, indices, ncols)
        _raise_csr(code, "csr_transpose")
    cptr = np.zeros(ncols + 1, dtype=np.int64)
    cidx = np.empty(nnz, dtype=np.int32)
    cdef cnp.int64_t[::1] cp = cptr
    cdef cnp.int32_t[::1] ci = cidx
    cdef cnp.int64_t[::1] cur
    with nogil:
        for k in range(nnz):
            cp[indices[k] + 1] += 1
        for r in range(ncols):
            cp[r + 1] += cp[r]
    cur = cptr[:-1].copy()
    with nogil:
        for i in range(n):
            for k in range(indptr[i], indptr[i + 1]):
                r = indices[k]
                ci[cur[r]] = <cnp.int32_t>i
                cur[r] += 1
    return cptr, cidx


def pm_weight_grad(const double[:, ::1] X, const double[:, ::1] W, const double[::1] a,
                   double b, const double[::1] coef, const cnp.int64_t[::1] indptr,
                   const cnp.int64_t[::1] indices, bint check=True):
    """Weight gradient over point-major pairs: transposes them to neuron-major (counting sort)
    and runs ``nm_weight_grad``. ``check`` is passed to ``csr_transpose`` (False skips the
    validation of the pairs: only for pairs known valid, e.g. a tree query's answer). Returns
    (rows, G_rows, inner products, fired pairs) with rows the sorted int64 ids of the neurons
    listed at least once (a superset of the neurons with a non-zero gradient) and G_rows[k]
    the gradient of neuron rows[k]."""
    cdef Py_ssize_t m = W.shape[0]
    if coef.shape[0] != X.shape[0] or indptr.shape[0] != X.shape[0] + 1:
        raise ValueError("pm_weight_grad: inconsistent shapes")
    cptr, cidx = csr_transpose(indptr, indices, m, check)
    rows = np.flatnonzero(np.diff(cptr)).astype(np.int64)
    G = np.empty((rows.shape[0], X.shape[1]))
    ev, nf = nm_weight_grad(X, W, a, b, coef, cptr, cidx, rows, G, None, False)
    return rows, G, ev, nf


# ------------------------------------------------------------------------------------------
# (c) certified-engine helpers

def anchor_candidates(const double[:, ::1] X, const double[:, ::1] Wa,
                      const cnp.int64_t[::1] rows, const double[::1] thr,
                      const double[::1] budget, const double[::1] xnorm, double band_h=0.0,
                      Py_ssize_t block=0):
    """Candidate lists of the neurons ``rows`` against all n points.

    Point i is a candidate of rows[k] iff S[k, i] + budget[k] * xnorm[i] > thr[k], with
    S = Wa[rows] X^T. Parallel over blocks of ``block`` rows (default 64): each thread
    computes its block's scores with dgemm tiles of at most 2^18 multiply-adds (so OpenBLAS
    runs them on the calling thread, as in the dense kernels: no pooled BLAS threads competing
    with the OpenMP ones), tests them and appends the kept point ids to its own buffer; the
    buffers are then copied into place. Returns (ptr (len(rows) + 1,) int64, idx int32
    sorted within each row, band, inner products) where band counts the kept pairs with
    S + budget*xnorm - thr <= band_h (density estimate)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], nr = rows.shape[0]
    cdef Py_ssize_t RB, PT, nblk, T, j, k, k0, k1, kb, i0, ib, tid, need, cap
    cdef cnp.int64_t tot
    if d < 1:
        raise ValueError("anchor_candidates: X must have at least one column")
    if Wa.shape[1] != d or thr.shape[0] != nr or budget.shape[0] != nr or xnorm.shape[0] != n:
        raise ValueError("anchor_candidates: inconsistent shapes")
    if n >= 2 ** 31 - 1:
        raise ValueError("anchor_candidates: n must be < 2**31")
    if not _rows_in_range(rows, Wa.shape[0]):
        raise ValueError("anchor_candidates: row out of range")
    ptr = np.zeros(nr + 1, dtype=np.int64)
    if nr == 0 or n == 0:
        return ptr, np.zeros(0, dtype=np.int32), 0, 0
    RB = block if block > 0 else 64
    PT = (1 << 18) // (RB * d) if RB * d < (1 << 18) else 1
    if PT > n:
        PT = n
    nblk = (nr + RB - 1) // RB
    T = _nthreads()
    cnt_arr = np.zeros(nr, dtype=np.int64)
    band_arr = np.zeros(nr, dtype=np.int64)
    blk_arr = np.zeros((nblk, 2), dtype=np.int64)        # (thread, offset in its buffer)
    cdef cnp.int64_t[::1] cnt = cnt_arr, band = band_arr
    cdef cnp.int64_t[:, ::1] blk = blk_arr
    cdef cnp.int32_t** tbuf = <cnp.int32_t**>calloc(T, sizeof(cnp.int32_t*))
    cdef Py_ssize_t* tlen = <Py_ssize_t*>calloc(T, sizeof(Py_ssize_t))
    cdef Py_ssize_t* tcap = <Py_ssize_t*>calloc(T, sizeof(Py_ssize_t))
    cdef int failed = 0
    cdef int* failed_p = &failed
    cdef double* S
    cdef double* Wb
    cdef cnp.int64_t* offs
    cdef cnp.int32_t* grown
    if tbuf == NULL or tlen == NULL or tcap == NULL:
        free(tbuf); free(tlen); free(tcap)
        raise MemoryError()
    with nogil, parallel(num_threads=T):
        S = <double*>malloc(RB * n * sizeof(double))
        Wb = <double*>malloc(RB * d * sizeof(double))
        offs = <cnp.int64_t*>malloc((RB + 1) * sizeof(cnp.int64_t))
        if S == NULL or Wb == NULL or offs == NULL:
            failed_p[0] = 1
        for j in prange(nblk, schedule='dynamic'):
            if S == NULL or Wb == NULL or offs == NULL or failed_p[0]:
                continue
            tid = sa_omp_thread_num()
            k0 = j * RB
            k1 = k0 + RB if k0 + RB < nr else nr
            kb = k1 - k0
            for k in range(kb):
                memcpy(Wb + k * d, &Wa[rows[k0 + k], 0], d * sizeof(double))
            i0 = 0
            while i0 < n:
                ib = PT if i0 + PT <= n else n - i0
                gemm_rm(b'N', b'T', <int>kb, <int>ib, <int>d, 1.0, Wb, <int>d, &X[i0, 0],
                        <int>d, 0.0, S + i0, <int>n)
                i0 = i0 + PT
            sa_anchor_rows(S, n, &thr[k0], &budget[k0], &xnorm[0], band_h, 0, kb, 0,
                           &cnt[k0], &band[k0], NULL, NULL)
            offs[0] = tlen[tid]
            for k in range(kb):
                offs[k + 1] = offs[k] + cnt[k0 + k]
            need = offs[kb]
            if need > tcap[tid]:
                cap = 2 * tcap[tid] if tcap[tid] > 0 else 4096
                while cap < need:
                    cap = 2 * cap
                grown = <cnp.int32_t*>realloc(tbuf[tid], cap * sizeof(cnp.int32_t))
                if grown == NULL:
                    failed_p[0] = 1
                    continue
                tbuf[tid] = grown
                tcap[tid] = cap
            sa_anchor_rows(S, n, &thr[k0], &budget[k0], &xnorm[0], band_h, 0, kb, 1,
                           &cnt[k0], &band[k0], offs, tbuf[tid])
            blk[j, 0] = tid
            blk[j, 1] = tlen[tid]
            tlen[tid] = need
        free(S)
        free(Wb)
        free(offs)
    if failed:
        for j in range(T):
            free(tbuf[j])
        free(tbuf); free(tlen); free(tcap)
        raise MemoryError()
    np.cumsum(cnt_arr, out=ptr[1:])
    cdef cnp.int64_t[::1] pv = ptr
    tot = pv[nr]
    idx = np.empty(tot, dtype=np.int32)
    cdef cnp.int32_t[::1] iv = idx
    if tot > 0:
        with nogil:
            for j in prange(nblk, schedule='static'):
                k0 = j * RB
                k1 = k0 + RB if k0 + RB < nr else nr
                if pv[k1] > pv[k0]:
                    memcpy(&iv[pv[k0]], tbuf[blk[j, 0]] + blk[j, 1],
                           (pv[k1] - pv[k0]) * sizeof(cnp.int32_t))
    for j in range(T):
        free(tbuf[j])
    free(tbuf); free(tlen); free(tcap)
    return ptr, idx, int(band_arr.sum()), int(nr) * int(n)


def filter_candidates(const double[:, ::1] X, const double[:, ::1] Wa,
                      const cnp.int64_t[::1] rows, const double[::1] thr,
                      const double[::1] budget, const double[::1] xnorm,
                      const cnp.int64_t[::1] cptr, const cnp.int32_t[::1] cidx,
                      bint check=True):
    """Shrink the candidate lists of ``rows``: keep point i of row r = rows[k] iff
    <Wa_r, x_i> + budget[k] xnorm[i] > thr[k], testing only the current candidates of r (valid
    when the new threshold is not below the one the lists were built with). (cptr, cidx) must
    be a neuron-major CSR over the n points, sorted within each neuron (checked, O(len(cidx)),
    when ``check``). Returns (ptr (len(rows) + 1,), idx int32, inner products)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], nr = rows.shape[0], k, r
    cdef cnp.int64_t p, tot = 0
    cdef int code
    if Wa.shape[1] != d or thr.shape[0] != nr or budget.shape[0] != nr or xnorm.shape[0] != n:
        raise ValueError("filter_candidates: inconsistent shapes")
    if cptr.shape[0] != Wa.shape[0] + 1:
        raise ValueError("filter_candidates: cptr must have length m + 1")
    if not _rows_in_range(rows, Wa.shape[0]):
        raise ValueError("filter_candidates: row out of range")
    if check:
        with nogil:
            code = _check_nm_csr(cptr, cidx, n)
        _raise_csr(code, "filter_candidates")
    src = np.zeros(nr + 1, dtype=np.int64)
    cdef cnp.int64_t[::1] sp = src
    for k in range(nr):
        r = rows[k]
        sp[k + 1] = sp[k] + (cptr[r + 1] - cptr[r])
    keep_arr = np.zeros(sp[nr], dtype=np.uint8)
    ptr = np.zeros(nr + 1, dtype=np.int64)
    cdef cnp.uint8_t[::1] keep = keep_arr
    cdef cnp.int64_t[::1] pv = ptr
    cdef cnp.int64_t c
    cdef double s
    if sp[nr] == 0:
        return ptr, np.zeros(0, dtype=np.int32), 0
    with nogil:
        for k in prange(nr, schedule='dynamic', chunksize=64):
            c = 0
            for p in range(cptr[rows[k]], cptr[rows[k] + 1]):
                s = sa_dot(&Wa[rows[k], 0], &X[cidx[p], 0], d)
                if s + budget[k] * xnorm[cidx[p]] > thr[k]:
                    keep[sp[k] + p - cptr[rows[k]]] = 1
                    c = c + 1
            pv[k + 1] = c
        for k in range(nr):
            pv[k + 1] += pv[k]
    idx = np.empty(pv[nr], dtype=np.int32)
    cdef cnp.int32_t[::1] iv = idx
    with nogil:
        for k in range(nr):
            r = rows[k]
            c = pv[k]
            for p in range(cptr[r], cptr[r + 1]):
                if keep[sp[k] + p - cptr[r]]:
                    iv[c] = cidx[p]
                    c = c + 1
    return ptr, idx, int(sp[nr])


def csr_replace_rows(const cnp.int64_t[::1] cptr, const cnp.int32_t[::1] cidx,
                     const cnp.int64_t[::1] rows, const cnp.int64_t[::1] new_ptr,
                     const cnp.int32_t[::1] new_idx, out_idx=None):
    """A new neuron-major CSR equal to (cptr, cidx) except that row rows[k] (rows sorted,
    distinct) holds new_idx[new_ptr[k]:new_ptr[k+1]]. Returns (cptr, cidx). ``out_idx``:
    optional int32 array, at least as long as the result and not overlapping the inputs, to
    write into (the returned indices are then a view of its head)."""
    cdef Py_ssize_t m = cptr.shape[0] - 1, nr = rows.shape[0], r, k
    cdef cnp.int64_t len_
    cdef int bad
    if new_ptr.shape[0] != nr + 1:
        raise ValueError("csr_replace_rows: new_ptr must have length len(rows) + 1")
    with nogil:
        bad = _check_offsets(new_ptr, new_idx.shape[0])
    if bad:
        raise ValueError("csr_replace_rows: new_ptr must start at 0, be non-decreasing and end "
                         "at len(new_idx)")
    with nogil:
        bad = _check_offsets(cptr, cidx.shape[0])
    if bad:
        raise ValueError("csr_replace_rows: cptr must have at least one entry, start at 0, be "
                         "non-decreasing and end at len(cidx)")
    for k in range(nr):
        if rows[k] < 0 or rows[k] >= m or (k > 0 and rows[k] <= rows[k - 1]):
            raise ValueError("csr_replace_rows: rows must be sorted, distinct and in range")
    out_ptr = np.empty(m + 1, dtype=np.int64)
    cdef cnp.int64_t[::1] op = out_ptr
    with nogil:
        op[0] = 0
        k = 0
        for r in range(m):
            if k < nr and rows[k] == r:
                len_ = new_ptr[k + 1] - new_ptr[k]
                k = k + 1
            else:
                len_ = cptr[r + 1] - cptr[r]
            op[r + 1] = op[r] + len_
    out_idx = _out_int32(out_idx, op[m], op[m], "csr_replace_rows")
    if op[m] == 0:
        return out_ptr, out_idx
    if np.may_share_memory(out_idx, np.asarray(cidx)) or np.may_share_memory(out_idx,
                                                                     np.asarray(new_idx)):
        raise ValueError("csr_replace_rows: out_idx must not overlap cidx or new_idx")
    cdef cnp.int32_t[::1] oi = out_idx
    with nogil:
        k = 0
        r = 0
        while r < m:
            if k < nr and rows[k] == r:
                len_ = new_ptr[k + 1] - new_ptr[k]
                if len_ > 0:
                    memcpy(&oi[op[r]], &new_idx[new_ptr[k]], len_ * sizeof(cnp.int32_t))
                k = k + 1
                r = r + 1
            else:
                # copy the run of untouched rows [r, stop) in one memcpy
                len_ = r
                while r < m and not (k < nr and rows[k] == r):
                    r = r + 1
                if cptr[r] > cptr[len_]:
                    memcpy(&oi[op[len_]], &cidx[cptr[len_]],
                           (cptr[r] - cptr[len_]) * sizeof(cnp.int32_t))
    return out_ptr, out_idx


def row_drift(const double[:, ::1] W, const double[:, ::1] Wa, const cnp.int64_t[::1] rows,
              double[::1] out):
    """out[k] = ||W[rows[k]] - Wa[rows[k]]||_2."""
    cdef Py_ssize_t d = W.shape[1], nr = rows.shape[0], k, j
    cdef double s, t
    if Wa.shape[0] != W.shape[0] or Wa.shape[1] != d or out.shape[0] != nr:
        raise ValueError("row_drift: inconsistent shapes")
    if not _rows_in_range(rows, W.shape[0]):
        raise ValueError("row_drift: row out of range")
    with nogil:
        for k in prange(nr, schedule='static'):
            s = 0.0
            for j in range(d):
                t = W[rows[k], j] - Wa[rows[k], j]
                s = s + t * t
            out[k] = sqrt(s)


def copy_rows_norms(const double[:, ::1] W, double[:, ::1] Wa, const cnp.int64_t[::1] rows,
                    double[::1] norm2, double[::1] norm1):
    """Wa[r] = W[r] for r in rows, and norm2[r], norm1[r] = ||W[r]||_2, ||W[r]||_1."""
    cdef Py_ssize_t d = W.shape[1], nr = rows.shape[0], k, j, r
    cdef double s2, s1, t
    if Wa.shape[0] != W.shape[0] or Wa.shape[1] != d or norm2.shape[0] != W.shape[0] \
            or norm1.shape[0] != W.shape[0]:
        raise ValueError("copy_rows_norms: inconsistent shapes")
    if not _rows_in_range(rows, W.shape[0]):
        raise ValueError("copy_rows_norms: row out of range")
    with nogil:
        for k in prange(nr, schedule='static'):
            r = rows[k]
            s2 = 0.0
            s1 = 0.0
            for j in range(d):
                t = W[r, j]
                Wa[r, j] = t
                s2 = s2 + t * t
                s1 = s1 + fabs(t)
            norm2[r] = sqrt(s2)
            norm1[r] = s1


def row_norms(const double[:, ::1] W, double[::1] norm2, double[::1] norm1):
    """norm2[r], norm1[r] = ||W[r]||_2, ||W[r]||_1 for every row (no m x d temporary)."""
    cdef Py_ssize_t m = W.shape[0], d = W.shape[1], r, j
    cdef double s2, s1, t
    if norm2.shape[0] != m or norm1.shape[0] != m:
        raise ValueError("row_norms: norm2 and norm1 must have length m")
    with nogil:
        for r in prange(m, schedule='static'):
            s2 = 0.0
            s1 = 0.0
            for j in range(d):
                t = W[r, j]
                s2 = s2 + t * t
                s1 = s1 + fabs(t)
            norm2[r] = sqrt(s2)
            norm1[r] = s1
