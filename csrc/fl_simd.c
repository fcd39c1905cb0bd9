/* The SIMD kernels: the tile (a small GEMM over packed weights, for the input and recurrent
 * products), the one-row pair tile, sigmoid/tanh and the standard cell update, each in a
 * portable, an AVX2+FMA and an AVX-512 version (AVX-512 reuses the AVX2 activations for the
 * generic cell), chosen once at run time (fl_simd). Built with -ffp-contract=off (setup.py):
 * a multiply and an add stay two roundings, as in every version.
 *
 * Summation: every output sum over k is formed in blocks of FL_K_CHUNK inputs, each block one
 * FMA chain from zero, the block sums added in order: out = ((s0 + s1) + s2) + ... All
 * versions follow exactly this order, so a result never depends on the batch size, the tile
 * shape, the thread or the instruction set (portable aside, whose activations are libm's).
 * Blocking also bounds the rounding error by about (64 + K/64) ulps instead of K; blocks of 64
 * rather than 128 took the benchmark's deepbench shape (K = 2048) from 3.05e-7 to 1.9e-7 of
 * float64, for 3-4% more time on the large shapes (one more store of the partial sums).
 *
 * Activations (AVX2): exp is a degree-7 Taylor polynomial on [-ln2/2, ln2/2] after range
 * reduction; sigmoid = 1/(1 + e^-x); tanh uses the odd Taylor series to x^17 for |x| < 0.55
 * and 1 - 2/(e^2|x| + 1) beyond. Measured against float64 over [-20, 20]: both within 1e-7
 * absolute (tests/test_kernels.py asserts 1.5e-7).
 */
#include "fl_simd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Loop over the K blocks of a tile call: `block` computes one block's sums and stores them,
 * or adds them to out when told to. */
#define FL_FOR_K_BLOCKS(K, accumulate, k0, kc, add)                                     \
    for (k0 = 0; k0 < (K); k0 += FL_K_CHUNK)                                              \
        for (kc = (K) - k0 < FL_K_CHUNK ? (K) - k0 : FL_K_CHUNK, add = (accumulate) || k0 > 0; \
             kc > 0; kc = 0)

/* An L2 ask (fl_l2_ask) spread evenly over a tile call's K inputs: the K block [k0, k0 + kc)
 * takes its share of the call's `total` lines, per_k lines an input (at most 4, one input's
 * weights) for its first `asking` inputs. `from` moves on past what the block asked for. */
typedef struct {
    const float *next;
    int per_k, asking;
} l2_share;

static inline l2_share l2_block_share(const float **from, int total, int k0, int kc, int K)
{
    const int lines = (int)(((long)total * (k0 + kc) + K - 1) / K - ((long)total * k0 + K - 1) / K);
    const int want = (lines + kc - 1) / kc;
    l2_share sh;
    sh.next = *from;
    sh.per_k = want > 4 ? 4 : want;
    sh.asking = sh.per_k ? (lines + sh.per_k - 1) / sh.per_k : 0;
    if (sh.asking > kc) sh.asking = kc;
    if (sh.per_k) *from += (size_t)sh.per_k * sh.asking * 16;
    return sh;
}

/* Input k's part of the share: prefetches into L2 (T1), not into L1, where the tile's own
 * weights are. Always inlined into the tiles' input loops. */
static inline __attribute__((always_inline)) void l2_ask_input(l2_share *sh, int k)
{
    if (k >= sh->asking) return;
    __builtin_prefetch(sh->next, 0, 2);
    if (sh->per_k > 1) __builtin_prefetch(sh->next + 16, 0, 2);
    if (sh->per_k > 2) __builtin_prefetch(sh->next + 32, 0, 2);
    if (sh->per_k > 3) __builtin_prefetch(sh->next + 48, 0, 2);
    sh->next += 16 * sh->per_k;
}

/* ---------------------------------------------------------------- portable versions */

static void tile_block_portable(int M, const float *wp, int K, const float *x, int x_ld, int nb,
                                float *out, int out_ld, int m_stride, int width, int add)
{
    float acc[4][FL_TILE_ROWS][FL_TILE_UNITS];
    int k, m, r, u;
    memset(acc, 0, sizeof(acc));
    for (k = 0; k < K; k++) {
        const float *w = wp + (size_t)k * M * FL_TILE_UNITS;
        for (r = 0; r < nb; r++) {
            const float xv = x[(size_t)r * x_ld + k];
            for (m = 0; m < M; m++)
                for (u = 0; u < FL_TILE_UNITS; u++)
                    acc[m][r][u] = fmaf(w[m * FL_TILE_UNITS + u], xv, acc[m][r][u]);
        }
    }
    for (r = 0; r < nb; r++)
        for (m = 0; m < M; m++) {
            float *dst = out + (size_t)r * out_ld + (size_t)m * m_stride;
            for (u = 0; u < width; u++) dst[u] = add ? dst[u] + acc[m][r][u] : acc[m][r][u];
        }
}

