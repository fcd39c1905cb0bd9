/* One run of one direction (fl_run_sequence): the input projection, then the time loop and
 * its scheduler (how a step's work is cut over threads, row groups and hidden blocks, the
 * barriers), calling the kernel table for the products and the cell update. See fastlstm.h
 * for the layouts, fl_tuning.h for the thresholds. */
#include "fastlstm.h"
#include "fl_cell.h"
#include "fl_omp.h"
#include "fl_simd.h"

#include <string.h>

/* Set once a parallel region with more than one thread has run in this process; a forked
 * child reads it to know that libgomp's thread pool did not survive the fork. */
static volatile int fl_parallel_used = 0;
static unsigned fl_calls = 0;   /* runs so far, for the block order (step_ctx.flip) */

/* ------------------------------------------------------------------ the time loop */

/* Inputs are projected all steps first (input_projection), or, from
 * FL_STEP_PROJECTION_MIN_BATCH rows with SIMD tiles, step by step inside the time loop (by_step,
 * input_step): the tile then takes x_t . W_ih^T for a block right before h . W_hh^T, into a
 * (B, 4H) buffer that stays in cache, where a projection of all steps first writes B*T*4H
 * floats that every step reads back from memory, a row here and a row there. */
typedef struct {
    const fl_cell *p;
    const fl_seq *s;
    const fl_simd_table *simd;
    int by_step;    /* inputs projected step by step: Gx row r is working row r of this step,
                       gathered from x into s->xc first */
    int ld_pre, ld_gx; /* row strides of pre, and of gx (4H, or padded when by_step) */
    int fused;      /* recurrent tile and standard cell in one kernel (recurrent_fused) */
    int single_row; /* one row, one step (a stream step): its inputs are projected pair by
                       pair inside the step (gate_work), not before it */
    int flip;       /* parity of this call: hidden blocks go in reverse order on the steps
                       where (step + flip) is odd (see gate_work) */
    int ask_ahead;  /* block_tiles asks for the weights read next into L2 (FL_L2_WEIGHT_BYTES) */
    int by_rows;    /* with more than one thread, each owns row groups for the whole run */
    /* reduced precision (p->precision): the product kernel, and the padded inputs of W_ih,
     * W_hh and W_hr's rows and their bytes an input */
    fl_qtile_fn qtile;
    int kp_in, kp_out, kp_hidden, esize;
    size_t qh_slot;  /* floats of one thread's quantized h rows in s->qh (fl_qh_slot_floats) */
} step_ctx;

static inline int row_length(const fl_seq *s, int b)
{
    return s->lengths ? s->lengths[b] : s->steps;
}

/* The row of x and y that working row r reads at this step; *gx_row is its row of gx
 * (the same, its place among the valid rows when the projection was compacted, or r when
 * the inputs are projected step by step). */
static inline ptrdiff_t data_row(const step_ctx *cx, int r, int step, ptrdiff_t *gx_row)
{
    const fl_seq *s = cx->s;
    const int b = s->order ? s->order[r] : r;
    const int t = s->reverse ? row_length(s, b) - 1 - step : step;
    const ptrdiff_t row = (ptrdiff_t)b * s->row_b + (ptrdiff_t)t * s->row_t;
    *gx_row = cx->by_step ? r : (s->plan->compact ? (ptrdiff_t)s->gx_start[b] + t : row);
    return row;
}

/* Split n tasks into nth contiguous static ranges; the same thread gets the same range every
 * step, so its block of the recurrent weights stays in its own cache. */
static inline void my_range(long n, int tid, int nth, long *a, long *b)
{
    *a = n * tid / nth;
    *b = n * (tid + 1) / nth;
}

/* The fused update of rows r0..r0+nb for hidden units [j0, j1), from pre = h_prev . W_hh^T. */
static void update_rows(const step_ctx *cx, int step, int r0, int nb, int j0, int j1,
                        float *h_next)
{
    const fl_cell *p = cx->p;
    const fl_seq *s = cx->s;
    const int H = p->hidden_size, O = p->output_size;
    const int simd_cell = p->standard && cx->simd->standard_cell != NULL;
    const float *gx[FL_TILE_ROWS_MAX];
    float *pre[FL_TILE_ROWS_MAX], *c[FL_TILE_ROWS_MAX], *h[FL_TILE_ROWS_MAX];
    ptrdiff_t row[FL_TILE_ROWS_MAX];
    int r;
    for (r = 0; r < nb; r++) {   /* row r0 + r's buffers */
        ptrdiff_t gx_row;
        row[r] = data_row(cx, r0 + r, step, &gx_row);
        gx[r] = s->gx + gx_row * cx->ld_gx;
        pre[r] = s->pre + (size_t)(r0 + r) * cx->ld_pre;
        c[r] = s->cs + (size_t)(r0 + r) * H;
        h[r] = p->w_hr ? s->hfull + (size_t)(r0 + r) * H : h_next + (size_t)(r0 + r) * O;
        if (!simd_cell) fl_cell_rows(p, gx[r], pre[r], c[r], h[r], j0, j1);
    }
    /* the standard cell: the group's rows in one call, whose work then overlaps (AVX2) */
    if (simd_cell)
        cx->simd->standard_cell(gx, p->bias, (const float *const *)pre, c, h, nb, H, j0, j1);
    if (!p->w_hr && s->y)
        for (r = 0; r < nb; r++)
            memcpy(s->y + row[r] * s->y_ld + j0, h[r] + j0, (size_t)(j1 - j0) * sizeof(float));
}

/* Ask for the rows' Gx slices of units j0.. (four gates) and their output slices, which the
 * update of this block reads and writes once the tiles are done. Gx rows of one step lie
 * a whole sequence apart in memory (rows are (b, t)), so no hardware prefetcher predicts
 * them: without this the update waits on memory for every slice.
 * Always inlined: as a call of its own, gcc found it free of side effects and dropped it. */
