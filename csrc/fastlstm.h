/* fastlstm native kernels: the fused LSTM cell pass and the per-sequence driver.
 *
 * Layout conventions (all float32, row-major):
 *   w_ih (4H, I), w_hh (4H, O), w_hr (O, H), peephole (3, H) for gates i, f, o;
 *   gate blocks inside every 4H vector are in the order i, f, g, o;
 *   O = proj_size when there is a projection, else H.
 * Every product runs in the tile kernels of the kernel table (fl_simd.h; weights packed once
 * by fl_pack), except the input projection of the portable build, which calls BLAS sgemm
 * through a function pointer so that this C code links to no BLAS of its own: the Cython
 * layer hands it scipy.linalg.cython_blas.sgemm.
 *
 * Sources: fl_plan.c (fl_plan: every decision of a run and its buffer sizes), fl_run.c
 * (fl_run_sequence: input projection, time loop, scheduler), fl_cell.c (the cell math),
 * fl_pack.c (weight packing), fl_quant.c (reduced precision: packing codes, quantizing rows),
 * fl_simd_dispatch.c (the choice of kernel table) and one fl_simd_<isa>.c per instruction
 * set; fl_tuning.h holds every threshold.
 */
#ifndef FASTLSTM_H
#define FASTLSTM_H

#include <stddef.h>

#include "fl_tuning.h"   /* FL_ROW_PAD, which the Cython layer sizes buffers with */

/* Activation kinds; the Python table in fastlstm/activations.py reads these codes. */
enum fl_act_kind {
    FL_ACT_TANH = 0,
    FL_ACT_SIGMOID = 1,
    FL_ACT_RELU = 2,
    FL_ACT_HARD_SIGMOID = 3,   /* clamp(alpha*x + beta, 0, 1) */
    FL_ACT_AFFINE = 4,         /* alpha*x + beta ("linear" is alpha=1, beta=0) */
    FL_ACT_SOFTSIGN = 5,       /* x / (1 + |x|) */
    FL_ACT_SOFTPLUS = 6,       /* log(1 + e^x) */
    FL_ACT_ELU = 7,            /* x >= 0 ? x : alpha*(e^x - 1) */
    FL_ACT_LEAKY_RELU = 8,     /* x >= 0 ? x : alpha*x */
    FL_ACT_THRESHOLDED_RELU = 9, /* x > alpha ? x : 0 */
    FL_ACT_SCALED_TANH = 10,   /* alpha * tanh(beta * x) */
    FL_ACT_COUNT = 11
};

/* Precisions of the weights (fl_cell.precision); the cell state, the gate math and the outputs
 * are float32 in all. */
enum fl_precision { FL_PREC_FLOAT32 = 0, FL_PREC_INT8 = 1, FL_PREC_BF16 = 2, FL_PRECISIONS = 3 };

typedef struct {
    int kind;
    float alpha;
    float beta;
} fl_activation;

/* Fortran-style sgemm, the signature of scipy.linalg.cython_blas.sgemm. */
typedef void (*fl_sgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                            float *alpha, float *a, int *lda, float *b, int *ldb,
                            float *beta, float *c, int *ldc);

