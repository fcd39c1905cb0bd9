/* The AVX2 + FMA kernels: blocks of 8 units (one ymm register holds one gate's 8 units),
 * tiles of up to FL_TILE_ROWS_MAX rows. Compiled with target attributes, so the file builds
 * without -m flags and runs only where fl_simd_dispatch.c finds AVX2 and FMA; off x86 it
 * compiles to nothing. */
#include "fl_simd_internal.h"

#if FL_SIMD_X86
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define FL_AVX2 __attribute__((target("avx2,fma")))

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

/* One K block of the four-gate tile for NB rows, G gates a pass (all four, or two passes of
 * two): out rows r, gate m at out + r*out_ld + m*m_stride. wp: [k][4 gates][8]. The sixteen
 * ymm registers hold NB*G accumulators, G weights and a broadcast: four to six rows take two
 * passes of two gates (the second reads the block's weights from L1), up to three rows all
 * four gates in one (for three rows gcc reads one of the four weights from memory each time).
 * Each accumulator is one FMA chain over k either way: the same sums as every other version.
 * Fully unrolled (the pragmas): as loops gcc kept the accumulators on the stack. */
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
                _mm_prefetch((const char *)(w + FL_PREFETCH_AHEAD + FL_LINE_FLOATS), _MM_HINT_T0);
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
    const __m256 log2e = _mm256_set1_ps(FL_LOG2E);
    const __m256 ln2_hi = _mm256_set1_ps(FL_LN2_HI), ln2_lo = _mm256_set1_ps(FL_LN2_LO);
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
                                           _mm256_set1_ps(FL_EXP_MIN)), _mm256_set1_ps(FL_EXP_MAX));
    __m256 e = exp_avx2(t);
    return _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

FL_AVX2 static inline __m256 tanh8(__m256 x)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 ax = _mm256_andnot_ps(sign, x);
    /* large |x|: 1 - 2/(e^{2|x|} + 1), sign restored; 2|x| clamped (tanh(20) == 1 in float) */
    __m256 e = exp_avx2(_mm256_min_ps(_mm256_add_ps(ax, ax), _mm256_set1_ps(FL_TANH_2X_MAX)));
    __m256 big = _mm256_sub_ps(_mm256_set1_ps(1.0f),
                               _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
    big = _mm256_or_ps(big, _mm256_and_ps(sign, x));
    /* small |x|: x * P(x^2), the Taylor series of tanh to x^17 */
    __m256 x2 = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(fl_tanh_poly[0]);
    int i;
    for (i = 1; i < FL_POLY_TERMS; i++) p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(fl_tanh_poly[i]));
    __m256 small = _mm256_fnmadd_ps(_mm256_mul_ps(p, x2), x, x);
    __m256 use_small = _mm256_cmp_ps(ax, _mm256_set1_ps(FL_TANH_SMALL), _CMP_LT_OQ);
    __m256 y = _mm256_blendv_ps(big, small, use_small);
    /* NaN in, NaN out (the comparisons above would otherwise pick a number) */
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    return _mm256_blendv_ps(y, x, nan);
}

#define FL_VEC_APPLY(name, fn8)                                          \
    FL_AVX2 void name(float *v, int n)                                   \
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

FL_VEC_APPLY(fl_sigmoid_avx2, sigmoid8_nan)
FL_VEC_APPLY(fl_tanh_avx2, tanh8)

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
 * generic fl_cell_rows: pre + (gx + b), then c' = f*c + i*g, h = o*tanh(c'). The full vectors
 * of all rows four at a time, every first half before any second, as in the AVX-512 cell: a
 * batch's calls have one vector a row, and tanh(c') waits on the rest of its row. */
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

/* ---------------------------------------------------------------- reduced precision */

/* The widening kernels, for CPUs without the int8 and bfloat16 dot-product instructions (and
 * the AVX-512 table's fallback: they take blocks of 8 or 16 units): one pass per group and 8
 * units over the rows, nb accumulators and the pass's weights in registers. */