static void tile_portable(int M, const float *wp, int K, const float *x, int x_ld, int nb,
                          float *out, int out_ld, int m_stride, int width, int accumulate,
                          fl_l2_ask ask)
{
    int k0, kc, add;
    (void)ask;
    FL_FOR_K_BLOCKS(K, accumulate, k0, kc, add)
        tile_block_portable(M, wp + (size_t)k0 * M * FL_TILE_UNITS, kc, x + k0, x_ld, nb, out,
                            out_ld, m_stride, width, add);
}

static void pair_portable(const float *wp0, const float *wp1, int K, const float *x,
                          float *out0, float *out1, int m_stride, int width0, int width1)
{
    tile_portable(4, wp0, K, x, 0, 1, out0, 0, m_stride, width0, 0, FL_NO_ASK);
    tile_portable(4, wp1, K, x, 0, 1, out1, 0, m_stride, width1, 0, FL_NO_ASK);
}

static void sigmoid_portable(float *v, int n)
{
    int j;
    for (j = 0; j < n; j++) {
        if (v[j] >= 0.0f) {
            v[j] = 1.0f / (1.0f + expf(-v[j]));
        } else {
            float e = expf(v[j]);
            v[j] = e / (1.0f + e);
        }
    }
}

static void tanh_portable(float *v, int n)
{
    int j;
    for (j = 0; j < n; j++) v[j] = tanhf(v[j]);
}

static const fl_simd_table portable_table = {tile_portable, pair_portable, sigmoid_portable,
                                              tanh_portable, NULL, NULL, FL_TILE_ROWS, 8, 0,
                                              "portable"};

/* ---------------------------------------------------------------- AVX2 + FMA versions */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define FL_AVX2 __attribute__((target("avx2,fma")))

/* The four-gate tiles ask for the weights this many floats (8 KiB) ahead of those they
 * multiply: the packed weights of a step are one stream of several MiB from L3, which the
 * hardware prefetchers alone do not keep ahead of (measured, weights past L2: AVX-512 5-12%
 * faster on the batch, large and deepbench workloads; AVX2 on the same machine: deepbench
 * 24%, batch 16 with hidden 1024 17%, large 5%, batch 2%). Past the end of a block they ask
 * for the next block, the next in line. In the one-row pair kernels it made things slower.
 * An L2 ask (fl_l2_ask, see block_tiles in fastlstm.c) reaches further: the next block, into
 * L2, while this one is multiplied. */
#define FL_PREFETCH_AHEAD 2048

/* The activation polynomials, one table for the 256- and the 512-bit versions, which must give
 * identical bits; both evaluate them by Horner, highest power first. exp: the Taylor
 * coefficients 1/k!, k = 7..0, on [-ln2/2, ln2/2]; tanh, small |x|: x - x^3 P(x^2), P the odd
 * Taylor series of tanh to x^17. */
#define FL_POLY_TERMS 8
static const float fl_exp_poly[FL_POLY_TERMS] = {
    1.98412698e-4f, 1.38888889e-3f, 8.33333333e-3f, 4.16666667e-2f, 1.66666667e-1f, 0.5f, 1.0f,
    1.0f};
static const float fl_tanh_poly[FL_POLY_TERMS] = {
    -5.90027440945585e-4f, 1.45583438705132e-3f, -3.59212803657248e-3f, 8.86323552990220e-3f,
    -2.18694885361552e-2f, 5.39682539682540e-2f, -1.33333333333333e-1f, 3.33333333333333e-1f};

/* width (<= 8) floats in and out of a register; the tail of a hidden size not divisible by 8 */
FL_AVX2 static inline __m256 load_n(const float *src, int n)
{
    float tmp[8] = {0};
    if (n == 8) return _mm256_loadu_ps(src);
    memcpy(tmp, src, (size_t)n * sizeof(float));
    return _mm256_loadu_ps(tmp);
}

FL_AVX2 static inline void store_n(float *dst, __m256 v, int n)
{
    float tmp[8];
    if (n == 8) {
        _mm256_storeu_ps(dst, v);
        return;
    }
    _mm256_storeu_ps(tmp, v);
    memcpy(dst, tmp, (size_t)n * sizeof(float));
}

/* out = v, or out = out + v */
FL_AVX2 static inline void put_n(float *dst, __m256 v, int n, int add)
{
    store_n(dst, add ? _mm256_add_ps(load_n(dst, n), v) : v, n);
}

/* Row-count specialization: `call(NB)` with NB a compile-time constant for nb = 1..6 (the
 * tables' rows; callers never pass more or fewer), so that accumulators live in registers. */
#define FL_ROWS_CASES(call) \
    switch (nb) {           \
    case 1: call(1); break; \
    case 2: call(2); break; \
    case 3: call(3); break; \
    case 4: call(4); break; \
    case 5: call(5); break; \
    case 6: call(6); break; \
    default: break;         \
    }
