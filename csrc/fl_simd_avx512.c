/* The AVX-512 kernels: blocks of 16 units (one zmm register holds one gate's 16 units), so a
 * tile of nb rows keeps 4*nb accumulators (24 for six rows) and per input k loads 4 weight
 * vectors and nb broadcasts for 4*nb FMAs. The K blocks, the FMA chains and the activation
 * polynomials are those of the AVX2 code lane for lane, so both give identical bits; the
 * generic cell uses the AVX2 activations. Only AVX-512F is used. Off x86 the file compiles
 * to nothing. */
#include "fl_simd_internal.h"

#if FL_SIMD_X86
#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define FL_AVX512 __attribute__((target("avx512f,avx2,fma")))

FL_AVX512 static FL_INLINE __mmask16 lanes(int n)
{
    return (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1u);
}

/* Loads and stores of the first `n` lanes. A full vector takes the plain instruction: masked
 * stores cost more (in the tiles' sums). */
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
        _mm_prefetch((const char *)(w + FL_PREFETCH_AHEAD + FL_LINE_FLOATS), _MM_HINT_T0);
        _mm_prefetch((const char *)(w + FL_PREFETCH_AHEAD + 2 * FL_LINE_FLOATS), _MM_HINT_T0);
        _mm_prefetch((const char *)(w + FL_PREFETCH_AHEAD + 3 * FL_LINE_FLOATS), _MM_HINT_T0);
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
 * read them back. */
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

/* exp, sigmoid and tanh: exp_avx2, sigmoid8 and tanh8 of fl_simd_avx2.c on 16 lanes, the same
 * operations. */
FL_AVX512 static FL_INLINE __m512 exp16(__m512 x)
{
    const __m512 log2e = _mm512_set1_ps(FL_LOG2E);
    const __m512 ln2_hi = _mm512_set1_ps(FL_LN2_HI), ln2_lo = _mm512_set1_ps(FL_LN2_LO);
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
                                           _mm512_set1_ps(FL_EXP_MIN)), _mm512_set1_ps(FL_EXP_MAX));
    __m512 y = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), exp16(t)));
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), y, x);
}

FL_AVX512 static FL_INLINE __m512 tanh16(__m512 x)
{
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    const __m512i xi = _mm512_castps_si512(x);
    __m512 ax = _mm512_castsi512_ps(_mm512_andnot_epi32(sign, xi));
    __m512 e = exp16(_mm512_min_ps(_mm512_add_ps(ax, ax), _mm512_set1_ps(FL_TANH_2X_MAX)));
    __m512 big = _mm512_sub_ps(_mm512_set1_ps(1.0f),
                               _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
    big = _mm512_castsi512_ps(_mm512_or_epi32(_mm512_castps_si512(big), _mm512_and_epi32(sign, xi)));
    __m512 x2 = _mm512_mul_ps(x, x);
    __m512 p = _mm512_set1_ps(fl_tanh_poly[0]);
    int i;
    for (i = 1; i < FL_POLY_TERMS; i++) p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(fl_tanh_poly[i]));
    __m512 small = _mm512_fnmadd_ps(_mm512_mul_ps(p, x2), x, x);
    __m512 y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(ax, _mm512_set1_ps(FL_TANH_SMALL), _CMP_LT_OQ), big, small);
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), y, x);
}

/* The standard cell on 16 lanes (see standard_cell_avx2), in two halves. The first: gate g's
 * pre-activation is total[g] + (gx + bias) at g*H; c' = f*c + i*g goes to c and is returned,
 * with the output gate o in *o. The second: h' = o*tanh(c'). Split so that a tile of rows can
 * run every row's first half before any second half: tanh(c') waits on the rest of its row,
 * and rows one after another left the core waiting on those chains. */
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

/* ---------------------------------------------------------------- reduced precision */

/* The dot-product instructions: per input group (4 int8 or 2 bfloat16 inputs) the M weight
 * vectors of the block (16 units each) and one broadcast a row, as in the float32 tile. */