/* Output row r's n units from unit on (fl_qtile): acc holds the sums of its `parts` rows. */
FL_AVX2 static FL_INLINE void int8_put(const fl_qtile *t, int r, size_t unit, int n,
                                       const __m256i *acc)
{
    int32_t sums[2][8];
    const float *xs = t->x_scale + (size_t)r * t->parts * t->x_scale_step;
    float *dst = t->out + (size_t)r * t->out_ld + unit;
    int u, part;
    for (part = 0; part < t->parts; part++) _mm256_storeu_si256((__m256i *)sums[part], acc[part]);
    for (u = 0; u < n; u++) {
        float v[2];
        for (part = 0; part < t->parts; part++)
            v[part] = (float)(sums[part][u] - t->w_comp[unit + u])
                      * (xs[(size_t)part * t->x_scale_step] * t->w_scale[unit + u]);
        v[0] = t->parts == 2 ? v[0] + v[1] : v[0];
        dst[u] = t->accumulate ? dst[u] + v[0] : v[0];
    }
}

/* int8: each 32-bit lane holds 4 weights of a unit; the even and the odd bytes widen to 16
 * bits (weights signed, inputs unsigned) and vpmaddwd adds their products in pairs, exactly
 * in int32: the same sums as vpdpbusd. */
/* The sums of XR (<= 6, a compile-time constant after inlining: accumulators in registers)
 * rows of inputs from row xr0 for 8 units, weights from w0, `stride` bytes an input group. */
FL_AVX2 static FL_INLINE void int8_sums_avx2(const int XR, const fl_qtile *t, const int8_t *w0,
                                             size_t stride, int xr0, __m256i *out)
{
    const __m256i low_bytes = _mm256_set1_epi16(0x00ff);
    __m256i acc[6];
    int r, kq;
#pragma GCC unroll 6
    for (r = 0; r < XR; r++) acc[r] = _mm256_setzero_si256();
    for (kq = 0; kq < t->Kp / 4; kq++) {
        const __m256i w = _mm256_loadu_si256((const __m256i *)(w0 + (size_t)kq * stride));
        const __m256i w_even = _mm256_srai_epi16(_mm256_slli_epi16(w, 8), 8);
        const __m256i w_odd = _mm256_srai_epi16(w, 8);
#pragma GCC unroll 6
        for (r = 0; r < XR; r++) {
            int32_t four;
            __m256i x;
            memcpy(&four, (const uint8_t *)t->x + (size_t)(xr0 + r) * t->x_ld + (size_t)kq * 4, 4);
            x = _mm256_set1_epi32(four);
            acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(w_even, _mm256_and_si256(x, low_bytes)));
            acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(w_odd, _mm256_srli_epi16(x, 8)));
        }
    }
#pragma GCC unroll 6
    for (r = 0; r < XR; r++) out[r] = acc[r];
}

FL_AVX2 static void int8_block_avx2(const fl_qtile *t)
{
    const int U = t->units, M = t->M, rows = t->nb * t->parts;
    const size_t stride = (size_t)M * U * 4;
    int m, half, r, xr0, nb;
    for (m = 0; m < M; m++)
        for (half = 0; half * 8 < t->width; half++) {
            const int8_t *w0 = (const int8_t *)t->w + ((size_t)m * U + half * 8) * 4;
            const size_t unit = (size_t)m * t->m_stride + half * 8;
            const int n = t->width - half * 8 < 8 ? t->width - half * 8 : 8;
            __m256i acc[2 * FL_TILE_ROWS_MAX];
            for (xr0 = 0; xr0 < rows; xr0 += 6) {
                nb = rows - xr0 < 6 ? rows - xr0 : 6;
#define FL_SUMS(NB) int8_sums_avx2(NB, t, w0, stride, xr0, acc + xr0)
                FL_ROWS_CASES(FL_SUMS)
#undef FL_SUMS
            }
            for (r = 0; r < t->nb; r++) int8_put(t, r, unit, n, acc + r * t->parts);
        }
}

/* bfloat16: each 32-bit lane holds a unit's weights for inputs k (low half) and k + 1; a
 * bfloat16 is the top half of a float32, so widening is a shift or a mask. */