static inline __attribute__((always_inline)) void prefetch_rows(const step_ctx *cx, int step, int r0, int nb, int j0)
{
    const fl_seq *s = cx->s;
    const int H = cx->p->hidden_size;
    int r, g;
    for (r = r0; r < r0 + nb; r++) {
        ptrdiff_t gx_row;
        const ptrdiff_t row = data_row(cx, r, step, &gx_row);
        const float *gxr = s->gx + gx_row * cx->ld_gx + j0;
        if (!cx->by_step)
            for (g = 0; g < 4; g++) __builtin_prefetch(gxr + (size_t)g * H, 0, 3);
        if (s->y) __builtin_prefetch(s->y + row * s->y_ld + j0, 1, 3);
    }
}

/* Row groups: `batch` working rows are cut into `groups` groups of at most the simd table's
 * `rows` rows, as even as can be (group g holds rows [g*B/n, (g+1)*B/n)), so a batch of 32
 * runs as 5,5,6,5,5,6 rather than 6,6,6,6,6,2. Split by rows, the cut is made once per run
 * from the whole batch, so a row stays with the thread that owns its group for the whole run;
 * at each step a group covers only its rows below `active`. Split by blocks, every step cuts
 * its live rows afresh: a batch that has shrunk to 17 rows runs as 4,4,4,5, not 5,5,6,1 (same
 * bits, since a row's sums never depend on the rows beside it).
 *
 * Work of one step is cut two ways (see time_loop): by hidden blocks q in [q0, q1) over all
 * row groups (owner_nth == 1), or by row groups over all blocks: thread `owner` of owner_nth
 * takes a contiguous run of groups, or, with lengths (rows sorted longest first), the groups
 * dealt in snake order 0 1 .. n-1 n-1 .. 1 0 0 1 .., which balances the shrinking batch. */
typedef struct {
    int q0, q1;           /* hidden (or output) blocks */
    int owner, owner_nth; /* row groups */
    int groups, batch;    /* the cut: `groups` groups of the run's `batch` rows */
    int snake;
} work_share;

static inline int owns_group(work_share w, int g)
{
    if (w.owner_nth == 1) return 1;
    if (w.snake) {
        const int pos = g % w.owner_nth, lap = g / w.owner_nth;
        return (lap % 2 ? w.owner_nth - 1 - pos : pos) == w.owner;
    }
    return g * (long)w.owner_nth / w.groups == w.owner;
}

/* Rows [*r0, *r0 + *nb) of group g below `active`; *nb <= 0 when none are. */
static inline void group_rows(work_share w, int g, int active, int *r0, int *nb)
{
    const int a = (int)((long)g * w.batch / w.groups), b = (int)((long)(g + 1) * w.batch / w.groups);
    *r0 = a;
    *nb = (b < active ? b : active) - a;
}

/* Moves *g on to the share's next group with rows below `active` and gives its rows; 0 when
 * none is left. Loop: for (g = -1; next_group(w, active, &g, &r0, &nb);) ... */
static inline int next_group(work_share w, int active, int *g, int *r0, int *nb)
{
    while (++*g < w.groups) {
        if (!owns_group(w, *g)) continue;
        group_rows(w, *g, active, r0, nb);
        if (*nb > 0) return 1;
    }
    return 0;
}

/* One row: out (4H floats, gates H apart) for the units of blocks blk and blk + 1 = x . W^T,
 * W packed ([block][k][4][U], K inputs a block), by the pair kernel, or by the tile when blk
 * is the last block. */
static void row_pair(const fl_simd_table *simd, const float *wp, int K, int H, int blk,
                    const float *x, float *out)
{
    const int U = simd->units, j0 = blk * U, j1 = j0 + U < H ? j0 + U : H;
    const size_t block_floats = (size_t)K * 4 * U;
    if (j1 < H) {
        const int j2 = j1 + U < H ? j1 + U : H;
        simd->pair(wp + blk * block_floats, wp + (blk + 1) * block_floats, K, x, out + j0,
                   out + j1, H, j1 - j0, j2 - j1);
        return;
    }
    simd->tile(4, wp + blk * block_floats, K, x, K, 1, out + j0, 4 * H, H, j1 - j0, 0, FL_NO_ASK);
}

/* out rows of the share's groups (+)= their x rows . W^T for one block of packed weights wq
 * ([k][4][U], K inputs), one tile call a group. The first group reads the block from L3 (or
 * memory) and leaves it in L2 for the others. With cx->ask_ahead, the groups after the first
 * ask for `next` (the weights the step reads after these) into L2, each an equal share of its
 * lines, spread by the tile over its inputs: the next block then comes from L3 while this one
 * is multiplied from L2, instead of when the next first group waits on it. Only for steps
 * whose weights pass FL_L2_WEIGHT_BYTES (weights that fit L2 ran slower with it) and with
 * more than one group. */
static void block_tiles(const step_ctx *cx, work_share w, int active, const float *wq, int K,
                        const float *x, int x_ld, float *out, int out_ld, int width,
                        fl_l2_ask next)
{
    const int H = cx->p->hidden_size;
    int g, r0, nb, j, n = 0;
    if (cx->ask_ahead && next.lines > 0)
        for (g = -1; next_group(w, active, &g, &r0, &nb);) n++;
    for (g = -1, j = 0; next_group(w, active, &g, &r0, &nb); j++) {
        fl_l2_ask ask = FL_NO_ASK;
        if (n > 1 && j > 0) {
            long a, b;
            my_range(next.lines, j - 1, n - 1, &a, &b);
            ask.from = next.from + a * FL_LINE_FLOATS, ask.lines = (int)(b - a);
        }
        cx->simd->tile(4, wq, K, x + (size_t)r0 * x_ld, x_ld, nb, out + (size_t)r0 * out_ld,
                       out_ld, H, width, 0, ask);
    }
}

/* ------------------------------------------------------------------ reduced precision */

/* A buffer of quantized rows (fl_qrows_floats): `rows` scales, then the rows. */
static inline float *qrows_scales(float *base) { return base; }
static inline void *qrows_data(float *base, size_t rows) { return base + (rows + 15) / 16 * 16; }

