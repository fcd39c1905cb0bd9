/* The kernel table: the SIMD kernels of one instruction set behind one struct of function
 * pointers, chosen once at run time (fl_simd_dispatch.c). The default build has no -march
 * flags; each instruction set's file (fl_simd_portable.c, fl_simd_avx2.c, fl_simd_avx512.c)
 * compiles its bodies with target attributes and fills one fl_simd_table.
 *
 * The contract every table keeps, so that results never depend on the batch size, the tile
 * shape, the thread or the instruction set (the portable activations aside, which are libm's):
 * every output sum over k is formed in blocks of FL_K_CHUNK inputs, each block one FMA chain
 * from zero, the block sums added in order: out = ((s0 + s1) + s2) + ... The build has
 * -ffp-contract=off (setup.py): a multiply and an add stay two roundings everywhere.
 */
#ifndef FL_SIMD_H
#define FL_SIMD_H

#include "fastlstm.h"
#include "fl_tuning.h"

/* Whether the x86 instruction sets (and their target attributes) can be compiled here. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FL_SIMD_X86 1
#else
#define FL_SIMD_X86 0
#endif

/* Weights of one tile are packed [k][m][units]: for every input k, M groups (the four gates,
 * or one) of `units` output rows, where `units` is the table's: 8 for the 256-bit kernels, 16
 * for the 512-bit ones (one register holds one gate's units). */
#define FL_TILE_UNITS 8

/* out[r*out_ld + m*m_stride + u] (+)= sum_k wp[(k*M + m)*units + u] * x[r*x_ld + k]
 * for m < M (1 or 4), r < nb (<= the table's rows), u < width (<= units); with `accumulate`
 * the sum is added to out's values. `ask`: weights to bring into L2 meanwhile (a hint that
 * the AVX2 and AVX-512 four-gate tiles take, spread evenly over their inputs, at most
 * FL_L2_ASK_MAX_LINES_PER_INPUT lines an input; see block_tiles in fl_run.c). */
typedef struct {
    const float *from;   /* weights to ask for into L2 while a tile runs */
    int lines;           /* how many lines (FL_LINE_FLOATS floats) from `from` on; 0: none */
} fl_l2_ask;
#define FL_NO_ASK ((fl_l2_ask){NULL, 0})

typedef void (*fl_tile_fn)(int M, const float *wp, int K, const float *x, int x_ld, int nb,
                           float *out, int out_ld, int m_stride, int width, int accumulate,
                           fl_l2_ask ask);

/* The 4-gate tile for one row and two blocks of units (wp0, wp1), same results as two
 * tile calls with M = 4 and nb = 1. */
typedef void (*fl_pair_fn)(const float *wp0, const float *wp1, int K, const float *x,
                           float *out0, float *out1, int m_stride, int width0, int width1);

/* Sigmoid and tanh over n floats in place. */
typedef void (*fl_vec_fn)(float *v, int n);

/* The standard LSTM cell update (see fl_cell_rows in fl_cell.c) for units [j0, j1) of nb (<=
 * FL_TILE_ROWS_MAX) rows, row r's buffers at gx[r], pre[r], c[r], h[r]. */
typedef void (*fl_cell_fn)(const float *const *gx, const float *bias, const float *const *pre,
                           float *const *c, float *const *h, int nb, int H, int j0, int j1);

/* The last K block of a four-gate tile fused with the standard cell update (see
 * gates_cell_avx512): nb rows, row r of each buffer at r times its stride. */
typedef struct {
    const float *wp; int K;           /* the block's packed weights from the last K block on */
    const float *x; int x_ld;         /* h rows from the same input on */
    const float *pre; int pre_ld; int add;  /* partial sums of the earlier K blocks, if add */
    const float *gx; int gx_ld;
    const float *bias;
    float *c; int c_ld;
    float *h; int h_ld;
    float *const *y;                  /* nb output row pointers, or NULL */
    int nb, H, width;
} fl_fused;

typedef void (*fl_fused_fn)(const fl_fused *f);