FL_AVX2 static FL_INLINE void bf16_sums_avx2(const int XR, const fl_qtile *t, const uint16_t *w0,
                                             size_t stride, int xr0, __m256 *out)
{
    const __m256i high_half = _mm256_set1_epi32((int)0xffff0000u);
    __m256 acc[6];
    int r, kp;
#pragma GCC unroll 6
    for (r = 0; r < XR; r++) acc[r] = _mm256_setzero_ps();
    for (kp = 0; kp < t->Kp / 2; kp++) {
        const __m256i w = _mm256_loadu_si256((const __m256i *)(w0 + (size_t)kp * stride));
        const __m256 w_even = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
        const __m256 w_odd = _mm256_castsi256_ps(_mm256_and_si256(w, high_half));
#pragma GCC unroll 6
        for (r = 0; r < XR; r++) {
            const uint16_t *x = (const uint16_t *)t->x + (size_t)(xr0 + r) * t->x_ld + (size_t)kp * 2;
            const __m256 x_even = _mm256_castsi256_ps(_mm256_set1_epi32((int)((uint32_t)x[0] << 16)));
            const __m256 x_odd = _mm256_castsi256_ps(_mm256_set1_epi32((int)((uint32_t)x[1] << 16)));
            acc[r] = _mm256_fmadd_ps(w_even, x_even, acc[r]);
            acc[r] = _mm256_fmadd_ps(w_odd, x_odd, acc[r]);
        }
    }
#pragma GCC unroll 6
    for (r = 0; r < XR; r++) out[r] = acc[r];
}

FL_AVX2 static void bf16_block_avx2(const fl_qtile *t)
{
    const int U = t->units, M = t->M, rows = t->nb * t->parts;
    const size_t stride = (size_t)M * U * 2;
    int m, half, r, u, xr0, nb;
    for (m = 0; m < M; m++)
        for (half = 0; half * 8 < t->width; half++) {
            const uint16_t *w0 = (const uint16_t *)t->w + ((size_t)m * U + half * 8) * 2;
            const int n = t->width - half * 8 < 8 ? t->width - half * 8 : 8;
            __m256 acc[2 * FL_TILE_ROWS_MAX];
            for (xr0 = 0; xr0 < rows; xr0 += 6) {
                nb = rows - xr0 < 6 ? rows - xr0 : 6;
#define FL_SUMS(NB) bf16_sums_avx2(NB, t, w0, stride, xr0, acc + xr0)
                FL_ROWS_CASES(FL_SUMS)
#undef FL_SUMS
            }
            for (r = 0; r < t->nb; r++) {
                float sums[2][8];
                float *dst = t->out + (size_t)r * t->out_ld + (size_t)m * t->m_stride + half * 8;
                _mm256_storeu_ps(sums[0], acc[r * t->parts]);
                if (t->parts == 2) {
                    _mm256_storeu_ps(sums[1], acc[r * 2 + 1]);
                    for (u = 0; u < n; u++) sums[0][u] = sums[0][u] + sums[1][u];
                }
                for (u = 0; u < n; u++) dst[u] = t->accumulate ? dst[u] + sums[0][u] : sums[0][u];
            }
        }
}

FL_AVX2 void fl_qtile_int8_avx2(const fl_qtile *t) { fl_qtile_each_block(t, int8_block_avx2); }

FL_AVX2 void fl_qtile_bf16_avx2(const fl_qtile *t) { fl_qtile_each_block(t, bf16_block_avx2); }

static const fl_qkernel int8_avx2[] = {
    {fl_qtile_int8_avx2, fl_cpu_runs_table, "int8 avx2 (widening)"}, {NULL, NULL, NULL}};
static const fl_qkernel bf16_avx2[] = {
    {fl_qtile_bf16_avx2, fl_cpu_runs_table, "bfloat16 avx2 (widening)"}, {NULL, NULL, NULL}};

const fl_simd_table fl_simd_avx2 = {tile_avx2, pair_avx2, fl_sigmoid_avx2, fl_tanh_avx2,
                                    standard_cell_avx2, NULL, FL_TILE_ROWS_MAX, 8, 1, "avx2",
                                    {NULL, int8_avx2, bf16_avx2}, NULL};
#endif
