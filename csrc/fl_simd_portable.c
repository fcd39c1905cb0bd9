/* The portable kernels: plain C, for any CPU (the AVX tables' fallback and the only table
 * off x86). The same FMA chains as the SIMD tables, so the same sums; activations are libm's,
 * and the input projection of whole sequences goes to BLAS sgemm (project_by_tiles = 0). */
#include "fl_simd_internal.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

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


/* ---------------------------------------------------------------- reduced precision */

static void int8_block_portable(const fl_qtile *t)
{
    const int U = t->units, M = t->M;
    int kq, m, r, u, j, part;
    for (r = 0; r < t->nb; r++)
        for (m = 0; m < M; m++)
            for (u = 0; u < t->width; u++) {
                const size_t unit = (size_t)m * t->m_stride + u;
                float v[2];
                for (part = 0; part < t->parts; part++) {
                    const size_t xrow = (size_t)r * t->parts + part;
                    const uint8_t *x = (const uint8_t *)t->x + xrow * t->x_ld;
                    const int8_t *w = (const int8_t *)t->w + ((size_t)m * U + u) * 4;
                    int32_t acc = 0;
                    for (kq = 0; kq < t->Kp / 4; kq++, w += (size_t)M * U * 4)
                        for (j = 0; j < 4; j++) acc += (int32_t)w[j] * (int32_t)x[kq * 4 + j];
                    v[part] = (float)(acc - t->w_comp[unit])
                              * (t->x_scale[xrow * t->x_scale_step] * t->w_scale[unit]);
                }
                v[0] = t->parts == 2 ? v[0] + v[1] : v[0];
                if (t->accumulate) v[0] = t->out[(size_t)r * t->out_ld + unit] + v[0];
                t->out[(size_t)r * t->out_ld + unit] = v[0];
            }
}

static inline float bf16_value(uint16_t v)
{
    const uint32_t bits = (uint32_t)v << 16;
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

static void bf16_block_portable(const fl_qtile *t)
{
    const int U = t->units, M = t->M;
    int kp, m, r, u, part;
    for (r = 0; r < t->nb; r++)
        for (m = 0; m < M; m++)
            for (u = 0; u < t->width; u++) {
                float v[2];
                for (part = 0; part < t->parts; part++) {
                    const uint16_t *x = (const uint16_t *)t->x + ((size_t)r * t->parts + part) * t->x_ld;
                    const uint16_t *w = (const uint16_t *)t->w + ((size_t)m * U + u) * 2;
                    float acc = 0.0f;
                    for (kp = 0; kp < t->Kp / 2; kp++, w += (size_t)M * U * 2) {
                        acc = fmaf(bf16_value(w[0]), bf16_value(x[2 * kp]), acc);
                        acc = fmaf(bf16_value(w[1]), bf16_value(x[2 * kp + 1]), acc);
                    }
                    v[part] = acc;
                }
                v[0] = t->parts == 2 ? v[0] + v[1] : v[0];
                if (t->accumulate) v[0] = t->out[(size_t)r * t->out_ld + (size_t)m * t->m_stride + u] + v[0];
                t->out[(size_t)r * t->out_ld + (size_t)m * t->m_stride + u] = v[0];
            }
}

static void qtile_int8_portable(const fl_qtile *t) { fl_qtile_each_block(t, int8_block_portable); }

static void qtile_bf16_portable(const fl_qtile *t) { fl_qtile_each_block(t, bf16_block_portable); }

static const fl_qkernel int8_portable[] = {{qtile_int8_portable, fl_cpu_runs_table, "int8 portable"},
                                           {NULL, NULL, NULL}};
static const fl_qkernel bf16_portable[] = {{qtile_bf16_portable, fl_cpu_runs_table, "bfloat16 portable"},
                                           {NULL, NULL, NULL}};

const fl_simd_table fl_simd_portable = {tile_portable, pair_portable, sigmoid_portable,
                                        tanh_portable, NULL, NULL, FL_TILE_ROWS, 8, 0,
                                        "portable", {NULL, int8_portable, bf16_portable}, NULL};