#define FL_VNNI __attribute__((target("avx512f,avx2,fma,avx512bw,avx512vnni")))
#define FL_BF16 __attribute__((target("avx512f,avx2,fma,avx512bw,avx512bf16")))

/* Bytes ahead the tiles prefetch their weights: as many as the float32 tiles do. */
#define FL_Q_PREFETCH_BYTES (FL_PREFETCH_AHEAD * 4)

/* *acc += vpdpbusd(x, w), as an asm statement with the accumulator an in-out operand: gcc 12
 * compiled the intrinsic with a register copy of every accumulator every input group (the
 * six-row batch ran 15% slower). */
FL_VNNI static FL_INLINE void dpbusd(__m512i *acc, __m512i x, __m512i w)
{
    __asm__("vpdpbusd %2, %1, %0" : "+v"(*acc) : "v"(x), "v"(w));
}

/* The tiles run in passes over G of the M groups (gates) for all XR = nb * parts rows of
 * inputs, G * XR accumulators each (G the most the table's budget allows: 12 for vpdpbusd,
 * which on Zen 5 keeps its two a cycle with up to 12-14 accumulators and falls to one or less
 * with 16-24; 24 for vdpbf16ps). Each weight vector is loaded once a call and used XR times:
 * a row at a time, the weights' L2 traffic, not the instructions, set the pace. */
#define FL_PASS_CASES(call)                                                        \
    if (t->M == 1) {                                                                \
        switch (t->nb) {                                                            \
        case 1: call(1, 1, 1); break; case 2: call(2, 1, 1); break;                 \
        case 3: call(3, 1, 1); break; case 4: call(4, 1, 1); break;                 \
        case 5: call(5, 1, 1); break; case 6: call(6, 1, 1); break;                 \
        default: break;                                                             \
        }                                                                           \
    } else if (t->parts == 1) {                                                     \
        switch (t->nb) {                                                            \
        case 1: call(1, G_OF(1), 1); break; case 2: call(2, G_OF(2), 1); break;     \
        case 3: call(3, G_OF(3), 1); break; case 4: call(4, G_OF(4), 1); break;     \
        case 5: call(5, G_OF(5), 1); break; case 6: call(6, G_OF(6), 1); break;     \
        default: break;                                                             \
        }                                                                           \
    } else {                                                                        \
        switch (t->nb) {                                                            \
        case 1: call(2, G_OF(2), 2); break; case 2: call(4, G_OF(4), 2); break;     \
        case 3: call(6, G_OF(6), 2); break; case 4: call(8, G_OF(8), 2); break;     \
        case 5: call(10, G_OF(10), 2); break; case 6: call(12, G_OF(12), 2); break; \
        default: break;                                                             \
        }                                                                           \
    }

/* int8: XR rows of inputs (output row r's parts at r * P ..), gates [m0, m0 + G) of M. A lone
 * row keeps two sets of accumulators (even and odd input groups) so that eight chains
 * overlap: integer sums, so no bit changes. */
