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
} fl_simd_table;

/* The table of this process: the widest this CPU runs, capped by FASTLSTM_SIMD. */
const fl_simd_table *fl_simd(void);

/* The i-th table this CPU runs, narrowest first (0: the portable one); NULL past the last.
 * For tests, which run every instruction set the CPU has whatever fl_simd() chose. */
const fl_simd_table *fl_simd_usable(int i);

#endif