#define FL_INLINE inline __attribute__((always_inline))

/* One K block of the four-gate tile for NB rows, G gates a pass (all four, or two passes of
 * two): out rows r, gate m at out + r*out_ld + m*m_stride. wp: [k][4 gates][8]. The sixteen
 * ymm registers hold NB*G accumulators, G weights and a broadcast: four to six rows take two
 * passes of two gates (the second reads the block's weights from L1), up to three rows all
 * four gates in one (for three rows gcc reads one of the four weights from memory each time).
 * Each accumulator is one FMA chain over k either way: the same sums as every other version.
 * Fully unrolled (the pragmas): as loops gcc kept the accumulators on the stack. Measured in L1 (C microbenchmark, K = 64) against the three-row tile this replaced:
 * 3 rows 105 -> 132 GFLOP/s, 6 rows 132 (the core's 256-bit FMA peak), 1 row 38 -> 78; the
 * batch workload with FASTLSTM_SIMD=avx2 on one thread 109 -> 89 ms. */
FL_AVX2 static FL_INLINE void gates_block_avx2(const int NB, const int G, const float *wp,
                                               int K, const float *x, int x_ld, float *out,
                                               int out_ld, int m_stride, int width, int add,
                                               l2_share *ask)
{
    int g0, k, r, m;
#pragma GCC unroll 2
    for (g0 = 0; g0 < 4; g0 += G) {
        __m256 acc[6][4];
#pragma GCC unroll 6
        for (r = 0; r < NB; r++)
#pragma GCC unroll 4
            for (m = 0; m < G; m++) acc[r][m] = _mm256_setzero_ps();
        for (k = 0; k < K; k++) {
            const float *w = wp + (size_t)k * 32;
            __m256 wv[4];
#pragma GCC unroll 4
            for (m = 0; m < G; m++) wv[m] = _mm256_loadu_ps(w + (g0 + m) * 8);
            if (g0 == 0) {
                _mm_prefetch((const char *)(w + FL_PREFETCH_AHEAD), _MM_HINT_T0);
                _mm_prefetch((const char *)(w + FL_PREFETCH_AHEAD + 16), _MM_HINT_T0);
                l2_ask_input(ask, k);
            }
#pragma GCC unroll 6
            for (r = 0; r < NB; r++) {
                const __m256 h = _mm256_broadcast_ss(x + (size_t)r * x_ld + k);
#pragma GCC unroll 4
                for (m = 0; m < G; m++) acc[r][m] = _mm256_fmadd_ps(wv[m], h, acc[r][m]);
            }
        }
#pragma GCC unroll 6
        for (r = 0; r < NB; r++)
#pragma GCC unroll 4
            for (m = 0; m < G; m++)
                put_n(out + (size_t)r * out_ld + (size_t)(g0 + m) * m_stride, acc[r][m], width,
                      add);
    }
}

/* One K block of a one-gate tile (M = 1, the projection W_hr) for NB rows. wp: [k][8]. */
FL_AVX2 static FL_INLINE void single_block_avx2(const int NB, const float *wp, int K,
                                                const float *x, int x_ld, float *out,
                                                int out_ld, int width, int add)
{
    __m256 acc[6];
    int k, r;
#pragma GCC unroll 6
    for (r = 0; r < NB; r++) acc[r] = _mm256_setzero_ps();
    for (k = 0; k < K; k++) {
        const __m256 w0 = _mm256_loadu_ps(wp + (size_t)k * 8);
#pragma GCC unroll 6
        for (r = 0; r < NB; r++)
            acc[r] = _mm256_fmadd_ps(w0, _mm256_broadcast_ss(x + (size_t)r * x_ld + k), acc[r]);
    }
#pragma GCC unroll 6
    for (r = 0; r < NB; r++) put_n(out + (size_t)r * out_ld, acc[r], width, add);
}

FL_AVX2 static void tile_avx2(int M, const float *wp, int K, const float *x, int x_ld, int nb,
                              float *out, int out_ld, int m_stride, int width, int accumulate,
                              fl_l2_ask ask)
{
    int k0, kc, add;
    FL_FOR_K_BLOCKS(K, accumulate, k0, kc, add) {
        const float *xk = x + k0, *wk = wp + (size_t)k0 * M * FL_TILE_UNITS;
        if (M == 4) {
            l2_share sh = l2_block_share(&ask.from, ask.lines, k0, kc, K);
#define FL_GATES(NB) \
    gates_block_avx2(NB, NB > 3 ? 2 : 4, wk, kc, xk, x_ld, out, out_ld, m_stride, width, add, &sh)
            FL_ROWS_CASES(FL_GATES)
#undef FL_GATES
        } else {
#define FL_SINGLE(NB) single_block_avx2(NB, wk, kc, xk, x_ld, out, out_ld, width, add)
            FL_ROWS_CASES(FL_SINGLE)
#undef FL_SINGLE
        }
    }
}