/* The buffer of quantized h rows this thread writes and reads: its own when each step is cut
 * by blocks (every thread quantizes all the rows it multiplies, so no barrier is needed
 * between quantizing and using them), a shared one cut by rows (each thread its own rows). */
static inline float *qh_slot(const step_ctx *cx, int tid)
{
    return cx->s->qh + (cx->by_rows ? 0 : (size_t)tid * cx->qh_slot);
}

/* hfull's quantized rows (a projection's inputs): after h's in the same slot */
static inline float *qhfull_slot(const step_ctx *cx, int tid)
{
    return qh_slot(cx, tid) + fl_qrows_floats(cx->p->precision, (size_t)cx->s->batch,
                                              cx->p->output_size);
}

/* The same for the inputs projected step by step: FL_INPUT_PARTS rows a row of the batch. */
static inline float *qx_slot(const step_ctx *cx, int tid)
{
    const size_t rows = (size_t)cx->s->batch * FL_INPUT_PARTS;
    return cx->s->qx + (cx->by_rows ? 0 : (size_t)tid * fl_qrows_floats(cx->p->precision, rows, cx->p->input_size));
}

/* out rows (+)= quantized rows . W^T for `blocks` consecutive blocks of packed weights (M
 * groups of U units, Kp inputs) from the one at wq, like block_tiles: one call of the
 * precision's kernel for each row group. qrows holds n_rows quantized rows, x_step a row of
 * out, of which the first `parts` are used (inputs in two parts, x_step = 2: both, or the
 * first alone for W_ih's second part). The first block's units start at j0, its row scales
 * and sums at unit j0 of scale and comp; the last block is `width` wide. */
static void qblock_tiles(const step_ctx *cx, work_share w, int active, int M, const void *wq,
                         int blocks, int Kp, int parts, int x_step, int accumulate,
                         float *qrows, size_t n_rows, float *out, int out_ld, int m_stride,
                         int j0, int width, const float *scale, const int *comp)
{
    const char *data = (const char *)qrows_data(qrows, n_rows);
    fl_qtile t;
    int g, r0, nb;
    t.M = M, t.units = cx->simd->units, t.w = wq, t.Kp = Kp, t.parts = parts;
    t.x_ld = Kp * (x_step / parts), t.x_scale_step = x_step / parts, t.accumulate = accumulate;
    t.out_ld = out_ld, t.m_stride = m_stride, t.width = width;
    t.blocks = blocks, t.block_bytes = (size_t)Kp * M * t.units * cx->esize;
    t.w_scale = scale ? scale + j0 : NULL, t.w_comp = comp ? comp + j0 : NULL;
    for (g = -1; next_group(w, active, &g, &r0, &nb);) {
        t.x = data + (size_t)r0 * x_step * Kp * cx->esize;
        t.x_scale = qrows_scales(qrows) + (size_t)r0 * x_step;
        t.nb = nb;
        t.out = out + (size_t)r0 * out_ld + j0;
        cx->qtile(&t);
    }
}

/* Quantize rows [r0, r0 + n) of `from` (ld floats apart, K wide) into rows [r0, ..) of qrows
 * (n_rows of Kp inputs). */
static inline void quantize_rows(const step_ctx *cx, const float *from, size_t ld, int r0, int n,
                                 int K, int Kp, int parts, float *qrows, size_t n_rows)
{
    fl_quantize_rows(cx->p->precision, from + (size_t)r0 * ld, ld, n, K, parts,
                     (char *)qrows_data(qrows, n_rows) + (size_t)r0 * parts * Kp * cx->esize,
                     qrows_scales(qrows) + (size_t)r0 * parts);
}

/* This step's h rows (and its input rows, projected step by step) quantized: by a thread cut
 * by rows, its own groups; cut by blocks, all live rows, into its own buffers. */
static void quantize_step(const step_ctx *cx, int step, int active, const float *h_prev,
                          work_share w, int tid)
{
    const fl_seq *s = cx->s;
    const int O = cx->p->output_size, I = cx->p->input_size, P = FL_INPUT_PARTS;
    float *qh = qh_slot(cx, tid), *qx = cx->by_step ? qx_slot(cx, tid) : NULL;
    int g, r, r0, nb;
    if (!cx->by_rows) w.owner = 0, w.owner_nth = 1;
    for (g = -1; next_group(w, active, &g, &r0, &nb);) {
        quantize_rows(cx, h_prev, (size_t)O, r0, nb, O, cx->kp_out, 1, qh, (size_t)s->batch);
        if (cx->by_step)
            for (r = r0; r < r0 + nb; r++) {
                ptrdiff_t gx_row;
                const ptrdiff_t row = data_row(cx, r, step, &gx_row);
                fl_quantize_rows(cx->p->precision, s->x + row * s->x_ld, (size_t)s->x_ld, 1, I, P,
                                 (char *)qrows_data(qx, (size_t)s->batch * P) + (size_t)r * P * cx->kp_in * cx->esize,
                                 qrows_scales(qx) + (size_t)r * P);
            }
    }
}

/* Gate products and the cell update of one step in reduced precision, for the share's
 * blocks: Gx = x_t . W_ih^T (inputs projected step by step) and pre = h_prev . W_hh^T for
 * every block, then the update of all the share's units, one call a row group (per block,
 * the calls' own cost was a tenth of a batch's time). Blocks go in the alternating order of
 * gate_work. */