/* One direction of one layer: weights and options, immutable once built. */
typedef struct {
    int input_size, hidden_size, output_size;
    const float *w_ih;      /* (4H, I) */
    const float *w_ih_packed; /* w_ih packed by fl_pack(w_ih, 4, H, I) */
    const float *w_hh;      /* (4H, O) */
    const float *w_hh_packed; /* w_hh packed by fl_pack(w_hh, 4, H, O) */
    const float *bias;      /* (4H): b_ih + b_hh, forget_bias added to the f block */
    const float *w_hr;      /* (O, H) or NULL */
    const float *w_hr_packed; /* w_hr packed by fl_pack(w_hr, 1, O, H) */
    const float *peephole;  /* (3, H) or NULL */
    int input_forget;       /* f = 1 - i */
    int has_gate_clip, has_cell_clip, has_proj_clip;
    float gate_clip, cell_clip, proj_clip;
    fl_activation gate_act; /* recurrent_activation, for i, f, o */
    fl_activation cell_act; /* activation for the candidate g */
    fl_activation out_act;  /* activation applied to c' before h = o*act(c') */
    int standard;           /* sigmoid/tanh/tanh, no peepholes, clips or coupled gates */
    int precision;          /* fl_precision: with int8 or bfloat16 the products read the *_q
                               weights (fl_pack_q); w_ih, w_hh and w_hr are then unused */
    const void *w_ih_q, *w_hh_q, *w_hr_q;          /* packed by fl_pack_q */
    const float *w_ih_scale, *w_hh_scale, *w_hr_scale;  /* int8: a scale per row */
    const int *w_ih_comp, *w_hh_comp, *w_hr_comp;   /* int8: 128 * each row's sum */
    /* int8: W_ih in two parts, W_ih = w_ih_q * scale + w_ih_lo_q * lo_scale (the second the
     * codes of what the first misses; NULL: one part), see FL_INPUT_PARTS */
    const void *w_ih_lo_q;
    const float *w_ih_lo_scale;
    const int *w_ih_lo_comp;
} fl_cell;

/* How one direction of one layer runs over one batch: decided by fl_plan (fl_plan.c), the one
 * place that decides, once per call shape; fl_run_sequence follows it. */
typedef struct {
    int by_step;      /* inputs projected step by step inside the time loop; else all steps
                         first, before it */
    int single_row;   /* one row, one step: inputs projected pair by pair inside the step */
    int by_tiles;     /* a projection before the loop runs in the tile kernel, not sgemm */
    int compact;      /* with lengths: only the valid rows are projected (fl_seq.gx_start) */
    int fused;        /* the recurrent tile's last block and the cell in one kernel */
    int threads;      /* threads the run asks for (1: no parallel region) */
    int projection_threads; /* threads of the projection before the loop: `threads`, or more
                               when the loop runs on fewer (its own parallel region) */
    int by_rows;      /* threads own row groups for the whole run (no barrier per step);
                         else every step is cut by hidden blocks */
    int ask_ahead;    /* tiles ask for the weights read next into L2 */
    size_t step_bytes; /* weights read every step: W_hh, and W_ih when projected by step */
} fl_run_plan;

/* A stack's workspace buffers, in floats: fl_plan sizes each for every run of the call.
 * QX and QH hold reduced-precision rows (fl_quantize_rows) of the inputs and of h. */
enum { FL_BUF_GX, FL_BUF_PRE, FL_BUF_HS, FL_BUF_HS2, FL_BUF_CS, FL_BUF_HFULL, FL_BUF_A,
       FL_BUF_B, FL_BUF_XC, FL_BUF_QX, FL_BUF_QH, FL_BUFS };

/* The plan of a call: `cells` holds every (layer, direction), layer by layer, `directions[l]`
 * of them for layer l; a batch of `batch` sequences of `steps` steps, with lengths or not,
 * `stepwise` (each row's result independent of the rest of the batch: streams, pools), on
 * up to `threads` threads. Fills one fl_run_plan per cell and the size of every buffer. */
void fl_plan(const fl_cell *cells, const int *directions, int layers, int batch, int steps,
             int lengths, int stepwise, int threads, fl_run_plan *runs, size_t *floats);

/* One run of one direction over a batch of sequences.
 *
 * Rows: x, gx and y hold one row per (b, t); the row index is b*row_b + t*row_t, so the same
 * code serves batch-major (row_b = T, row_t = 1) and time-major (row_b = 1, row_t = B) data.
 * Sequences are processed in `order` (batch indices sorted by length, longest first), so at
 * step s the live sequences are a prefix of the working rows and finished ones cost nothing.
 */