/* One row, two gate blocks at once: eight independent accumulator chains keep both FMA
 * units busy where one block's four chains would wait on FMA latency. */
FL_AVX2 static void pair_avx2(const float *wp0, const float *wp1, int K, const float *x,
                              float *out0, float *out1, int m_stride, int width0, int width1)
{
    int k0, kc, add, k, m;
    FL_FOR_K_BLOCKS(K, 0, k0, kc, add) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        __m256 acc[8];
        const float *v = wp0 + (size_t)k0 * 32, *w = wp1 + (size_t)k0 * 32, *xk = x + k0;
        for (k = 0; k < kc; k++, v += 32, w += 32) {
            const __m256 h = _mm256_broadcast_ss(xk + k);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v), h, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + 8), h, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(v + 16), h, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(v + 24), h, a3);
            b0 = _mm256_fmadd_ps(_mm256_loadu_ps(w), h, b0);
            b1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 8), h, b1);
            b2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 16), h, b2);
            b3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 24), h, b3);
        }
        acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
        acc[4] = b0; acc[5] = b1; acc[6] = b2; acc[7] = b3;
        for (m = 0; m < 8; m++)
            put_n((m < 4 ? out0 : out1) + (size_t)(m & 3) * m_stride, acc[m],
                  m < 4 ? width0 : width1, add);
    }
}

/* e^x for x in [-87.3, 88.7] (callers clamp): x = n*ln2 + r, e^x = 2^n * p(r). */
FL_AVX2 static inline __m256 exp_avx2(__m256 x)
{
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2_hi = _mm256_set1_ps(0.693359375f), ln2_lo = _mm256_set1_ps(-2.12194440e-4f);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, ln2_hi, x);
    r = _mm256_fnmadd_ps(n, ln2_lo, r);
    __m256 p = _mm256_set1_ps(fl_exp_poly[0]);
    int i;
    for (i = 1; i < FL_POLY_TERMS; i++) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(fl_exp_poly[i]));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