static void gate_work_q(const step_ctx *cx, int step, int active, float *h_next, work_share w,
                        int tid)
{
    const fl_cell *p = cx->p;
    const fl_seq *s = cx->s;
    const int H = p->hidden_size, U = cx->simd->units;
    const size_t hh_block = (size_t)cx->kp_out * 4 * U * cx->esize;
    const size_t ih_block = (size_t)cx->kp_in * 4 * U * cx->esize;
    const int reverse = (step + cx->flip) & 1;
    const int j_first = w.q0 * U, j_end = w.q1 * U < H ? w.q1 * U : H;
    float *qh = qh_slot(cx, tid), *qx = cx->by_step ? qx_slot(cx, tid) : NULL;
    int i, g, r0, nb;
    if (active == 1 && !cx->by_step && w.q0 < w.q1) {
        /* a lone row (a stream, a sequence): its blocks in one call */
        const int last = w.q1 * U < H ? U : H - (w.q1 - 1) * U;
        qblock_tiles(cx, w, active, 4, (const char *)p->w_hh_q + w.q0 * hh_block, w.q1 - w.q0,
                     cx->kp_out, 1, 1, 0, qh, (size_t)s->batch, s->pre, cx->ld_pre, H, w.q0 * U, last,
                     p->w_hh_scale, p->w_hh_comp);
        w.q1 = w.q0;   /* done: on to the update */
    }
    for (i = w.q0; i < w.q1; i++) {
        const int q = reverse ? w.q1 - 1 - (i - w.q0) : i;
        const int j0 = q * U, j1 = j0 + U < H ? j0 + U : H;
        for (g = -1; next_group(w, active, &g, &r0, &nb);) prefetch_rows(cx, step, r0, nb, j0);
        if (cx->by_step) {
            /* x_t . W_ih^T: both parts of x by W_ih's first part, then x's first by its second */
            qblock_tiles(cx, w, active, 4, (const char *)p->w_ih_q + q * ih_block, 1, cx->kp_in,
                         FL_INPUT_PARTS, FL_INPUT_PARTS, 0, qx, (size_t)s->batch * FL_INPUT_PARTS,
                         s->gx, cx->ld_gx, H, j0, j1 - j0, p->w_ih_scale, p->w_ih_comp);
            if (p->w_ih_lo_q)
                qblock_tiles(cx, w, active, 4, (const char *)p->w_ih_lo_q + q * ih_block, 1,
                             cx->kp_in, 1, FL_INPUT_PARTS, 1, qx,
                             (size_t)s->batch * FL_INPUT_PARTS, s->gx, cx->ld_gx, H, j0, j1 - j0,
                             p->w_ih_lo_scale, p->w_ih_lo_comp);
        }
        qblock_tiles(cx, w, active, 4, (const char *)p->w_hh_q + q * hh_block, 1, cx->kp_out, 1, 1, 0, qh,
                     (size_t)s->batch, s->pre, cx->ld_pre, H, j0, j1 - j0, p->w_hh_scale,
                     p->w_hh_comp);
    }
    if (j_first < j_end)
        for (g = -1; next_group(w, active, &g, &r0, &nb);)
            update_rows(cx, step, r0, nb, j_first, j_end, h_next);
}

/* Gx rows of this step for block q (units q*U..) = x_t . W_ih^T, for the share's row groups,
 * like the recurrent tiles, asking for `next` meanwhile (see block_tiles); the rows are those
 * gather_inputs put in s->xc. The sums are the tile kernel's, as in input_tiles, so a row's
 * Gx has the same bits whichever way it was projected. */
static void input_step(const step_ctx *cx, int q, int active, work_share w, fl_l2_ask next)
{
    const fl_cell *p = cx->p;
    const int H = p->hidden_size, I = p->input_size, U = cx->simd->units;
    const int j0 = q * U, width = j0 + U < H ? U : H - j0;
    block_tiles(cx, w, active, p->w_ih_packed + (size_t)q * I * 4 * U, I, cx->s->xc, I,
                cx->s->gx + j0, cx->ld_gx, width, next);
}

/* x rows [r0, r1) of this step into s->xc, in working order. */
static void gather_inputs(const step_ctx *cx, int step, int r0, int r1)
{
    const fl_seq *s = cx->s;
    const int I = cx->p->input_size;
    int r;
    for (r = r0; r < r1; r++) {
        ptrdiff_t gx_row;
        const ptrdiff_t row = data_row(cx, r, step, &gx_row);
        memcpy(s->xc + (size_t)r * I, s->x + row * s->x_ld, (size_t)I * sizeof(float));
    }
}

/* pre = h_prev . W_hh^T for block j0.. and the share's groups, fused with the cell update
 * (the simd table's gates_cell): the earlier K blocks by block_tiles into pre, the last in
 * registers, straight into the cell, the new c, h and the output rows. The same bits as
 * block_tiles then update_rows, faster: the sums of the last block and the gates never go
 * through memory, and it is one call a group instead of a row. */
static void recurrent_fused(const step_ctx *cx, int step, int active, work_share w,
                            const float *wq, const float *h_prev, float *h_next, int j0, int j1,
                            fl_l2_ask next)
{
    const fl_cell *p = cx->p;
    const fl_seq *s = cx->s;
    const int H = p->hidden_size, O = p->output_size, U = cx->simd->units;
    const int klast = (O - 1) / FL_K_CHUNK * FL_K_CHUNK;
    float *y_rows[FL_TILE_ROWS_MAX];
    float *h_base = p->w_hr ? s->hfull : h_next;
    fl_fused f;
    int g, r, r0, nb;
    if (klast > 0)
        block_tiles(cx, w, active, wq, klast, h_prev, O, s->pre + j0, cx->ld_pre, j1 - j0, next);
    f.wp = wq + (size_t)klast * 4 * U, f.K = O - klast, f.x_ld = O;
    f.pre_ld = cx->ld_pre, f.add = klast > 0, f.gx_ld = cx->ld_gx, f.bias = p->bias + j0;
    f.c_ld = H, f.h_ld = p->w_hr ? H : O, f.H = H, f.width = j1 - j0;
    for (g = -1; next_group(w, active, &g, &r0, &nb);) {
        f.x = h_prev + (size_t)r0 * O + klast;
        f.pre = s->pre + (size_t)r0 * cx->ld_pre + j0;
        f.gx = s->gx + (size_t)r0 * cx->ld_gx + j0;
        f.c = s->cs + (size_t)r0 * H + j0;
        f.h = h_base + (size_t)r0 * f.h_ld + j0;
        f.nb = nb;
        f.y = NULL;
        if (s->y && !p->w_hr) {
            for (r = 0; r < nb; r++) {
                ptrdiff_t gx_row;
                y_rows[r] = s->y + data_row(cx, r0 + r, step, &gx_row) * s->y_ld + j0;
            }
            f.y = y_rows;
        }
        cx->simd->gates_cell(&f);
    }
}