typedef struct {
    int steps, batch;
    ptrdiff_t row_b, row_t;
    const float *x; int x_ld;     /* (rows, >= I) */
    float *y; int y_ld;           /* output rows, already offset to this direction's columns; NULL: not written */
    const int *lengths;           /* (B) or NULL for all `steps` */
    const int *order;             /* (B) longest first; NULL with lengths == NULL */
    int reverse;
    const float *h0, *c0;         /* (B, O), (B, H) in batch order; NULL means zeros */
    float *hn, *cn;               /* (B, O), (B, H) final states; may alias h0/c0; NULL: not written */
    float *gx;                    /* workspace (rows, 4H), or (B, 4H + FL_ROW_PAD) when the
                                     inputs are projected step by step (plan->by_step) */
    float *pre;                   /* workspace (B, 4H + FL_ROW_PAD) */
    float *hs, *hs2;              /* workspace (B, O) twice, working order (h ping-pongs) */
    float *cs;                    /* workspace (B, H), working order */
    float *hfull;                 /* workspace (B, H) when there is a projection, else NULL */
    const fl_run_plan *plan;      /* how to run (fl_plan) */
    const long long *gx_start;    /* (B) with plan->compact: gx holds only valid rows, sequence
                                     b's from row gx_start[b] (prefix sums of lengths) */
    const int *state_rows;        /* (B) or NULL: sequence b's rows of h0, c0, hn and cn are
                                     state_rows[b] (a pool's slabs), else b */
    float *xc;                    /* workspace (valid rows, I) for the packed inputs, and
                                     at least (B, I) */
    float *qx, *qh;               /* workspaces of reduced-precision rows (fl_qrows_floats) */
} fl_seq;

void fl_run_sequence(const fl_cell *cell, const fl_seq *seq, fl_sgemm_fn sgemm);

/* Recurrent weights are packed once, at load, into the tiles the step kernel streams. */
size_t fl_packed_size(int groups, int units, int K);
void fl_pack(const float *w, int groups, int units, int K, float *out);

/* Reduced precision (fl_quant.c). Weights: w (groups*units, K) of int8 (FL_PREC_INT8) or
 * bfloat16 bit patterns (uint16, FL_PREC_BF16), packed into the tiles of the process's kernel
 * table. */
int fl_precision_per(int precision);      /* inputs a 32-bit lane takes: 4 int8, 2 bfloat16 */
size_t fl_packed_q_bytes(int precision, int groups, int units, int K);
void fl_pack_q(int precision, const void *w, int groups, int units, int K, void *out);
/* Rows: x (rows, K), x_ld floats apart, into `out` (rows * parts, fl_padded_k) of uint8 q + 128
 * with q = rne(v * 127 / max|v|) and scale max|v| / 127 (int8), or of bfloat16 rounded to
 * nearest even (scale 1); padding holds zeros (128 for int8). With parts = 2 each row gives
 * two: v = x, then v = x less what the first stands for (x = hi + lo, to a part in 2^14 or
 * more): FL_SPLIT_INPUTS. */
int fl_padded_k(int precision, int K);
void fl_quantize_rows(int precision, const float *x, size_t x_ld, int rows, int K, int parts,
                      void *out, float *scales);
/* Floats a buffer of `rows` quantized rows of K inputs takes (scales, then rows); one thread's
 * buffer of a batch's quantized h rows and, with a projection, hfull's after them. */
size_t fl_qrows_floats(int precision, size_t rows, int K);
size_t fl_qh_slot_floats(const fl_cell *p, int batch);

/* Apply an activation in place to n floats. */
void fl_activate(fl_activation act, float *v, int n);

/* Runtime facts for show_config(). */
int fl_openmp_enabled(void);
int fl_openmp_version(void);
int fl_openmp_used_in_parallel(void);
int fl_cpu_has_avx2_fma(void);
const char *fl_simd_name(void);
int fl_blas_used(void);   /* the input projection calls BLAS sgemm (the portable build) */

#endif
