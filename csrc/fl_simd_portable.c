/* The portable kernels: plain C, for any CPU (the AVX tables' fallback and the only table
 * off x86). The same FMA chains as the SIMD tables, so the same sums; activations are libm's,
 * and the input projection of whole sequences goes to BLAS sgemm (project_by_tiles = 0). */
#include "fl_simd_internal.h"

#include <math.h>
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

const fl_simd_table fl_simd_portable = {tile_portable, pair_portable, sigmoid_portable,
                                        tanh_portable, NULL, NULL, FL_TILE_ROWS, 8, 0,
                                        "portable"};
