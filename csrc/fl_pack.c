/* Weight packing, once at load, into the tile layout of the process's kernel table. */
#include "fastlstm.h"
#include "fl_simd.h"

size_t fl_packed_size(int groups, int units, int K)
{
    const size_t U = (size_t)fl_simd()->units;
    const size_t blocks = ((size_t)units + U - 1) / U;
    return blocks * (size_t)K * (size_t)groups * U;
}

/* Pack w (groups*units, K), row-major, into tiles [block][k][group][U], U = the SIMD table's
 * units per block: block q holds units q*U .. q*U+U-1 of every group (the four gates for
 * w_hh, one group for w_hr), zero-padded. */
void fl_pack(const float *w, int groups, int units, int K, float *out)
{
    const int U = fl_simd()->units;
    const int blocks = (units + U - 1) / U;
    int q, k, g, u;
    for (q = 0; q < blocks; q++) {
        float *dst = out + (size_t)q * K * groups * U;
        for (k = 0; k < K; k++)
            for (g = 0; g < groups; g++)
                for (u = 0; u < U; u++) {
                    const int unit = q * U + u;
                    dst[((size_t)k * groups + g) * U + u] =
                        unit < units ? w[((size_t)g * units + unit) * K + k] : 0.0f;
                }
    }
}