FL_VNNI static FL_INLINE void int8_pass(const int XR, const int G, const int P, const fl_qtile *t,
                                        int m0, __mmask16 n)
{
    const int SETS = XR == 1 ? 2 : 1, K4 = t->Kp / 4, M = t->M;
    const int8_t *w = (const int8_t *)t->w + m0 * 64;
    __m512i acc[2][12][4];
    int k, r, g, s;
#pragma GCC unroll 2
    for (s = 0; s < SETS; s++)
#pragma GCC unroll 12
        for (r = 0; r < XR; r++)
#pragma GCC unroll 4
            for (g = 0; g < G; g++) acc[s][r][g] = _mm512_setzero_si512();
    for (k = 0; k < K4; k += SETS)
        for (s = 0; s < SETS && k + s < K4; s++) {
            const int8_t *wk = w + (size_t)(k + s) * M * 64;
            __m512i wv[4];
#pragma GCC unroll 4
            for (g = 0; g < G; g++) {
                wv[g] = _mm512_loadu_si512(wk + g * 64);
                _mm_prefetch((const char *)(wk + g * 64 + FL_Q_PREFETCH_BYTES), _MM_HINT_T0);
            }
#pragma GCC unroll 12
            for (r = 0; r < XR; r++) {
                int32_t four;
                __m512i xb;
                memcpy(&four, (const uint8_t *)t->x + (size_t)r * t->x_ld + (size_t)(k + s) * 4, 4);
                xb = _mm512_set1_epi32(four);
#pragma GCC unroll 4
                for (g = 0; g < G; g++) dpbusd(&acc[s][r][g], xb, wv[g]);
            }
        }
#pragma GCC unroll 4
    for (g = 0; g < G; g++) {
        const size_t unit = (size_t)(m0 + g) * t->m_stride;
        const __m512i comp = _mm512_maskz_loadu_epi32(n, t->w_comp + unit);
        const __m512 ws = _mm512_maskz_loadu_ps(n, t->w_scale + unit);
#pragma GCC unroll 6
        for (r = 0; r < XR / P; r++) {
            __m512 v[2];
#pragma GCC unroll 2
            for (s = 0; s < P; s++) {
                const int xr = r * P + s;
                const __m512i sum = SETS == 2 ? _mm512_add_epi32(acc[0][xr][g], acc[1][xr][g])
                                              : acc[0][xr][g];
                const __m512 scale = _mm512_mul_ps(
                    _mm512_set1_ps(t->x_scale[(size_t)xr * t->x_scale_step]), ws);
                v[s] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(sum, comp)), scale);
            }
            {
                float *dst = t->out + (size_t)r * t->out_ld + unit;
                __m512 sum = P == 2 ? _mm512_add_ps(v[0], v[1]) : v[0];
                if (t->accumulate) sum = _mm512_add_ps(_mm512_maskz_loadu_ps(n, dst), sum);
                _mm512_mask_storeu_ps(dst, n, sum);
            }
        }
    }
}

FL_VNNI static void int8_block_vnni(const fl_qtile *t)
{
    const __mmask16 n = lanes(t->width);
    int m0;
    if (t->parts == 2 && t->nb > 3) {
        /* two calls of half the rows, two gates a pass: each weight vector then feeds six
         * accumulators, where one gate a pass over all rows broadcasts an input for each */
        fl_qtile half = *t;
        half.nb = (t->nb + 1) / 2;
        int8_block_vnni(&half);
        half.x = (const uint8_t *)t->x + (size_t)half.nb * 2 * t->x_ld;
        half.x_scale = t->x_scale + (size_t)half.nb * 2 * t->x_scale_step;
        half.out = t->out + (size_t)half.nb * t->out_ld;
        half.nb = t->nb - half.nb;
        int8_block_vnni(&half);
        return;
    }
#define G_OF(XR) ((XR) <= 3 ? 4 : (XR) <= 6 ? 2 : 1)
#define FL_INT8_PASSES(XR, G, P) \
    for (m0 = 0; m0 < t->M; m0 += (G)) int8_pass(XR, G, P, t, m0, n)
    FL_PASS_CASES(FL_INT8_PASSES)
#undef FL_INT8_PASSES
#undef G_OF
}

/* *acc += vdpbf16ps(x, w), as an asm statement for the reason of dpbusd */
FL_BF16 static FL_INLINE void dpbf16(__m512 *acc, __m512i x, __m512i w)
{
    __asm__("vdpbf16ps %2, %1, %0" : "+v"(*acc) : "v"(x), "v"(w));
}

/* bfloat16: the same passes, one vdpbf16ps chain a unit whatever the rows, so that a row's
 * bits never depend on the rows beside it. */