/* Gate tiles and the fused update for one step: for each of the share's blocks, Gx = x_t .
 * W_ih^T when inputs are projected step by step, pre = h_prev . W_hh^T (block_tiles), then
 * the cell update for those units and rows. A batch of one goes two blocks per call (see
 * pair in fl_simd.h); then q counts pairs. */
static void gate_work(const step_ctx *cx, int step, int active, const float *h_prev,
                      float *h_next, work_share w)
{
    const fl_cell *p = cx->p;
    const fl_seq *s = cx->s;
    const int H = p->hidden_size, O = p->output_size, U = cx->simd->units;
    const size_t block_floats = (size_t)O * 4 * U;
    /* Every other step takes the blocks in reverse order: the weights a step read last, still
     * in this core's L2, are the first the next step reads. Read in one order every step, a
     * set of weights a little larger than L2 misses it throughout. The order of blocks
     * changes no result. */
    const int reverse = (step + cx->flip) & 1;
    int i, g, r0, nb;

    if (active == 1) {
        /* One row: pairs of blocks (see row_pair), then the cell update of all the share's
         * units in one call, whose vectors then overlap (faster than an update after each
         * pair). Its inputs are projected here, pair by pair, from xc (step by step) or from
         * x (a lone step); else gx holds them already. */
        ptrdiff_t gx_row;
        const float *xr = cx->by_step ? s->xc
                          : cx->single_row ? s->x + data_row(cx, 0, step, &gx_row) * s->x_ld : NULL;
        const int j0 = 2 * w.q0 * U, j1 = 2 * w.q1 * U < H ? 2 * w.q1 * U : H;
        for (i = w.q0; i < w.q1; i++) {
            const int q = reverse ? w.q1 - 1 - (i - w.q0) : i, blk = 2 * q;
            if (xr && !reverse) row_pair(cx->simd, p->w_ih_packed, p->input_size, H, blk, xr, s->gx);
            row_pair(cx->simd, p->w_hh_packed, O, H, blk, h_prev, s->pre);
            if (xr && reverse) row_pair(cx->simd, p->w_ih_packed, p->input_size, H, blk, xr, s->gx);
        }
        if (j0 < j1) update_rows(cx, step, 0, 1, j0, j1, h_next);
        return;
    }
    for (i = w.q0; i < w.q1; i++) {
        const int q = reverse ? w.q1 - 1 - (i - w.q0) : i;
        const int qn = reverse ? q - 1 : q + 1;   /* the next block, when i + 1 < w.q1 */
        const int j0 = q * U;
        const int j1 = j0 + U < H ? j0 + U : H;
        const float *wq = p->w_hh_packed + q * block_floats;
        const size_t ih_floats = (size_t)p->input_size * 4 * U;
        /* the weights read next, asked for meanwhile (see block_tiles): after this block's
         * W_ih its W_hh, after its W_hh the next block's W_ih (or W_hh, inputs projected
         * first); after the share's last block none (the next step starts with it) */
        fl_l2_ask ih_next = {wq, (int)(block_floats / FL_LINE_FLOATS)}, hh_next = FL_NO_ASK;
        if (i + 1 < w.q1) {
            if (cx->by_step) {
                hh_next.from = p->w_ih_packed + qn * ih_floats;
                hh_next.lines = (int)(ih_floats / FL_LINE_FLOATS);
            } else {
                hh_next.from = wq + (qn - q) * (ptrdiff_t)block_floats;
                hh_next.lines = ih_next.lines;
            }
        }
        for (g = -1; next_group(w, active, &g, &r0, &nb);) prefetch_rows(cx, step, r0, nb, j0);
        if (cx->by_step) input_step(cx, q, active, w, ih_next);
        if (cx->fused) {
            recurrent_fused(cx, step, active, w, wq, h_prev, h_next, j0, j1, hh_next);
            continue;
        }
        block_tiles(cx, w, active, wq, O, h_prev, O, s->pre + j0, cx->ld_pre, j1 - j0, hh_next);
        for (g = -1; next_group(w, active, &g, &r0, &nb);)
            update_rows(cx, step, r0, nb, j0, j1, h_next);
    }
}

/* Projection: h_next = clip(W_hr . hfull) for the share's output blocks and groups, and y. */
static void projection_work(const step_ctx *cx, int step, int active, float *h_next,
                            work_share w, int tid)
{
    const fl_cell *p = cx->p;
    const fl_seq *s = cx->s;
    const int H = p->hidden_size, O = p->output_size, U = cx->simd->units;
    int q, g, r, j, r0, nb;
    ptrdiff_t gx_row;
    if (p->precision) {
        /* hfull's rows quantized, as quantize_step does h's */
        work_share mine = w;
        if (!cx->by_rows) mine.owner = 0, mine.owner_nth = 1;
        for (g = -1; next_group(mine, active, &g, &r0, &nb);)
            quantize_rows(cx, s->hfull, (size_t)H, r0, nb, H, cx->kp_hidden, 1, qhfull_slot(cx, tid),
                          (size_t)s->batch);
    }
    for (q = w.q0; q < w.q1; q++) {
        const int j0 = q * U;
        const int j1 = j0 + U < O ? j0 + U : O;
        if (p->precision)
            qblock_tiles(cx, w, active, 1,
                         (const char *)p->w_hr_q + (size_t)q * cx->kp_hidden * U * cx->esize, 1,
                         cx->kp_hidden, 1, 1, 0, qhfull_slot(cx, tid), (size_t)s->batch, h_next, O, 0, j0,
                         j1 - j0, p->w_hr_scale, p->w_hr_comp);
        for (g = -1; next_group(w, active, &g, &r0, &nb);) {
            if (!p->precision)
                cx->simd->tile(1, p->w_hr_packed + (size_t)q * H * U, H,
                               s->hfull + (size_t)r0 * H, H, nb, h_next + (size_t)r0 * O + j0, O,
                               0, j1 - j0, 0, FL_NO_ASK);
            for (r = r0; r < r0 + nb; r++) {
                float *hr = h_next + (size_t)r * O;
                if (p->has_proj_clip)
                    for (j = j0; j < j1; j++) hr[j] = clampf(hr[j], p->proj_clip);
                if (s->y) {
                    const ptrdiff_t row = data_row(cx, r, step, &gx_row);
                    memcpy(s->y + row * s->y_ld + j0, hr + j0, (size_t)(j1 - j0) * sizeof(float));
                }
            }
        }
    }
}