FL_AVX2 static inline __m256 sigmoid8(__m256 x)
{
    /* 1/(1 + e^-x); e^-x is clamped so it neither overflows nor loses the tails */
    __m256 t = _mm256_min_ps(_mm256_max_ps(_mm256_sub_ps(_mm256_setzero_ps(), x),
                                           _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 e = exp_avx2(t);
    return _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

FL_AVX2 static inline __m256 tanh8(__m256 x)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 ax = _mm256_andnot_ps(sign, x);
    /* large |x|: 1 - 2/(e^{2|x|} + 1), sign restored; 2|x| clamped at 40 (tanh(20) == 1 in float) */
    __m256 e = exp_avx2(_mm256_min_ps(_mm256_add_ps(ax, ax), _mm256_set1_ps(40.0f)));
    __m256 big = _mm256_sub_ps(_mm256_set1_ps(1.0f),
                               _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
    big = _mm256_or_ps(big, _mm256_and_ps(sign, x));
    /* small |x|: x * P(x^2), the Taylor series of tanh to x^17 */
    __m256 x2 = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(fl_tanh_poly[0]);
    int i;
    for (i = 1; i < FL_POLY_TERMS; i++) p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(fl_tanh_poly[i]));
    __m256 small = _mm256_fnmadd_ps(_mm256_mul_ps(p, x2), x, x);
    __m256 use_small = _mm256_cmp_ps(ax, _mm256_set1_ps(0.55f), _CMP_LT_OQ);
    __m256 y = _mm256_blendv_ps(big, small, use_small);
    /* NaN in, NaN out (the comparisons above would otherwise pick a number) */
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    return _mm256_blendv_ps(y, x, nan);
}

#define FL_VEC_APPLY(name, fn8)                                          \
    FL_AVX2 static void name(float *v, int n)                            \
    {                                                                    \
        int j = 0;                                                       \
        for (; j + 8 <= n; j += 8) _mm256_storeu_ps(v + j, fn8(_mm256_loadu_ps(v + j))); \
        if (j < n) {                                                     \
            float tmp[8] = {0};                                          \
            memcpy(tmp, v + j, (size_t)(n - j) * sizeof(float));         \
            _mm256_storeu_ps(tmp, fn8(_mm256_loadu_ps(tmp)));            \
            memcpy(v + j, tmp, (size_t)(n - j) * sizeof(float));         \
        }                                                                \
    }

FL_AVX2 static inline __m256 sigmoid8_nan(__m256 x)
{
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    return _mm256_blendv_ps(sigmoid8(x), x, nan);
}

FL_VEC_APPLY(sigmoid_avx2, sigmoid8_nan)
FL_VEC_APPLY(tanh_avx2, tanh8)

/* The standard cell's first half for 8 units at j (n of them valid): c' = f*c + i*g, stored,
 * and o; the second half is h = o*tanh(c'). With n a constant 8 after inlining, plain loads
 * and stores. */
FL_AVX2 static FL_INLINE __m256 cell8_c(const float *gx, const float *bias, const float *pre,
                                        float *c, int H, int j, int n, __m256 *o)
{
    __m256 z[4], cn;
    int g;
    for (g = 0; g < 4; g++) {
        const size_t at = (size_t)g * H + j;
        z[g] = _mm256_add_ps(load_n(pre + at, n),
                             _mm256_add_ps(load_n(gx + at, n), load_n(bias + at, n)));
    }
    cn = _mm256_add_ps(_mm256_mul_ps(sigmoid8_nan(z[1]), load_n(c + j, n)),
                       _mm256_mul_ps(sigmoid8_nan(z[0]), tanh8(z[2])));
    *o = sigmoid8_nan(z[3]);
    store_n(c + j, cn, n);
    return cn;
}

/* The standard cell (sigmoid gates, tanh, no peepholes or clips) for units [j0, j1) of nb
 * rows, with all of one unit block's gate math in registers. Same operation order as the
 * generic cell_rows: pre + (gx + b), then c' = f*c + i*g, h = o*tanh(c'). The full vectors of
 * all rows four at a time, every first half before any second, as in the AVX-512 cell (C
 * microbenchmark, one row, cycles per 16 units: 221 as one loop with the tail's checks inside,
 * 209 with the tail apart, 157 in fours; a batch's calls have one vector a row, which now go
 * four rows at a time). */
FL_AVX2 static void standard_cell_avx2(const float *const *gx, const float *bias,
                                       const float *const *pre, float *const *c, float *const *h,
                                       int nb, int H, int j0, int j1)
{
    const int full = j0 + (j1 - j0) / 8 * 8;
    int r, j, v, n = 0, at_r[4], at_j[4];
    __m256 cn[4], o[4];
    for (r = 0; r < nb; r++) {
        for (j = j0; j < full; j += 8) {
            at_r[n] = r, at_j[n] = j;
            cn[n] = cell8_c(gx[r], bias, pre[r], c[r], H, j, 8, &o[n]);
            if (++n == 4) {
                for (v = 0; v < 4; v++)
                    _mm256_storeu_ps(h[at_r[v]] + at_j[v], _mm256_mul_ps(o[v], tanh8(cn[v])));
                n = 0;
            }
        }
    }
    for (v = 0; v < n; v++)
        _mm256_storeu_ps(h[at_r[v]] + at_j[v], _mm256_mul_ps(o[v], tanh8(cn[v])));
    if (full < j1)
        for (r = 0; r < nb; r++) {
            __m256 on, c1 = cell8_c(gx[r], bias, pre[r], c[r], H, full, j1 - full, &on);
            store_n(h[r] + full, _mm256_mul_ps(on, tanh8(c1)), j1 - full);
        }
}

/* ---------------------------------------------------------------- AVX-512 versions */
/* Blocks of 16 units: one register holds one gate's 16 units, so a tile of nb rows keeps
 * 4*nb accumulators (24 for six rows) and per input k loads 4 weight vectors and nb
 * broadcasts for 4*nb FMAs. The K blocks, the FMA chains and the activation polynomials are
 * those of the AVX2 code lane for lane, so both give identical bits. Only AVX-512F is used. */
#define FL_AVX512 __attribute__((target("avx512f,avx2,fma")))

FL_AVX512 static FL_INLINE __mmask16 lanes(int n)
{
    return (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1u);
}

/* Loads and stores of the first `n` lanes. A full vector takes the plain instruction: masked
 * stores cost more on this core (measured: 2% of the batch workload, all in the tiles' sums). */
FL_AVX512 static FL_INLINE __m512 load16(const float *src, __mmask16 n)
{
    return n == 0xFFFF ? _mm512_loadu_ps(src) : _mm512_maskz_loadu_ps(n, src);
}

FL_AVX512 static FL_INLINE void store16(float *dst, __m512 v, __mmask16 n)
{
    if (n == 0xFFFF) _mm512_storeu_ps(dst, v);
    else _mm512_mask_storeu_ps(dst, n, v);
}

/* out = v, or out = out + v, on the first `n` lanes */
FL_AVX512 static FL_INLINE void put16(float *dst, __m512 v, __mmask16 n, int add)
{
    if (add) v = _mm512_add_ps(load16(dst, n), v);
    store16(dst, v, n);
}

/* One K block of the four-gate tile for NB rows (a compile-time constant after inlining:
 * the accumulators live in registers). wp: [k][4 gates][16]. */
FL_AVX512 static FL_INLINE void gates_sums_avx512(const int NB, const float *wp, int K,
                                                  const float *x, int x_ld, l2_share *ask,
                                                  __m512 acc[6][4])
{
    int k, r, m;
    for (r = 0; r < NB; r++)
        for (m = 0; m < 4; m++) acc[r][m] = _mm512_setzero_ps();
    for (k = 0; k < K; k++) {
        const float *w = wp + (size_t)k * 64;
        const __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16),
                     w2 = _mm512_loadu_ps(w + 32), w3 = _mm512_loadu_ps(w + 48);
        _mm_prefetch((const char *)(w + FL_PREFETCH_AHEAD), _MM_HINT_T0);
        _mm_prefetch((const char *)(w + FL_PREFETCH_AHEAD + 16), _MM_HINT_T0);
        _mm_prefetch((const char *)(w + FL_PREFETCH_AHEAD + 32), _MM_HINT_T0);
        _mm_prefetch((const char *)(w + FL_PREFETCH_AHEAD + 48), _MM_HINT_T0);
        l2_ask_input(ask, k);
        for (r = 0; r < NB; r++) {
            const __m512 h = _mm512_set1_ps(x[(size_t)r * x_ld + k]);
            acc[r][0] = _mm512_fmadd_ps(w0, h, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(w1, h, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(w2, h, acc[r][2]);
            acc[r][3] = _mm512_fmadd_ps(w3, h, acc[r][3]);
        }
    }
}

/* Sums of one K block into out (put16), fully unrolled so that the accumulators go straight
 * from registers to out; tiles of full vectors take it with n a constant (plain loads and
 * stores). As a loop, gcc spilled all 24 accumulators of the six-row tile to the stack and
 * read them back (measured: 5-row tile in L1 223 -> 241 GFLOP/s, batch workload 1-1.5%). */
FL_AVX512 static FL_INLINE void gates_put_avx512(const int NB, __m512 acc[6][4], float *out,
                                                 int out_ld, int m_stride, __mmask16 n, int add)
{
    int r, m;
#pragma GCC unroll 6
    for (r = 0; r < NB; r++)
#pragma GCC unroll 4
        for (m = 0; m < 4; m++)
            put16(out + (size_t)r * out_ld + (size_t)m * m_stride, acc[r][m], n, add);
}

/* The four-gate tile for NB rows, all K blocks. */
FL_AVX512 static FL_INLINE void gates_tile_avx512(const int NB, const float *wp, int K,
                                                  const float *x, int x_ld, float *out,
                                                  int out_ld, int m_stride, __mmask16 n,
                                                  int accumulate, fl_l2_ask ask)
{
    __m512 acc[6][4];
    int k0, kc, add;
    FL_FOR_K_BLOCKS(K, accumulate, k0, kc, add) {
        l2_share sh = l2_block_share(&ask.from, ask.lines, k0, kc, K);
        gates_sums_avx512(NB, wp + (size_t)k0 * 64, kc, x + k0, x_ld, &sh, acc);
        if (n == 0xFFFF) gates_put_avx512(NB, acc, out, out_ld, m_stride, 0xFFFF, add);
        else gates_put_avx512(NB, acc, out, out_ld, m_stride, n, add);
    }
}

/* One K block of a one-group tile (the projection W_hr) for NB rows. wp: [k][16]. */
FL_AVX512 static FL_INLINE void single_block_avx512(const int NB, const float *wp, int K,
                                                    const float *x, int x_ld, float *out,
                                                    int out_ld, __mmask16 n, int add)
{
    __m512 acc[6];
    int k, r;
    for (r = 0; r < NB; r++) acc[r] = _mm512_setzero_ps();
    for (k = 0; k < K; k++) {
        const __m512 w0 = _mm512_loadu_ps(wp + (size_t)k * 16);
        for (r = 0; r < NB; r++)
            acc[r] = _mm512_fmadd_ps(w0, _mm512_set1_ps(x[(size_t)r * x_ld + k]), acc[r]);
    }
    for (r = 0; r < NB; r++) put16(out + (size_t)r * out_ld, acc[r], n, add);
}

FL_AVX512 static void tile_avx512(int M, const float *wp, int K, const float *x, int x_ld,
                                  int nb, float *out, int out_ld, int m_stride, int width,
                                  int accumulate, fl_l2_ask ask)
{
    const __mmask16 n = lanes(width);
    int k0, kc, add;
    if (M == 4) {
#define FL_GATES(NB) gates_tile_avx512(NB, wp, K, x, x_ld, out, out_ld, m_stride, n, accumulate, ask)
        FL_ROWS_CASES(FL_GATES)
#undef FL_GATES
        return;
    }
    FL_FOR_K_BLOCKS(K, accumulate, k0, kc, add) {
        const float *xk = x + k0, *wk = wp + (size_t)k0 * 16;
#define FL_SINGLE(NB) single_block_avx512(NB, wk, kc, xk, x_ld, out, out_ld, n, add)
        FL_ROWS_CASES(FL_SINGLE)
#undef FL_SINGLE
    }
}

/* One row, two blocks of 16 units: eight independent FMA chains (two per FMA unit's latency). */
FL_AVX512 static void pair_avx512(const float *wp0, const float *wp1, int K, const float *x,
                                  float *out0, float *out1, int m_stride, int width0, int width1)
{
    const __mmask16 n0 = lanes(width0), n1 = lanes(width1);
    int k0, kc, add, k, m;
    FL_FOR_K_BLOCKS(K, 0, k0, kc, add) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m512 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        __m512 acc[8];
        const float *v = wp0 + (size_t)k0 * 64, *w = wp1 + (size_t)k0 * 64, *xk = x + k0;
        for (k = 0; k < kc; k++, v += 64, w += 64) {
            const __m512 h = _mm512_set1_ps(xk[k]);
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(v), h, a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(v + 16), h, a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(v + 32), h, a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(v + 48), h, a3);
            b0 = _mm512_fmadd_ps(_mm512_loadu_ps(w), h, b0);
            b1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 16), h, b1);
            b2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 32), h, b2);
            b3 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 48), h, b3);
        }
        acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
        acc[4] = b0; acc[5] = b1; acc[6] = b2; acc[7] = b3;
        for (m = 0; m < 8; m++)
            put16((m < 4 ? out0 : out1) + (size_t)(m & 3) * m_stride, acc[m], m < 4 ? n0 : n1, add);
    }
}