FL_BF16 static FL_INLINE void bf16_pass(const int XR, const int G, const int P, const fl_qtile *t,
                                        int m0, __mmask16 n)
{
    const int K2 = t->Kp / 2, M = t->M;
    const uint16_t *w = (const uint16_t *)t->w + m0 * 32;
    __m512 acc[12][4];
    int k, r, g;
#pragma GCC unroll 12
    for (r = 0; r < XR; r++)
#pragma GCC unroll 4
        for (g = 0; g < G; g++) acc[r][g] = _mm512_setzero_ps();
    for (k = 0; k < K2; k++) {
        const uint16_t *wk = w + (size_t)k * M * 32;
        __m512i wv[4];
#pragma GCC unroll 4
        for (g = 0; g < G; g++) {
            wv[g] = _mm512_loadu_si512(wk + g * 32);
            _mm_prefetch((const char *)(wk + g * 32) + FL_Q_PREFETCH_BYTES, _MM_HINT_T0);
        }
#pragma GCC unroll 12
        for (r = 0; r < XR; r++) {
            int32_t two;
            __m512i xb;
            memcpy(&two, (const uint16_t *)t->x + (size_t)r * t->x_ld + (size_t)k * 2, 4);
            xb = _mm512_set1_epi32(two);
#pragma GCC unroll 4
            for (g = 0; g < G; g++) dpbf16(&acc[r][g], xb, wv[g]);
        }
    }
#pragma GCC unroll 6
    for (r = 0; r < XR / P; r++)
#pragma GCC unroll 4
        for (g = 0; g < G; g++)
        {
            float *dst = t->out + (size_t)r * t->out_ld + (size_t)(m0 + g) * t->m_stride;
            __m512 sum = P == 2 ? _mm512_add_ps(acc[2 * r][g], acc[2 * r + 1][g]) : acc[r][g];
            if (t->accumulate) sum = _mm512_add_ps(_mm512_maskz_loadu_ps(n, dst), sum);
            _mm512_mask_storeu_ps(dst, n, sum);
        }
}

FL_BF16 static void bf16_block_native(const fl_qtile *t)
{
    const __mmask16 n = lanes(t->width);
    int m0;
#define G_OF(XR) ((XR) <= 6 ? 4 : 2)
#define FL_BF16_PASSES(XR, G, P) \
    for (m0 = 0; m0 < t->M; m0 += (G)) bf16_pass(XR, G, P, t, m0, n)
    FL_PASS_CASES(FL_BF16_PASSES)
#undef FL_BF16_PASSES
#undef G_OF
}

#define FL_AVX512BW __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

/* fl_quantize_rows, 16 inputs a vector: the same float32 operations as the plain C, so the
 * same bytes; int8's largest |v| is order-free. */
FL_AVX512BW static FL_INLINE __m512 abs16(__m512 v)
{
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff)));
}

/* v(k): x, or with `hi` x less what the codes hi (scale hi_scale) stand for */
FL_AVX512BW static FL_INLINE __m512 row_value(const float *x, const uint8_t *hi, __m512 hi_scale,
                                             int k, __mmask16 n)
{
    __m512 v = _mm512_maskz_loadu_ps(n, x + k);
    if (hi) {
        const __m512i q = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(n, hi + k)),
                                           _mm512_set1_epi32(128));
        v = _mm512_sub_ps(v, _mm512_mul_ps(hi_scale, _mm512_cvtepi32_ps(q)));
    }
    return v;
}

FL_AVX512BW static void int8_row_avx512(const float *x, const uint8_t *hi, float hi_scale, int K,
                                      int Kp, uint8_t *q, float *scale)
{
    const __m512 hs = _mm512_set1_ps(hi_scale), magic = _mm512_set1_ps(12582912.0f);
    const __m512 top = _mm512_set1_ps(127.0f), bottom = _mm512_set1_ps(-127.0f);
    __m512 most = _mm512_setzero_ps();
    __mmask16 bad = 0;
    float m, inv;
    int k;
    for (k = 0; k < K; k += 16) {
        const __mmask16 n = lanes(K - k);
        const __m512 a = abs16(row_value(x, hi, hs, k, n));
        bad |= _mm512_mask_cmp_ps_mask(n, a, _mm512_set1_ps(FLT_MAX), _CMP_NLE_UQ);
        most = _mm512_mask_max_ps(most, n, most, a);   /* lanes past K hold no input */
    }
    if (bad) {
        *scale = NAN;
        memset(q, 128, (size_t)Kp);
        return;
    }
    m = _mm512_reduce_max_ps(most);
    inv = m > 0.0f ? 127.0f / m : 0.0f;
    if (!(inv <= FLT_MAX)) m = inv = 0.0f;   /* as fl_quant.c's int8_row */
    *scale = m / 127.0f;
    for (k = 0; k < K; k += 16) {
        const __mmask16 n = lanes(K - k);
        __m512 v = _mm512_mul_ps(row_value(x, hi, hs, k, n), _mm512_set1_ps(inv));
        v = _mm512_sub_ps(_mm512_add_ps(v, magic), magic);
        v = _mm512_min_ps(_mm512_max_ps(v, bottom), top);
        _mm_mask_storeu_epi8(q + k, n, _mm512_cvtepi32_epi8(
            _mm512_add_epi32(_mm512_cvtps_epi32(v), _mm512_set1_epi32(128))));
    }
    for (k = K; k < Kp; k++) q[k] = 128;
}