static inline void barrier(int nth)
{
#ifdef _OPENMP
    if (nth > 1) {
#pragma omp barrier
    }
#else
    (void)nth;
#endif
}

/* The whole time loop, run by each of nth threads (nth == 1: plain serial code, no OpenMP
 * call at all, which is what a forked child needs). h ping-pongs between s->hs and s->hs2:
 * step t writes hs2 when t is even, so a row that ran n steps ends in hs2 when n is odd.
 * From FL_ROWS_PER_THREAD_FOR_ROW_SPLIT rows a thread the run is cut by rows: each thread
 * runs the whole loop for its own row groups with no barrier at all. Below it, or when a
 * step's weights pass FL_L2_WEIGHT_BYTES (cut by rows, every core would stream all of them
 * from L3 each step; cut by blocks, its share), each step is cut by hidden blocks, with a
 * barrier per step. */
static void time_loop(const step_ctx *cx, int tid, int nth)
{
    const fl_cell *p = cx->p;
    const fl_seq *s = cx->s;
    const int H = p->hidden_size, O = p->output_size, T = s->steps, U = cx->simd->units;
    const int R = cx->simd->rows;
    const int blocks = (H + U - 1) / U;
    const int out_blocks = (O + U - 1) / U;
    const int by_rows = nth > 1 && cx->by_rows;
    float *h_prev = s->hs, *h_next = s->hs2;
    int active = s->batch, step;
    work_share cut;
    cut.batch = s->batch;
    cut.snake = s->lengths != NULL;
    cut.groups = by_rows ? nth * ((s->batch + nth * R - 1) / (nth * R)) : (s->batch + R - 1) / R;
    for (step = 0; step < T; step++) {
        work_share w = cut;
        long a, b;
        if (s->lengths)
            while (active > 0 && s->lengths[s->order[active - 1]] <= step) active--;
        if (active == 0) break;
        if (!by_rows) {
            /* every thread takes every group of its blocks: cut the live rows afresh */
            w.batch = active;
            w.groups = (active + R - 1) / R;
        }
        if (cx->qtile) {
            w.owner = tid, w.owner_nth = by_rows ? nth : 1;
            quantize_step(cx, step, active, h_prev, w, tid);
        } else if (cx->by_step) {
            /* each thread gathers the rows it will project: its own groups when split by
             * rows, else a share of all rows, which every thread reads after the barrier */
            int g, r0, nb;
            if (by_rows) {
                w.owner = tid, w.owner_nth = nth;
                for (g = -1; next_group(w, active, &g, &r0, &nb);)
                    gather_inputs(cx, step, r0, r0 + nb);
            } else {
                my_range(active, tid, nth, &a, &b);
                gather_inputs(cx, step, (int)a, (int)b);
                barrier(nth);
            }
        }
        if (by_rows) {
            /* the owner of row group 0 (thread 0) takes a lone last row (in float32,
             * gate_work's paired mode, where q counts pairs of blocks) */
            if (active == 1) w.q0 = 0, w.q1 = tid == 0 ? (cx->qtile ? blocks : (blocks + 1) / 2) : 0, w.owner = 0, w.owner_nth = 1;
            else w.q0 = 0, w.q1 = blocks, w.owner = tid, w.owner_nth = nth;
        } else {
            my_range(active == 1 && !cx->qtile ? (blocks + 1) / 2 : blocks, tid, nth, &a, &b);
            w.q0 = (int)a, w.q1 = (int)b, w.owner = 0, w.owner_nth = 1;
        }
        if (cx->qtile) gate_work_q(cx, step, active, h_next, w, tid);
        else gate_work(cx, step, active, h_prev, h_next, w);
        if (p->w_hr) {
            if (!by_rows) {
                barrier(nth);   /* hfull rows are complete */
                my_range(out_blocks, tid, nth, &a, &b);
                w.q0 = (int)a, w.q1 = (int)b;
            } else {
                w.q0 = 0, w.q1 = out_blocks, w.owner = tid, w.owner_nth = nth;
            }
            projection_work(cx, step, active, h_next, w, tid);
        }
        /* h_next is complete before anyone reads it; after the last step the end of the
         * parallel region is the barrier */
        if (!by_rows && step + 1 < T) barrier(nth);
        {
            float *tmp = h_prev;
            h_prev = h_next;
            h_next = tmp;
        }
    }
}

/* Gx rows [0, rows) = X . W_ih^T by the tile kernel: task = (hidden block, group of rows),
 * blocks outermost so that a block of W_ih stays in L2 across all rows. Each row's result
 * depends on that row alone: streams, pools, batches of any size and composition, any thread
 * count, the AVX2 and the AVX-512 kernels, and the step-by-step projection (input_step) all
 * give the same bits. (The portable build projects whole sequences with sgemm instead, so
 * there a row's bits may change with the batch it shares; streams still use this.) */