/* exp, sigmoid and tanh: exp_avx2, sigmoid8 and tanh8 on 16 lanes, the same operations. */
FL_AVX512 static FL_INLINE __m512 exp16(__m512 x)
{
    const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
    const __m512 ln2_hi = _mm512_set1_ps(0.693359375f), ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, ln2_hi, x);
    r = _mm512_fnmadd_ps(n, ln2_lo, r);
    __m512 p = _mm512_set1_ps(fl_exp_poly[0]);
    int i;
    for (i = 1; i < FL_POLY_TERMS; i++) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(fl_exp_poly[i]));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

FL_AVX512 static FL_INLINE __m512 sigmoid16(__m512 x)
{
    __m512 t = _mm512_min_ps(_mm512_max_ps(_mm512_sub_ps(_mm512_setzero_ps(), x),
                                           _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    __m512 y = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), exp16(t)));
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), y, x);
}

FL_AVX512 static FL_INLINE __m512 tanh16(__m512 x)
{
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    const __m512i xi = _mm512_castps_si512(x);
    __m512 ax = _mm512_castsi512_ps(_mm512_andnot_epi32(sign, xi));
    __m512 e = exp16(_mm512_min_ps(_mm512_add_ps(ax, ax), _mm512_set1_ps(40.0f)));
    __m512 big = _mm512_sub_ps(_mm512_set1_ps(1.0f),
                               _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
    big = _mm512_castsi512_ps(_mm512_or_epi32(_mm512_castps_si512(big), _mm512_and_epi32(sign, xi)));
    __m512 x2 = _mm512_mul_ps(x, x);
    __m512 p = _mm512_set1_ps(fl_tanh_poly[0]);
    int i;
    for (i = 1; i < FL_POLY_TERMS; i++) p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(fl_tanh_poly[i]));
    __m512 small = _mm512_fnmadd_ps(_mm512_mul_ps(p, x2), x, x);
    __m512 y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.55f), _CMP_LT_OQ), big, small);
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), y, x);
}

