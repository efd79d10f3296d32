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

/* Runtime dispatch: each kernel body is an always-inline function, instantiated three times,
   compiled for AVX-512 (F, VL, DQ, BW; with FMA), for AVX2+FMA and for the baseline ISA;
   sa_cpu_init() (called at import) picks one by CPU features (not by CPU model, which is what
   target_clones' arch= clones test), at most the level the caller allows (the environment
   variable SPARSEADV_SIMD, read by _common.pxi: valgrind, for one, has no AVX-512). The
   kernels are written with GCC vector types of 8 doubles or 16 floats and element-wise
   operations in a fixed order, so the three builds compute the same bits wherever the same
   operations contract to FMA (every x86 level with FMA: AVX2 and AVX-512 agree). */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(SA_NO_DISPATCH)
#define SA_DISPATCH 1
#define SA_AVX2 __attribute__((target("avx2,fma")))
#define SA_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
#else
#define SA_DISPATCH 0
#endif
#define SA_BODY static inline __attribute__((always_inline))
/* the dispatchers and sa_cpu_init are called from Cython only: unused when compiled alone */
#define SA_UNUSED __attribute__((unused))
static int sa_use_avx2 = 0;
static int sa_use_avx512 = 0;
/* Level 0 baseline, 1 AVX2+FMA, 2 AVX-512: the highest the CPU supports, at most ``cap``. */
SA_UNUSED static int sa_cpu_init(int cap)
{
#if SA_DISPATCH
    __builtin_cpu_init();
    sa_use_avx2 = cap >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    sa_use_avx512 = cap >= 2 && sa_use_avx2 && __builtin_cpu_supports("avx512f")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512bw");
#else
    (void)cap;
#endif
    return sa_use_avx512 ? 2 : sa_use_avx2;
}
#if SA_DISPATCH
#define SA_KERNEL(name, params, args) \
    SA_AVX512 static void name##_avx512 params { name##_body args; } \
    SA_AVX2 static void name##_avx2 params { name##_body args; } \
    static void name##_base params { name##_body args; } \
    SA_UNUSED static void name params { \
        if (sa_use_avx512) name##_avx512 args; \
        else if (sa_use_avx2) name##_avx2 args; \
        else name##_base args; }
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
    SA_AVX512 static void name##_avx512 params { SA_WITH_D(d, name##_body, dargs) } \
    SA_AVX2 static void name##_avx2 params { SA_WITH_D(d, name##_body, dargs) } \
    static void name##_base params { SA_WITH_D(d, name##_body, dargs) } \
    SA_UNUSED static void name params { \
        if (sa_use_avx512) name##_avx512 args; \
        else if (sa_use_avx2) name##_avx2 args; \
        else name##_base args; }
#else
#define SA_KERNEL_D(name, params, args, dargs) \
    SA_UNUSED static void name params { SA_WITH_D(d, name##_body, dargs) }
#endif

/* SA_SERIAL(v): the scalar sums of a dot product's tail stay one multiply-add at a time.
   Without it the AVX-512 build vectorises such a loop as an in-order reduction, which rounds
   the products before adding them where the AVX2 build uses a fused multiply-add: the two
   builds would differ in the last bit. An empty asm that "changes" v in its register costs
   nothing and keeps each target's own contraction. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define SA_SERIAL(v) __asm__("" : "+x"(v))
#else
#define SA_SERIAL(v) ((void)0)
#endif
/* The scalar tails t = j .. d-1 of four dot products of w with x0..x3, into s0..s3. */
#define SA_TAILS4(s0, s1, s2, s3, w, x0, x1, x2, x3, j, d, t) do { \
        for (t = j; t < d; ++t) { s0 += w[t] * x0[t]; SA_SERIAL(s0); } \
        for (t = j; t < d; ++t) { s1 += w[t] * x1[t]; SA_SERIAL(s1); } \
        for (t = j; t < d; ++t) { s2 += w[t] * x2[t]; SA_SERIAL(s2); } \
        for (t = j; t < d; ++t) { s3 += w[t] * x3[t]; SA_SERIAL(s3); } } while (0)

/* The canonical dot product: two 4-wide accumulators (lanes j mod 8 < 4 and >= 4) over
   blocks of 8, a last block of 4 into the first, then a fixed-order horizontal sum and
   the scalar tail. sa_dot4 computes four of them with exactly the same operations, so a
   pair's score does not depend on how the candidates are grouped. When d is a multiple of 8
   (known at compile time in the kernels specialised by SA_KERNEL_D) the two accumulators are
   the two halves of one 8-wide vector: the same element-wise operations, one zmm register
   per pair in the AVX-512 build. */
#if defined(__GNUC__)
typedef double sa_v4d __attribute__((vector_size(32), aligned(8)));
typedef double sa_v8d __attribute__((vector_size(64), aligned(8)));
#define SA_LD(p) (*(const sa_v4d*)(p))
#define SA_LD8(p) (*(const sa_v8d*)(p))
static inline __attribute__((always_inline)) double sa_hsum(sa_v4d a, sa_v4d b)
{
    a = a + b;
    return (a[0] + a[1]) + (a[2] + a[3]);
}
static inline __attribute__((always_inline)) double sa_hsum8(sa_v8d c)
{
    const double a0 = c[0] + c[4], a1 = c[1] + c[5], a2 = c[2] + c[6], a3 = c[3] + c[7];
    return (a0 + a1) + (a2 + a3);
}
static inline __attribute__((always_inline)) double
sa_dot(const double* w, const double* x, ptrdiff_t d)
{
    sa_v4d a = {0.0, 0.0, 0.0, 0.0}, b = a;
    ptrdiff_t j = 0;
    double s;
    if (d % 8 == 0) {
        sa_v8d c = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        for (; j < d; j += 8) c += SA_LD8(w + j) * SA_LD8(x + j);
        return sa_hsum8(c);
    }
    for (; j + 8 <= d; j += 8) {
        a += SA_LD(w + j) * SA_LD(x + j);
        b += SA_LD(w + j + 4) * SA_LD(x + j + 4);
    }
    if (j + 4 <= d) { a += SA_LD(w + j) * SA_LD(x + j); j += 4; }
    s = sa_hsum(a, b);
    for (; j < d; ++j) { s += w[j] * x[j]; SA_SERIAL(s); }
    return s;
}
static inline __attribute__((always_inline)) void
sa_dot4(const double* w, const double* x0, const double* x1, const double* x2,
        const double* x3, ptrdiff_t d, double* z)
{
    sa_v4d a0 = {0.0, 0.0, 0.0, 0.0}, a1 = a0, a2 = a0, a3 = a0;
    sa_v4d b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    ptrdiff_t j = 0, t;
    if (d % 8 == 0) {
        sa_v8d c0 = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}, c1 = c0, c2 = c0, c3 = c0;
        for (; j < d; j += 8) {
            const sa_v8d u = SA_LD8(w + j);
            c0 += u * SA_LD8(x0 + j); c1 += u * SA_LD8(x1 + j);
            c2 += u * SA_LD8(x2 + j); c3 += u * SA_LD8(x3 + j);
        }
        z[0] = sa_hsum8(c0); z[1] = sa_hsum8(c1); z[2] = sa_hsum8(c2); z[3] = sa_hsum8(c3);
        return;
    }
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
    {
        double s0 = sa_hsum(a0, b0), s1 = sa_hsum(a1, b1);
        double s2 = sa_hsum(a2, b2), s3 = sa_hsum(a3, b3);
        SA_TAILS4(s0, s1, s2, s3, w, x0, x1, x2, x3, j, d, t);
        z[0] = s0; z[1] = s1; z[2] = s2; z[3] = s3;
    }
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

static inline __attribute__((always_inline)) void
sa_axpy(double alpha, const double* x, double* y, ptrdiff_t d)
{
    ptrdiff_t j = 0;
#if defined(__GNUC__)
    /* 8-wide blocks first (the same element-wise y[j] + alpha x[j] as the scalar loop):
       one zmm operation per block in the AVX-512 build, no aliasing check */
    for (; j + 8 <= d; j += 8) *(sa_v8d*)(y + j) = SA_LD8(y + j) + alpha * SA_LD8(x + j);
#endif
    for (; j < d; ++j) y[j] += alpha * x[j];
}

/* The float32 screen (docs/design.md §3, "The float32 screen"): a pair's fired state is
   decided from a float32 dot product of the rows rounded to float32, within a proven bound
   of the float64 score, and only a pair too close to its threshold to tell is evaluated in
   float64 (sa_dot). For d <= SA_SCREEN_MAXD, w and x rounded to float32 (round to nearest;
   subnormal results, flushed or not, lose at most 2^-126 each) and any order of float32
   multiplies and adds (FMA or not):
       |dot32 - sa_dot(w, x)| <= (d + 3) u (|w|_2 + 2^-50)(|x|_2 + 2^-50),  u = 2^-24,
   given |w|_2, |x|_2 < 2^60 (no overflow). SA_SCREEN_C is twice that factor's (d + 3) u:
   the margin covers the rounding of the norms, of the bound and of the comparisons. */
#define SA_SCREEN_MAXD 65536
#define SA_SCREEN_TINY 8.8817841970012523e-16      /* 2^-50 */
#define SA_SCREEN_HUGE 1.152921504606846976e18     /* 2^60 */
static inline double sa_screen_c(ptrdiff_t d) { return 2.0 * (double)(d + 3) * 5.9604644775390625e-08; }

/* Per-row screen factor: c_d (|w|_2 + 2^-50), or +inf (never decided in float32) when the
   row's norm is not below 2^60 or not finite. Writes the row rounded to float32 into w32. */
static inline __attribute__((always_inline)) double
sa_screen_row(const double* w, ptrdiff_t d, float* w32)
{
    double s = 0.0, nrm;
    ptrdiff_t j = 0;
#if defined(__GNUC__)
    {
        typedef float sa_v8f __attribute__((vector_size(32), aligned(4)));
        sa_v8d acc = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        for (; j + 8 <= d; j += 8) {
            const sa_v8d v = SA_LD8(w + j);
            acc += v * v;
            *(sa_v8f*)(w32 + j) = __builtin_convertvector(v, sa_v8f);
        }
        s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    }
#endif
    for (; j < d; ++j) { s += w[j] * w[j]; w32[j] = (float)w[j]; }
    nrm = sqrt(s);
    if (!(nrm < SA_SCREEN_HUGE)) return INFINITY;
    return sa_screen_c(d) * (nrm + SA_SCREEN_TINY);
}

#if defined(__GNUC__)
typedef float sa_v16f __attribute__((vector_size(64), aligned(4)));
#define SA_LD16(p) (*(const sa_v16f*)(p))
/* Four float32 dot products of w against x0..x3 (any summation order: only their bound
   matters). 16-wide accumulators over blocks of 16, a shuffle tree for the four horizontal
   sums where the compiler has __builtin_shufflevector, the scalar tail last. */
static inline __attribute__((always_inline)) void
sa_sdot4(const float* w, const float* x0, const float* x1, const float* x2, const float* x3,
         ptrdiff_t d, float* z)
{
    sa_v16f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    ptrdiff_t j = 0, t;
    for (; j + 16 <= d; j += 16) {
        const sa_v16f u = SA_LD16(w + j);
        a0 += u * SA_LD16(x0 + j); a1 += u * SA_LD16(x1 + j);
        a2 += u * SA_LD16(x2 + j); a3 += u * SA_LD16(x3 + j);
    }
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
    {
        const sa_v16f t0 = __builtin_shufflevector(a0, a1, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19,
                                                   20, 21, 22, 23)
            + __builtin_shufflevector(a0, a1, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28,
                                      29, 30, 31);
        const sa_v16f t1 = __builtin_shufflevector(a2, a3, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19,
                                                   20, 21, 22, 23)
            + __builtin_shufflevector(a2, a3, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28,
                                      29, 30, 31);
        const sa_v16f u = __builtin_shufflevector(t0, t1, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18,
                                                  19, 24, 25, 26, 27)
            + __builtin_shufflevector(t0, t1, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29,
                                      30, 31);
        const sa_v16f v = u + __builtin_shufflevector(u, u, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9,
                                                      14, 15, 12, 13);
        const sa_v16f r = v + __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10,
                                                      13, 12, 15, 14);
        typedef float sa_v4f_ __attribute__((vector_size(16), aligned(4)));
        *(sa_v4f_*)z = __builtin_shufflevector(r, r, 0, 4, 8, 12);    /* one store */
    }
#else
    z[0] = z[1] = z[2] = z[3] = 0.0f;
    for (t = 0; t < 16; ++t) { z[0] += a0[t]; z[1] += a1[t]; z[2] += a2[t]; z[3] += a3[t]; }
#endif
    if (j < d) {                        /* one multiply-add at a time (SA_SERIAL) */
        float s0 = z[0], s1 = z[1], s2 = z[2], s3 = z[3];
        SA_TAILS4(s0, s1, s2, s3, w, x0, x1, x2, x3, j, d, t);
        z[0] = s0; z[1] = s1; z[2] = s2; z[3] = s3;
    }
}
#else
static inline void sa_sdot4(const float* w, const float* x0, const float* x1, const float* x2,
                            const float* x3, ptrdiff_t d, float* z)
{
    ptrdiff_t j;
    z[0] = z[1] = z[2] = z[3] = 0.0f;
    for (j = 0; j < d; ++j) {
        z[0] += w[j] * x0[j]; z[1] += w[j] * x1[j]; z[2] += w[j] * x2[j]; z[3] += w[j] * x3[j];
    }
}
#endif

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

/* First position in the sorted v[p..q) whose value is >= key (q if none). Branch-free
   halving (a conditional move per step, no mispredicted branch): the point-split kernels
   call it twice per neuron per thread. */
static inline int64_t sa_lower_bound(const int32_t* v, int64_t p, int64_t q, int32_t key)
{
    int64_t len = q - p;
    const int32_t* base = v + p;
    if (len <= 0) return p;
    while (len > 1) {
        const int64_t half = len >> 1;
        base = base[half - 1] < key ? base + half : base;
        len -= half;
    }
    return (base - v) + (*base < key);
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