static void input_tiles(const fl_cell *p, const float *x, int x_ld, long rows, float *gx,
                        int tid, int nth)
{
    const fl_simd_table *simd = fl_simd();
    const int H = p->hidden_size, G = 4 * H, I = p->input_size, U = simd->units;
    const int R = simd->rows;
    const long groups = (rows + R - 1) / R;
    const long blocks = (H + U - 1) / U;
    const size_t block_floats = (size_t)I * 4 * U;
    long task, a, b;
    if (rows == 1) {
        /* one row: two blocks per task, as in gate_work */
        my_range((blocks + 1) / 2, tid, nth, &a, &b);
        for (task = a; task < b; task++) row_pair(simd, p->w_ih_packed, I, H, (int)task * 2, x, gx);
        return;
    }
    my_range(blocks * groups, tid, nth, &a, &b);
    for (task = a; task < b; task++) {
        const int q = (int)(task / groups);
        const long r0 = (task % groups) * R;
        const int nb = rows - r0 < R ? (int)(rows - r0) : R;
        const int j0 = q * U;
        const int width = j0 + U < H ? U : H - j0;
        simd->tile(4, p->w_ih_packed + q * block_floats, I, x + r0 * x_ld, x_ld, nb,
                   gx + r0 * G + j0, G, H, width, 0, FL_NO_ASK);
    }
}

/* Gx rows [0, rows) = X . W_ih^T in reduced precision: the rows quantized (a share a thread),
 * then tasks as in input_tiles. */
static void input_tiles_q(const step_ctx *cx, const float *x, int x_ld, long rows, int tid,
                          int nth)
{
    const fl_cell *p = cx->p;
    const fl_seq *s = cx->s;
    const int H = p->hidden_size, G = 4 * H, I = p->input_size, U = cx->simd->units;
    const int P = FL_INPUT_PARTS, R = cx->simd->rows, Kp = cx->kp_in;
    const long groups = (rows + R - 1) / R, blocks = (H + U - 1) / U;
    const size_t block_bytes = (size_t)Kp * 4 * U * cx->esize;
    const char *data = (const char *)qrows_data(s->qx, (size_t)rows * P);
    long task, a, b, r;
    fl_qtile t;
    my_range(rows, tid, nth, &a, &b);
    for (r = a; r < b; r++)
        quantize_rows(cx, x, (size_t)x_ld, (int)r, 1, I, Kp, P, s->qx, (size_t)rows * P);
    barrier(nth);   /* every row is quantized */
    t.M = 4, t.units = U, t.Kp = Kp, t.out_ld = G, t.m_stride = H;
    t.blocks = 1, t.block_bytes = block_bytes;
    my_range(blocks * groups, tid, nth, &a, &b);
    for (task = a; task < b; task++) {
        const int q = (int)(task / groups), j0 = q * U;
        const long r0 = (task % groups) * R;
        t.x = data + (size_t)r0 * P * Kp * cx->esize;
        t.x_scale = qrows_scales(s->qx) + r0 * P;
        t.nb = rows - r0 < R ? (int)(rows - r0) : R;
        t.out = s->gx + r0 * G + j0;
        t.width = j0 + U < H ? U : H - j0;
        /* both parts of x by W_ih's first part, then x's first by its second part */
        t.w = (const char *)p->w_ih_q + q * block_bytes;
        t.parts = P, t.x_ld = Kp, t.x_scale_step = 1, t.accumulate = 0;
        t.w_scale = p->w_ih_scale ? p->w_ih_scale + j0 : NULL;
        t.w_comp = p->w_ih_comp ? p->w_ih_comp + j0 : NULL;
        cx->qtile(&t);
        if (p->w_ih_lo_q) {
            t.w = (const char *)p->w_ih_lo_q + q * block_bytes;
            t.parts = 1, t.x_ld = P * Kp, t.x_scale_step = P, t.accumulate = 1;
            t.w_scale = p->w_ih_lo_scale + j0;
            t.w_comp = p->w_ih_lo_comp + j0;
            cx->qtile(&t);
        }
    }
}

/* Rows of x are projected in chunks of this many, cut at the same places whatever the thread
 * count, and the chunks are dealt to the threads. A BLAS whose rounding of a row depends on
 * its place in a call (OpenBLAS's Haswell sgemm does) then still gives the same bits for 1
 * and for N threads. About FL_PROJ_CHUNKS chunks balance the threads. */
static long projection_chunk(long rows)
{
    long chunk = (rows + FL_PROJ_CHUNKS - 1) / FL_PROJ_CHUNKS;
    chunk = (chunk + FL_PROJ_ROW_MULTIPLE - 1) / FL_PROJ_ROW_MULTIPLE * FL_PROJ_ROW_MULTIPLE;
    return chunk < FL_PROJ_MIN_ROWS ? FL_PROJ_MIN_ROWS : (chunk > FL_PROJ_ROWS ? FL_PROJ_ROWS : chunk);
}

/* gx rows [a, b) = x rows [a, b) . W_ih^T in one sgemm over the rows (column-major view:
 * 4H x rows), the inputs added in FL_K_CHUNK blocks (beta = 1 after the first) like the tile
 * kernels: the float32 error then grows with 64 + I/64 rather than with I. The Cython caller
 * keeps SciPy's OpenBLAS single-threaded meanwhile, so every call runs where it is made. */
static void project_rows(const fl_cell *p, fl_sgemm_fn sgemm, const float *x, int xld, float *gx,
                         long a, long b)
{
    int G = 4 * p->hidden_size, I = p->input_size, n = (int)(b - a), k0;
    float one = 1.0f, zero = 0.0f;
    char tr = 'T', nt = 'N';
    for (k0 = 0; k0 < I; k0 += FL_K_CHUNK) {
        int kc = I - k0 < FL_K_CHUNK ? I - k0 : FL_K_CHUNK;
        sgemm(&tr, &nt, &G, &n, &kc, &one, (float *)p->w_ih + k0, &I,
              (float *)x + a * xld + k0, &xld, k0 ? &one : &zero, gx + a * G, &G);
    }
}

/* This thread's chunks of rows [0, rows) (see projection_chunk). */
static void project_chunks(const fl_cell *p, fl_sgemm_fn sgemm, const float *x, int xld,
                           float *gx, long rows, int tid, int nth)
{
    const long chunk = projection_chunk(rows), chunks = (rows + chunk - 1) / chunk;
    long c0, c1, c;
    my_range(chunks, tid, nth, &c0, &c1);
    for (c = c0; c < c1; c++)
        project_rows(p, sgemm, x, xld, gx, c * chunk, (c + 1) * chunk < rows ? (c + 1) * chunk : rows);
}