/* The standard cell on 16 lanes (see standard_cell_avx2), in two halves. The first: gate g's
 * pre-activation is total[g] + (gx + bias) at g*H; c' = f*c + i*g goes to c and is returned,
 * with the output gate o in *o. The second: h' = o*tanh(c'). Split so that a tile of rows can
 * run every row's first half before any second half: tanh(c') waits on the rest of its row,
 * and rows one after another left the core waiting on those chains (measured, fused kernel,
 * batch workload: 1-2% faster). */
FL_AVX512 static FL_INLINE __m512 cell16_c(const __m512 total[4], const float *gx,
                                           const float *bias, float *c, int H, __mmask16 n,
                                           __m512 *o)
{
    __m512 z[4], cn;
    int g;
    for (g = 0; g < 4; g++)
        z[g] = _mm512_add_ps(total[g], _mm512_add_ps(load16(gx + (size_t)g * H, n),
                                                     load16(bias + (size_t)g * H, n)));
    cn = _mm512_add_ps(_mm512_mul_ps(sigmoid16(z[1]), load16(c, n)),
                       _mm512_mul_ps(sigmoid16(z[0]), tanh16(z[2])));
    *o = sigmoid16(z[3]);
    store16(c, cn, n);
    return cn;
}

FL_AVX512 static FL_INLINE __m512 cell16_h(__m512 cn, __m512 o)
{
    return _mm512_mul_ps(o, tanh16(cn));
}

