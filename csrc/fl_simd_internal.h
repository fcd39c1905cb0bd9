/* Helpers shared by the instruction sets' files (fl_simd_*.c), not by their callers: the K
 * block loop, the L2 ask shares, row-count specialization and the activation polynomials,
 * each defined once so that every table sums and rounds alike. */
#ifndef FL_SIMD_INTERNAL_H
#define FL_SIMD_INTERNAL_H

#include "fl_simd.h"

#include <stddef.h>

#define FL_INLINE inline __attribute__((always_inline))

/* Loop over the K blocks of a tile call: `block` computes one block's sums and stores them,
 * or adds them to out when told to. */
#define FL_FOR_K_BLOCKS(K, accumulate, k0, kc, add)                                     \
    for (k0 = 0; k0 < (K); k0 += FL_K_CHUNK)                                              \
        for (kc = (K) - k0 < FL_K_CHUNK ? (K) - k0 : FL_K_CHUNK, add = (accumulate) || k0 > 0; \
             kc > 0; kc = 0)

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

/* An L2 ask (fl_l2_ask) spread evenly over a tile call's K inputs: the K block [k0, k0 + kc)
 * takes its share of the call's `total` lines, per_k lines an input (at most
 * FL_L2_ASK_MAX_LINES_PER_INPUT) for its first `asking` inputs. `from` moves on past what
 * the block asked for. */
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
    sh.per_k = want > FL_L2_ASK_MAX_LINES_PER_INPUT ? FL_L2_ASK_MAX_LINES_PER_INPUT : want;
    sh.asking = sh.per_k ? (lines + sh.per_k - 1) / sh.per_k : 0;
    if (sh.asking > kc) sh.asking = kc;
    if (sh.per_k) *from += (size_t)sh.per_k * sh.asking * FL_LINE_FLOATS;
    return sh;
}

/* Input k's part of the share: prefetches into L2 (T1), not into L1, where the tile's own
 * weights are. Always inlined into the tiles' input loops. */
static inline __attribute__((always_inline)) void l2_ask_input(l2_share *sh, int k)
{
    if (k >= sh->asking) return;
    __builtin_prefetch(sh->next, 0, 2);
    if (sh->per_k > 1) __builtin_prefetch(sh->next + FL_LINE_FLOATS, 0, 2);
    if (sh->per_k > 2) __builtin_prefetch(sh->next + 2 * FL_LINE_FLOATS, 0, 2);
    if (sh->per_k > 3) __builtin_prefetch(sh->next + 3 * FL_LINE_FLOATS, 0, 2);
    sh->next += FL_LINE_FLOATS * sh->per_k;
}

/* The activations of the SIMD tables: exp is a degree-7 Taylor polynomial on
 * [-ln2/2, ln2/2] after range reduction (x = n*ln2 + r, e^x = 2^n * p(r)); sigmoid =
 * 1/(1 + e^-x), e^-x's argument clamped to [FL_EXP_MIN, FL_EXP_MAX]; tanh = x - x^3 P(x^2),
 * P the odd Taylor series of tanh to x^17, for |x| < FL_TANH_SMALL, and 1 - 2/(e^2|x| + 1)
 * beyond, 2|x| clamped at FL_TANH_2X_MAX (tanh(20) == 1 in float). Both within 1e-7 of
 * float64 over [-20, 20] (tests/test_kernels.py). Every width evaluates them by Horner,
 * highest power first, with these constants: the 256- and 512-bit versions give the same bits. */
#define FL_POLY_TERMS 8
static const float fl_exp_poly[FL_POLY_TERMS] __attribute__((unused)) = {
    1.98412698e-4f, 1.38888889e-3f, 8.33333333e-3f, 4.16666667e-2f, 1.66666667e-1f, 0.5f, 1.0f,
    1.0f};
static const float fl_tanh_poly[FL_POLY_TERMS] __attribute__((unused)) = {
    -5.90027440945585e-4f, 1.45583438705132e-3f, -3.59212803657248e-3f, 8.86323552990220e-3f,
    -2.18694885361552e-2f, 5.39682539682540e-2f, -1.33333333333333e-1f, 3.33333333333333e-1f};
#define FL_LOG2E 1.44269504088896341f
#define FL_LN2_HI 0.693359375f      /* ln 2 = HI + LO, HI exact in 9 bits */
#define FL_LN2_LO (-2.12194440e-4f)
#define FL_EXP_MIN (-87.0f)
#define FL_EXP_MAX 88.0f
#define FL_TANH_SMALL 0.55f
#define FL_TANH_2X_MAX 40.0f

/* An fl_qtile call's blocks, one at a time, by `one` (a kernel of one block). */
static inline __attribute__((always_inline)) void fl_qtile_each_block(const fl_qtile *t,
                                                                       fl_qtile_fn one)
{
    fl_qtile b = *t;
    int i;
    b.blocks = 1;
    for (i = 0; i < t->blocks; i++) {
        b.w = (const char *)t->w + (size_t)i * t->block_bytes;
        b.out = t->out + (size_t)i * t->units;
        b.w_scale = t->w_scale ? t->w_scale + (size_t)i * t->units : NULL;
        b.w_comp = t->w_comp ? t->w_comp + (size_t)i * t->units : NULL;
        b.width = i + 1 < t->blocks ? t->units : t->width;
        one(&b);
    }
}

/* For a table's kernels that need no more than the table: always 1. */
int fl_cpu_runs_table(void);

#if FL_SIMD_X86
/* The AVX2 widening products (fl_qtile), which the AVX-512 table falls back on. */
void fl_qtile_int8_avx2(const fl_qtile *t);
void fl_qtile_bf16_avx2(const fl_qtile *t);

/* The AVX2 activations over n floats, which the AVX-512 table shares for the generic cell. */
void fl_sigmoid_avx2(float *v, int n);
void fl_tanh_avx2(float *v, int n);
#endif

#endif