/* Gx = X . W_ih^T for all steps before the time loop. With lengths only the valid rows are
 * gathered (into xc, packed) and projected: padding costs nothing. The tile kernel projects
 * wherever the SIMD table has one worth using (AVX2, AVX-512: see input_tiles); the portable
 * build hands the product to BLAS sgemm. */
static void input_projection(const step_ctx *cx, fl_sgemm_fn sgemm, int tid, int nth)
{
    const fl_cell *p = cx->p;
    const fl_seq *s = cx->s;
    const int I = p->input_size;
    const float *x = s->x;
    int x_ld = s->x_ld;
    long rows = (long)s->batch * s->steps;
    if (s->plan->compact) {
        long q0, q1, q;
        int t;
        rows = (long)s->gx_start[s->batch - 1] + s->lengths[s->batch - 1];
        my_range(s->batch, tid, nth, &q0, &q1);
        for (q = q0; q < q1; q++)
            for (t = 0; t < s->lengths[q]; t++)
                memcpy(s->xc + ((ptrdiff_t)s->gx_start[q] + t) * I,
                       s->x + ((ptrdiff_t)q * s->row_b + (ptrdiff_t)t * s->row_t) * s->x_ld,
                       (size_t)I * sizeof(float));
        barrier(nth);   /* xc is complete */
        x = s->xc, x_ld = I;
    }
    if (cx->qtile)
        input_tiles_q(cx, x, x_ld, rows, tid, nth);
    else if (s->plan->by_tiles)
        input_tiles(p, x, x_ld, rows, s->gx, tid, nth);
    else
        project_chunks(p, sgemm, x, x_ld, s->gx, rows, tid, nth);
}

/* Input projection, then the time loop, on each of nth threads. */
static void run_thread(const step_ctx *cx, fl_sgemm_fn sgemm, int tid, int nth)
{
    if (!cx->by_step && !cx->single_row) {
        input_projection(cx, sgemm, tid, nth);
        barrier(nth);
    }
    time_loop(cx, tid, nth);
}

void fl_run_sequence(const fl_cell *p, const fl_seq *s, fl_sgemm_fn sgemm)
{
    const int H = p->hidden_size, O = p->output_size, B = s->batch, T = s->steps;
    const long G = 4L * H;
    const fl_run_plan *plan = s->plan;
    const int threads = plan->threads;
    int r;
    step_ctx cx;

    if (B == 0) return;

    /* Gather the initial state into working order. */
    for (r = 0; r < B; r++) {
        const int b = s->order ? s->order[r] : r;
        const size_t row = (size_t)(s->state_rows ? s->state_rows[b] : b);
        if (s->h0) memcpy(s->hs + (size_t)r * O, s->h0 + row * O, (size_t)O * sizeof(float));
        else memset(s->hs + (size_t)r * O, 0, (size_t)O * sizeof(float));
        if (s->c0) memcpy(s->cs + (size_t)r * H, s->c0 + row * H, (size_t)H * sizeof(float));
        else memset(s->cs + (size_t)r * H, 0, (size_t)H * sizeof(float));
    }

    /* the plan's decisions, and the layouts that follow from them */
    cx.p = p;
    cx.s = s;
    cx.simd = fl_simd();
    cx.by_step = plan->by_step;
    cx.fused = plan->fused;
    cx.single_row = plan->single_row;
    cx.ask_ahead = plan->ask_ahead;
    cx.by_rows = plan->by_rows;
    cx.flip = (int)(__atomic_fetch_add(&fl_calls, 1u, __ATOMIC_RELAXED) & 1u);
    cx.ld_pre = (int)G + FL_ROW_PAD;
    cx.ld_gx = cx.by_step ? (int)G + FL_ROW_PAD : (int)G;
    cx.qtile = NULL;
    if (p->precision) {
        cx.qtile = fl_qtile_kernel(cx.simd, p->precision, 0)->tile;
        cx.esize = 4 / fl_precision_per(p->precision);
        cx.kp_in = fl_padded_k(p->precision, p->input_size);
        cx.kp_out = fl_padded_k(p->precision, O);
        cx.kp_hidden = fl_padded_k(p->precision, H);
        cx.qh_slot = fl_qh_slot_floats(p, B);
    }
    if (T > 0) {
#ifdef _OPENMP
        if (threads > 1) {
            fl_parallel_used = 1;
#pragma omp parallel num_threads(threads)
            run_thread(&cx, sgemm, omp_get_thread_num(), omp_get_num_threads());
        } else if (plan->projection_threads > 1 && !cx.by_step && !cx.single_row) {
            /* the projection on its threads, then the loop on this one */
            fl_parallel_used = 1;
#pragma omp parallel num_threads(plan->projection_threads)
            input_projection(&cx, sgemm, omp_get_thread_num(), omp_get_num_threads());
            time_loop(&cx, 0, 1);
        } else
#endif
            run_thread(&cx, sgemm, 0, 1);
    }

    /* Scatter the final state back to batch order: a row that ran an odd number of steps
     * ended in hs2 (see time_loop). */
    for (r = 0; r < B; r++) {
        const int b = s->order ? s->order[r] : r;
        const int n = row_length(s, b) < T ? row_length(s, b) : T;
        const float *h_final = (n % 2) ? s->hs2 : s->hs;
        const size_t row = (size_t)(s->state_rows ? s->state_rows[b] : b);
        if (s->hn) memcpy(s->hn + row * O, h_final + (size_t)r * O, (size_t)O * sizeof(float));
        if (s->cn) memcpy(s->cn + row * H, s->cs + (size_t)r * H, (size_t)H * sizeof(float));
    }
}

int fl_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int fl_openmp_version(void)
{
#ifdef _OPENMP
    return _OPENMP;
#else
    return 0;
#endif
}

int fl_openmp_used_in_parallel(void) { return fl_parallel_used; }

int fl_blas_used(void) { return !fl_simd()->project_by_tiles; }