/* The standard cell for units [j0, j1) of one row, 16 units at a time, from pre. */
FL_AVX512 static void standard_cell_row_avx512(const float *gx, const float *bias,
                                               const float *pre, float *c, float *h, int H,
                                               int j0, int j1)
{
    int j, g, v;
    /* four full vectors at a time, every first half before any second (see cell16_c) */
    for (j = j0; j + 64 <= j1; j += 64) {
        __m512 cn[4], o[4];
        for (v = 0; v < 4; v++) {
            __m512 total[4];
            for (g = 0; g < 4; g++) total[g] = _mm512_loadu_ps(pre + (size_t)g * H + j + 16 * v);
            cn[v] = cell16_c(total, gx + j + 16 * v, bias + j + 16 * v, c + j + 16 * v, H,
                             0xFFFF, &o[v]);
        }
        for (v = 0; v < 4; v++) _mm512_storeu_ps(h + j + 16 * v, cell16_h(cn[v], o[v]));
    }
    for (; j < j1; j += 16) {   /* the rest, one vector at a time */
        const __mmask16 n = lanes(j1 - j);
        __m512 total[4], cn, o;
        for (g = 0; g < 4; g++) total[g] = load16(pre + (size_t)g * H + j, n);
        cn = cell16_c(total, gx + j, bias + j, c + j, H, n, &o);
        store16(h + j, cell16_h(cn, o), n);
    }
}

/* ... of nb rows (the AVX-512 batches fuse the cell with the last K block, gates_cell_avx512;
 * this serves one row, and cells outside the fused path) */
FL_AVX512 static void standard_cell_avx512(const float *const *gx, const float *bias,
                                           const float *const *pre, float *const *c,
                                           float *const *h, int nb, int H, int j0, int j1)
{
    int r;
    for (r = 0; r < nb; r++) standard_cell_row_avx512(gx[r], bias, pre[r], c[r], h[r], H, j0, j1);
}

/* The last K block of the recurrent tile and the standard cell, fused: the block's sums stay
 * in registers, total = pre + sums (or sums alone), then the cell as standard_cell_avx512
 * with pre = total: the same operations, so the same bits. Rows r < nb of c, h and the
 * output rows y[r] (NULL: none) are written; pre is read, not written. */
FL_AVX512 static FL_INLINE void gates_cell_rows(const int NB, const fl_fused *f, __mmask16 n)
{
    __m512 acc[6][4], cn[6], o[6];
    l2_share none = {NULL, 0, 0};
    int r, g;
    gates_sums_avx512(NB, f->wp, f->K, f->x, f->x_ld, &none, acc);
    for (r = 0; r < NB; r++) {
        const float *pre = f->pre + (size_t)r * f->pre_ld;
        __m512 total[4];
        for (g = 0; g < 4; g++)   /* as put16 would have stored it */
            total[g] = f->add ? _mm512_add_ps(load16(pre + (size_t)g * f->H, n), acc[r][g])
                              : acc[r][g];
        cn[r] = cell16_c(total, f->gx + (size_t)r * f->gx_ld, f->bias, f->c + (size_t)r * f->c_ld,
                         f->H, n, &o[r]);
    }
    for (r = 0; r < NB; r++) {
        const __m512 hn = cell16_h(cn[r], o[r]);
        store16(f->h + (size_t)r * f->h_ld, hn, n);
        if (f->y) store16(f->y[r], hn, n);
    }
}

FL_AVX512 static void gates_cell_avx512(const fl_fused *f)
{
    const __mmask16 n = lanes(f->width);
    const int nb = f->nb;
#define FL_FUSED(NB) gates_cell_rows(NB, f, n)
    FL_ROWS_CASES(FL_FUSED)
#undef FL_FUSED
}

static const fl_simd_table avx2_table = {tile_avx2, pair_avx2, sigmoid_avx2, tanh_avx2,
                                         standard_cell_avx2, NULL, FL_TILE_ROWS_MAX, 8, 1,
                                         "avx2"};
static const fl_simd_table avx512_table = {tile_avx512, pair_avx512, sigmoid_avx2, tanh_avx2,
                                           standard_cell_avx512, gates_cell_avx512,
                                           FL_TILE_ROWS_MAX, 16, 1, "avx512"};
#endif

/* FASTLSTM_SIMD=portable|avx2 caps the choice (for tests and comparisons). */
const fl_simd_table *fl_simd(void)
{
    static const fl_simd_table *chosen = NULL;
    if (!chosen) {
        const char *force = getenv("FASTLSTM_SIMD");
        const fl_simd_table *pick = &portable_table;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
            !(force && strcmp(force, "portable") == 0)) {
            pick = &avx2_table;
            if (__builtin_cpu_supports("avx512f") && !(force && strcmp(force, "avx2") == 0))
                pick = &avx512_table;
        }
#endif
        chosen = pick;
    }
    return chosen;
}
