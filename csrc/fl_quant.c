/* Reduced precision, the parts every instruction set shares: weight packing into the tiles of
 * the kernel table, and the rows of inputs the products read (fl_quantize_rows), made by one
 * plain-C function so that every table sees the same bytes. The products themselves are the
 * tables' (fl_qtile in fl_simd.h). */
#include "fastlstm.h"
#include "fl_simd.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

int fl_precision_per(int precision)
{
    return precision == FL_PREC_INT8 ? 4 : (precision == FL_PREC_BF16 ? 2 : 1);
}

static size_t element_bytes(int precision)
{
    return precision == FL_PREC_INT8 ? 1 : (precision == FL_PREC_BF16 ? 2 : 4);
}

int fl_padded_k(int precision, int K)
{
    const int per = fl_precision_per(precision);
    return (K + per - 1) / per * per;
}

size_t fl_packed_q_bytes(int precision, int groups, int units, int K)
{
    const size_t U = (size_t)fl_simd()->units;
    const size_t blocks = ((size_t)units + U - 1) / U;
    return blocks * (size_t)fl_padded_k(precision, K) * (size_t)groups * U * element_bytes(precision);
}

/* [block q][k / per][group][U][per]: block q holds units q*U .. q*U+U-1 of every group, zeros
 * past the last unit and the last input. */
void fl_pack_q(int precision, const void *w, int groups, int units, int K, void *out)
{
    const int U = fl_simd()->units, per = fl_precision_per(precision);
    const int Kp = fl_padded_k(precision, K), blocks = (units + U - 1) / U;
    const size_t esize = element_bytes(precision);
    const size_t block_elems = (size_t)Kp * groups * U;
    int q, k, g, u;
    memset(out, 0, (size_t)blocks * block_elems * esize);
    for (q = 0; q < blocks; q++)
        for (g = 0; g < groups; g++)
            for (u = 0; u < U && q * U + u < units; u++) {
                const size_t row = (size_t)g * units + (size_t)q * U + u;
                for (k = 0; k < K; k++) {
                    const size_t at = (size_t)q * block_elems
                                      + (((size_t)(k / per) * groups + g) * U + u) * per + k % per;
                    if (esize == 1) ((int8_t *)out)[at] = ((const int8_t *)w)[row * K + k];
                    else ((uint16_t *)out)[at] = ((const uint16_t *)w)[row * K + k];
                }
            }
}

/* v rounded to the nearest integer, ties to even, for |v| <= 2^22: adding and taking away
 * 1.5 * 2^23 leaves no fraction bits (the build keeps the two roundings: no -ffast-math). */
static inline float round_even(float v)
{
    const float magic = 12582912.0f;
    return (v + magic) - magic;
}

static inline float bf16_value(uint16_t v)
{
    const uint32_t bits = (uint32_t)v << 16;
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

/* float32 to bfloat16, to nearest even; NaN stays NaN */
static inline uint16_t to_bf16(float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof(bits));
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u);
    return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

/* int8 codes of v(k) for k < K into q (Kp bytes, q + 128), its scale into *scale: v is x, or
 * with `hi` x's residual after the codes hi with scale hi_scale. */
static void int8_row(const float *x, const uint8_t *hi, float hi_scale, int K, int Kp,
                     uint8_t *q, float *scale)
{
    float m = 0.0f, inv;
    int finite = 1, k;
#define FL_VALUE(k) (hi ? x[k] - hi_scale * (float)((int)hi[k] - 128) : x[k])
    for (k = 0; k < K; k++) {
        const float a = fabsf(FL_VALUE(k));
        m = a > m ? a : m;
        finite &= a <= FLT_MAX;
    }
    if (!finite) {
        /* Inf or NaN in the row: its sums come out NaN, as in float32 */
        *scale = NAN;
        memset(q, 128, (size_t)Kp);
        return;
    }
    inv = m > 0.0f ? 127.0f / m : 0.0f;
    if (!(inv <= FLT_MAX)) m = inv = 0.0f;   /* |v| < 4e-37 everywhere: a row of zeros */
    *scale = m / 127.0f;
    for (k = 0; k < K; k++) {
        float v = round_even(FL_VALUE(k) * inv);
        v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
        q[k] = (uint8_t)((int)v + 128);
    }
#undef FL_VALUE
    for (; k < Kp; k++) q[k] = 128;
}

/* One row of x (K inputs) into `parts` quantized rows of Kp at out, their scales at scales. */
void fl_quantize_row_c(int precision, const float *x, int K, int Kp, int parts, void *out,
                       float *scales)
{
    int k;
    if (precision == FL_PREC_INT8) {
        uint8_t *q = (uint8_t *)out;
        int8_row(x, NULL, 0.0f, K, Kp, q, scales);
        if (parts == 2) int8_row(x, q, scales[0], K, Kp, q + Kp, scales + 1);
        return;
    }
    {
        uint16_t *q = (uint16_t *)out;
        for (k = 0; k < K; k++) q[k] = to_bf16(x[k]);
        for (; k < Kp; k++) q[k] = 0;
        scales[0] = 1.0f;
        if (parts == 2) {
            /* x - hi is exact in float32 */
            for (k = 0; k < K; k++) q[Kp + k] = to_bf16(x[k] - bf16_value(q[k]));
            for (; k < Kp; k++) q[Kp + k] = 0;
            scales[1] = 1.0f;
        }
    }
}

void fl_quantize_rows(int precision, const float *x, size_t x_ld, int rows, int K, int parts,
                      void *out, float *scales)
{
    const fl_qrow_fn row = fl_simd()->quantize_row ? fl_simd()->quantize_row : fl_quantize_row_c;
    const int Kp = fl_padded_k(precision, K);
    const size_t row_bytes = (size_t)Kp * (precision == FL_PREC_INT8 ? 1 : 2);
    int r;
    for (r = 0; r < rows; r++)
        row(precision, x + (size_t)r * x_ld, K, Kp, parts,
            (char *)out + (size_t)r * parts * row_bytes, scales + (size_t)r * parts);
}

size_t fl_qrows_floats(int precision, size_t rows, int K)
{
    const size_t scale_floats = (rows + 15) / 16 * 16;
    const size_t data_bytes = rows * (size_t)fl_padded_k(precision, K) * element_bytes(precision);
    return scale_floats + (data_bytes + 3) / 4 + 16;
}

size_t fl_qh_slot_floats(const fl_cell *p, int batch)
{
    /* h's rows, then hfull's (with a projection): apart, since threads that own rows write
     * hfull's while others still read h's */
    return fl_qrows_floats(p->precision, (size_t)batch, p->output_size)
           + (p->w_hr ? fl_qrows_floats(p->precision, (size_t)batch, p->hidden_size) : 0);
}