/* Reduced precision (fl_cell.precision, fl_quant.c): weights packed by fl_pack_q into
 * [block][k / per][M][units][per], `per` consecutive inputs of one unit together (4 int8, 2
 * bfloat16: what one 32-bit lane of vpdpbusd / vdpbf16ps takes), and rows of inputs made by
 * fl_quantize_rows. For nb rows, M groups (gates) and `width` units of one block:
 *   int8:     v_p = (float)(sum_k w[k] * x_p[k] - w_comp) * (x_scale_p * w_scale), where x
 *             is unsigned (q + 128) and w_comp = 128 * sum_k w[k]: the sum is exact in int32,
 *             so every instruction set gives the same bits;
 *   bfloat16: v_p = sum_k w[k] * x_p[k] in float32, one chain a unit, each pair (k even, then
 *             k odd) added in that order by the widening kernels (products of two bfloat16
 *             are exact in float32); the native vdpbf16ps may round its pairs otherwise;
 * out (+)= v_0, or v_0 + v_1 with two parts (x_p: output row r's rows r * parts + p); with
 * `accumulate` the result is added to out's value (one rounding more). */
typedef struct {
    int M, units;                 /* groups, and the units a block was packed with */
    const void *w; int Kp;        /* the block's packed weights; inputs, padded to `per` */
    const void *x; int x_ld;      /* nb * parts rows of Kp inputs (uint8 or bfloat16), x_ld
                                     apart: `parts` (1 or 2) rows for each output row */
    const float *x_scale;         /* int8: the rows' scales, x row i's at i * x_scale_step */
    int x_scale_step;
    int parts;
    int accumulate;               /* out += the sums rather than out = */
    int nb;                       /* output rows: at most the table's rows */
    float *out; int out_ld; int m_stride; int width;
    int blocks;                   /* consecutive blocks, block_bytes apart in w, `units` apart
                                     in out, w_scale and w_comp; `width` is the last's */
    size_t block_bytes;
    const float *w_scale;         /* int8: unit j0's scale; group m's at m * m_stride */
    const int *w_comp;            /* int8: unit j0's 128 * sum of weights, same layout */
} fl_qtile;

typedef void (*fl_qtile_fn)(const fl_qtile *t);

/* One row of fl_quantize_rows (fastlstm.h): K inputs into `parts` rows of Kp at out and their
 * scales. A table's own version gives the same bytes and scales as the plain C one. */
typedef void (*fl_qrow_fn)(int precision, const float *x, int K, int Kp, int parts, void *out,
                           float *scales);
void fl_quantize_row_c(int precision, const float *x, int K, int Kp, int parts, void *out,
                       float *scales);

/* One reduced-precision product kernel, and whether this CPU runs it. */
typedef struct {
    fl_qtile_fn tile;
    int (*usable)(void);
    const char *name;
} fl_qkernel;

typedef struct {
    fl_tile_fn tile;
    fl_pair_fn pair;
    fl_vec_fn sigmoid;
    fl_vec_fn tanh;
    fl_cell_fn standard_cell;  /* NULL: the generic fl_cell_rows serves every cell */
    fl_fused_fn gates_cell;    /* NULL: tile, then the cell update from pre */
    int rows;            /* batch rows per tile call */
    int units;           /* hidden units per packed block (see fl_pack) */
    int project_by_tiles; /* inputs projected by `tile` rather than BLAS sgemm */
    const char *name;    /* "portable", "avx2", "avx512"; FASTLSTM_SIMD caps by these names */
    /* per precision (FL_PREC_INT8, FL_PREC_BF16), the kernels best first, ending with one
     * every CPU of this table runs; the first usable is taken (fl_qtile_kernel) */
    const fl_qkernel *quantized[FL_PRECISIONS];
    fl_qrow_fn quantize_row;     /* NULL: fl_quantize_row_c */
} fl_simd_table;

/* The table of this process: the widest this CPU runs, capped by FASTLSTM_SIMD. */
const fl_simd_table *fl_simd(void);

/* The i-th table this CPU runs, narrowest first (0: the portable one); NULL past the last.
 * For tests, which run every instruction set the CPU has whatever fl_simd() chose. */
const fl_simd_table *fl_simd_usable(int i);

/* The product kernel of `precision` in `table`: its i-th usable one (for tests), or with i = 0
 * the one runs use; NULL past the last. */
const fl_qkernel *fl_qtile_kernel(const fl_simd_table *table, int precision, int i);

#endif
