/* The plan of a call (fl_plan): every decision of how a stack runs over one batch, and the
 * size of every workspace buffer, in one place. The Cython layer asks once per call shape and
 * keeps the answer; fl_run_sequence follows it and decides nothing. See fl_tuning.h for the
 * thresholds and docs/performance.md for the measurements behind them. */
#include "fastlstm.h"
#include "fl_simd.h"

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

/* One direction of one layer. */
static fl_run_plan plan_run(const fl_cell *p, const fl_simd_table *simd, long batch, long steps,
                            int lengths, int stepwise, int threads)
{
    const long G = 4L * p->hidden_size, O = p->output_size, I = p->input_size;
    fl_run_plan r;
    /* Inputs: with SIMD tiles, batches of FL_STEP_PROJECTION_MIN_BATCH rows or more project
     * step by step into a buffer that stays in cache; a lone row and step projects pair by
     * pair with its recurrent weights; anything else all steps first, in the tile kernel
     * where the table has one worth using (and always for stepwise runs, whose rows must not
     * depend on each other), else by sgemm. */
    r.by_step = batch >= FL_STEP_PROJECTION_MIN_BATCH && simd->project_by_tiles;
    r.by_tiles = stepwise || simd->project_by_tiles;
    r.compact = lengths && !stepwise && !r.by_step;   /* padding costs nothing */
    r.single_row = batch * steps == 1 && !r.compact && r.by_tiles;
    r.fused = r.by_step && p->standard && simd->gates_cell != NULL;
    r.step_bytes = (size_t)(O + (r.by_step ? I : 0)) * (size_t)G * sizeof(float);
    r.ask_ahead = r.step_bytes >= FL_L2_WEIGHT_BYTES;
    if (p->precision) {
        /* Reduced precision: every product is a tile of its kernel (fl_qtile), on rows
         * quantized once a step; no pairs, fused cell or L2 asks (not written for it), and
         * a step reads a half or a quarter of the bytes. */
        r.by_tiles = 1;
        r.single_row = r.fused = r.ask_ahead = 0;
        r.step_bytes = r.step_bytes / (size_t)fl_precision_per(p->precision);
    }
    /* Threads: none for a step too small to share, nor for a batch too small to cut by rows
     * whose steps are too small to pay a barrier each. A reduced-precision multiply-add
     * costs less: int8's an eighth, bfloat16's a quarter (measured: one row of 256 units
     * ran faster on one thread in int8, on two in bfloat16). */
    const long cost = p->precision ? 2L * fl_precision_per(p->precision) : 1L;
    const int asked = threads;
    if (threads < 1 || batch * G * (O + I) / cost < FL_PARALLEL_MIN_MACS) threads = 1;
    if (batch < (long)FL_ROWS_PER_THREAD_FOR_ROW_SPLIT * threads
        && batch * G * O / cost < FL_BARRIER_MIN_MACS)
        threads = 1;
    r.threads = threads;
    /* The inputs projected before the loop are one product over all its rows: worth the
     * threads asked for even when the loop's steps are too small to share. */
    r.projection_threads = threads;
    if (!r.by_step && !r.single_row && asked > threads
        && batch * steps * G * I / cost >= FL_PROJECTION_PARALLEL_MIN_MACS)
        r.projection_threads = asked;
    /* Cut by rows (no barrier) when every thread has enough rows and a step's weights fit a
     * core's L2; else (every core would stream all the weights from L3 each step) by blocks. */
    r.by_rows = threads > 1 && batch >= (long)FL_ROWS_PER_THREAD_FOR_ROW_SPLIT * threads
                && r.step_bytes < FL_L2_WEIGHT_BYTES;
    return r;
}

void fl_plan(const fl_cell *cells, const int *directions, int layers, int batch, int steps,
             int lengths, int stepwise, int threads, fl_run_plan *runs, size_t *floats)
{
    const fl_simd_table *simd = fl_simd();
    const size_t B = (size_t)batch, rows = (size_t)batch * (size_t)steps;
    size_t G = 0, H = 0, O = 0, W = 0, widest_in = (size_t)cells[0].input_size;
    size_t projected = 0, packed = 0, qx = 0, qh = 0;
    int l, d, k = 0;
    for (l = 0; l < layers; l++) {
        for (d = 0; d < directions[l]; d++, k++) {
            const fl_cell *p = &cells[k];
            const size_t g = 4 * (size_t)p->hidden_size;
            runs[k] = plan_run(p, simd, batch, steps, lengths, stepwise, threads);
            G = max_size(G, g);
            H = max_size(H, (size_t)p->hidden_size);
            O = max_size(O, (size_t)p->output_size);
            /* gx: one step's rows, padded, when projected step by step; else all rows */
            projected = max_size(projected, runs[k].by_step ? B * (g + FL_ROW_PAD) : rows * g);
            /* xc: the valid rows of the layer's input, packed, when compact; at least one
             * step's rows, which a run projected step by step gathers there */
            packed = max_size(packed, (runs[k].compact ? rows : 0) * (size_t)p->input_size);
            if (p->precision) {
                /* quantized rows: of the inputs, all rows projected first or one step's by
                 * step; of h (and hfull); one buffer a thread when steps are cut by blocks */
                const size_t slots = runs[k].by_rows ? 1 : (size_t)runs[k].threads;
                qx = max_size(qx, runs[k].by_step
                                      ? slots * fl_qrows_floats(p->precision, B * FL_INPUT_PARTS,
                                                                p->input_size)
                                      : fl_qrows_floats(p->precision, rows * FL_INPUT_PARTS,
                                                        p->input_size));
                qh = max_size(qh, slots * fl_qh_slot_floats(p, batch));
            }
        }
        W = max_size(W, (size_t)directions[l] * (size_t)cells[k - 1].output_size);
    }
    widest_in = max_size(widest_in, W);
    floats[FL_BUF_GX] = max_size(max_size(projected, B * (G + FL_ROW_PAD)), 1);
    floats[FL_BUF_PRE] = max_size(B * (G + FL_ROW_PAD), 1);
    floats[FL_BUF_HS] = floats[FL_BUF_HS2] = max_size(B * O, 1);
    floats[FL_BUF_CS] = floats[FL_BUF_HFULL] = max_size(B * H, 1);
    /* layer outputs alternate between two buffers; the last layer writes to the caller's y */
    floats[FL_BUF_A] = max_size(layers > 1 ? rows * W : 0, 1);
    floats[FL_BUF_B] = max_size(layers > 2 ? rows * W : 0, 1);
    floats[FL_BUF_XC] = max_size(max_size(packed, B * widest_in), 1);
    floats[FL_BUF_QX] = max_size(qx, 1);
    floats[FL_BUF_QH] = max_size(qh, 1);
}
