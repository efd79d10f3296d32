/* sa_simd.h: helpers shared by the active-set kernels (sa_certified.h, sa_pointmajor.h) and
   the partition tree: CPU dispatch, the canonical dot products, axpy, prefetch, binary search.

   Included by sparseadv/_common.pxi (and by the other headers); plain C99 + GCC vector
   extensions, compiled standalone with -Wall -Wextra -Werror by .ci/check_c_warnings.sh. */
#ifndef SPARSEADV_SA_SIMD_H
#define SPARSEADV_SA_SIMD_H

#include <float.h>
#include <math.h>
#include <stddef.h>
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
/* the dispatchers and sa_cpu_init are called from Cython only: unused when compiled alone */
#define SA_UNUSED __attribute__((unused))
static int sa_use_avx2 = 0;
SA_UNUSED static int sa_cpu_init(void)
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
    SA_UNUSED static void name params { if (sa_use_avx2) name##_avx2 args; else name##_base args; }
#else
#define SA_KERNEL(name, params, args) \
    SA_UNUSED static void name params { name##_body args; }
#endif

/* Kernels over pairs, specialised for common widths: the always-inline body is called with
   the width as a compile-time constant (``sa_d`` in ``dargs``, ``d`` in ``args``), so the dot-product and axpy
   loops unroll completely. Same operations in the same order as the generic call, so the
   same bits; fewer loop instructions per pair (docs/benchmarks.md, "Where the time goes").
   Only widths that are multiples of 4 (vector loops, no scalar tail): with d = 2 or 3 the
   unrolled scalar products are SLP-vectorised and no longer contracted into FMAs as in the
   generic loop, which changes the last bits of a score. */
#define SA_D_CASE(k, body, args) case k: { const ptrdiff_t sa_d = k; body args; break; }
#define SA_WITH_D(d, body, args) switch (d) { \
    SA_D_CASE(4, body, args) SA_D_CASE(8, body, args) SA_D_CASE(16, body, args) SA_D_CASE(32, body, args) \
    SA_D_CASE(64, body, args) \
    default: { const ptrdiff_t sa_d = (d); body args; } }
#if SA_DISPATCH
#define SA_KERNEL_D(name, params, args, dargs) \
    SA_AVX2 static void name##_avx2 params { SA_WITH_D(d, name##_body, dargs) } \
    static void name##_base params { SA_WITH_D(d, name##_body, dargs) } \
    SA_UNUSED static void name params { if (sa_use_avx2) name##_avx2 args; else name##_base args; }
#else
#define SA_KERNEL_D(name, params, args, dargs) \
    SA_UNUSED static void name params { SA_WITH_D(d, name##_body, dargs) }
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
sa_dot(const double* w, const double* x, ptrdiff_t d)
{
    sa_v4d a = {0.0, 0.0, 0.0, 0.0}, b = a;
    ptrdiff_t j = 0;
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
        const double* x3, ptrdiff_t d, double* z)
{
    sa_v4d a0 = {0.0, 0.0, 0.0, 0.0}, a1 = a0, a2 = a0, a3 = a0;
    sa_v4d b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    ptrdiff_t j = 0, t;
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
static inline double sa_dot(const double* w, const double* x, ptrdiff_t d)
{
    double a[4] = {0.0, 0.0, 0.0, 0.0}, b[4] = {0.0, 0.0, 0.0, 0.0}, s;
    ptrdiff_t j = 0, l;
    for (; j + 8 <= d; j += 8)
        for (l = 0; l < 4; ++l) {
            a[l] += w[j + l] * x[j + l];
            b[l] += w[j + 4 + l] * x[j + 4 + l];
        }
    if (j + 4 <= d) { for (l = 0; l < 4; ++l) a[l] += w[j + l] * x[j + l]; j += 4; }
    for (l = 0; l < 4; ++l) a[l] += b[l];
    s = (a[0] + a[1]) + (a[2] + a[3]);
    for (; j < d; ++j) s += w[j] * x[j];
    return s;
}
static inline void sa_dot4(const double* w, const double* x0, const double* x1,
                           const double* x2, const double* x3, ptrdiff_t d, double* z)
{
    z[0] = sa_dot(w, x0, d); z[1] = sa_dot(w, x1, d);
    z[2] = sa_dot(w, x2, d); z[3] = sa_dot(w, x3, d);
}
#endif

static inline void sa_axpy(double alpha, const double* x, double* y, ptrdiff_t d)
{
    ptrdiff_t j;
    for (j = 0; j < d; ++j) y[j] += alpha * x[j];
}

/* Rows gathered at random are prefetched a few pairs ahead: rows of X in the tracked
   kernel (a thread's X and H rows together do not fit in L2), rows of W in the
   point-major forward (a measured gain: docs/benchmarks.md). */
#define SA_PF 8
#define SA_PF_PM 16
static inline __attribute__((always_inline)) void
sa_prefetch_row(const double* p, ptrdiff_t d)
{
    ptrdiff_t j;
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

/* The candidates of neuron r that lie in the point range [lo, hi): the neuron-major lists
   hold sorted point ids cidx[cptr[r] .. cptr[r + 1]); sets [*p, *q) to the part inside the
   range (binary search only where the range cuts the list) and returns 0 when it is empty. */
static inline int sa_candidates_in_range(const int64_t* cptr, const int32_t* cidx, int64_t r,
                                         int32_t lo, int32_t hi, int64_t* p, int64_t* q)
{
    int64_t a = cptr[r], e = cptr[r + 1];
    if (a == e) return 0;
    if (cidx[a] < lo) a = sa_lower_bound(cidx, a, e, lo);
    if (a < e && cidx[e - 1] >= hi) e = sa_lower_bound(cidx, a, e, hi);
    *p = a; *q = e;
    return a < e;
}

/* The arithmetic that defines "fired" for the half-space reporting structures
   (sparseadv.hsr): one multiply and one add per coordinate, summed over k = 0..d-1 in order
   from 0.0, no fused multiply-add on x86-64 (baseline ISA). The partition tree's leaf scan
   (_tree.pxi, _scan_rows) computes exactly these operations; the brute force re-evaluates its
   near-threshold pairs with this function, so both report the same set on ties. */
static inline double sa_dot_seq(const double* w, const double* x, ptrdiff_t d)
{
    double s = 0.0;
    ptrdiff_t k;
    for (k = 0; k < d; ++k) s = s + w[k] * x[k];
    return s;
}

/* ||x||_2 scaled by max |x_k| first, so that it neither underflows (|x| ~ 1e-170: the plain
   sum of squares is 0) nor overflows (|x| ~ 1e200). Within a few ulps of the exact norm. */
static inline double sa_norm_safe(const double* x, ptrdiff_t d)
{
    double s = 0.0, t = 0.0, v;
    ptrdiff_t k;
    for (k = 0; k < d; ++k) { v = fabs(x[k]); if (v > s) s = v; }
    if (s == 0.0 || !(s <= DBL_MAX)) return s;      /* zero, or not finite (refused upstream) */
    for (k = 0; k < d; ++k) { v = x[k] / s; t += v * v; }
    return s * sqrt(t);
}

#endif /* SPARSEADV_SA_SIMD_H */