/* float32 to bfloat16 to nearest even, NaN kept: the integer steps of fl_quant.c's to_bf16 */
FL_AVX512BW static FL_INLINE __m256i bf16_16(__m512 v)
{
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_srli_epi32(
        _mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd)), 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(
        _mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet));
}

FL_AVX512BW static void quantize_row_bw(int precision, const float *x, int K, int Kp, int parts,
                                         void *out, float *scales)
{
    int k;
    if (precision == FL_PREC_INT8) {
        uint8_t *q = (uint8_t *)out;
        int8_row_avx512(x, NULL, 0.0f, K, Kp, q, scales);
        if (parts == 2) int8_row_avx512(x, q, scales[0], K, Kp, q + Kp, scales + 1);
        return;
    }
    {
        uint16_t *q = (uint16_t *)out;
        for (k = 0; k < K; k += 16) {
            const __mmask16 n = lanes(K - k);
            const __m512 v = _mm512_maskz_loadu_ps(n, x + k);
            const __m256i hi = bf16_16(v);
            _mm256_mask_storeu_epi16(q + k, n, hi);
            if (parts == 2) {
                const __m512 back = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(hi), 16));
                _mm256_mask_storeu_epi16(q + Kp + k, n, bf16_16(_mm512_sub_ps(v, back)));
            }
        }
        for (k = K; k < Kp; k++) {
            q[k] = 0;
            if (parts == 2) q[Kp + k] = 0;
        }
        scales[0] = 1.0f;
        if (parts == 2) scales[1] = 1.0f;
    }
}

static void quantize_row_avx512(int precision, const float *x, int K, int Kp, int parts,
                                void *out, float *scales)
{
    static int has_bw = -1;
    if (has_bw < 0) {
        __builtin_cpu_init();
        has_bw = __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    }
    if (has_bw) quantize_row_bw(precision, x, K, Kp, parts, out, scales);
    else fl_quantize_row_c(precision, x, K, Kp, parts, out, scales);
}

FL_VNNI static void qtile_int8_vnni(const fl_qtile *t) { fl_qtile_each_block(t, int8_block_vnni); }

FL_BF16 static void qtile_bf16_native(const fl_qtile *t) { fl_qtile_each_block(t, bf16_block_native); }

static int cpu_has_vnni(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw");
}

static int cpu_has_bf16(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw");
}

static const fl_qkernel int8_avx512[] = {
    {qtile_int8_vnni, cpu_has_vnni, "int8 avx512 (vpdpbusd)"},
    {fl_qtile_int8_avx2, fl_cpu_runs_table, "int8 avx2 (widening)"}, {NULL, NULL, NULL}};
static const fl_qkernel bf16_avx512[] = {
    {qtile_bf16_native, cpu_has_bf16, "bfloat16 avx512 (vdpbf16ps)"},
    {fl_qtile_bf16_avx2, fl_cpu_runs_table, "bfloat16 avx2 (widening)"}, {NULL, NULL, NULL}};

const fl_simd_table fl_simd_avx512 = {tile_avx512, pair_avx512, fl_sigmoid_avx2, fl_tanh_avx2,
                                      standard_cell_avx512, gates_cell_avx512,
                                      FL_TILE_ROWS_MAX, 16, 1, "avx512",
                                      {NULL, int8_avx512, bf16_avx512}, quantize_row_avx512};
#endif
