/* Every tuning threshold and constant of the native core, one line of reason each; the
 * measurements behind them are in docs/performance.md. FL_K_CHUNK also fixes the order of
 * every sum, so changing it changes results' bits; the others change only speed. */
#ifndef FL_TUNING_H
#define FL_TUNING_H

/* ---------------------------------------------------------------- memory */

/* Floats in one 64-byte cache line: the unit of the L2 asks (fl_l2_ask) and prefetches. */
#define FL_LINE_FLOATS 16

/* Weights read every step beyond this many bytes do not stay in a core's L2 (1-2 MiB on the
 * cores measured): steps then split by blocks and tiles ask for the next weights into L2. */
#define FL_L2_WEIGHT_BYTES (2u << 20)

/* Most lines an L2 ask takes per input of a tile: one input's weights of a 16-unit block. */
#define FL_L2_ASK_MAX_LINES_PER_INPUT 4

/* The four-gate tiles prefetch their weights this many floats (8 KiB) ahead: the hardware
 * prefetchers alone do not keep up with a step's weights streaming from L3. */
#define FL_PREFETCH_AHEAD 2048

/* Extra floats after each 4H row of the per-step buffers (pre, and gx by step): with rows
 * 4H floats apart, a hidden size that is a multiple of 256 would put every row's slice of a
 * block in the same L1 set. */
#define FL_ROW_PAD 16

/* ---------------------------------------------------------------- tiles and sums */

/* Sums over inputs are formed in blocks of this many, each one FMA chain, added in order:
 * the rounding error grows with 64 + K/64 rather than K. Callers split K at its multiples. */
#define FL_K_CHUNK 64

/* Batch rows per tile of the AVX2 and AVX-512 kernels: 6 rows x 4 gates = 24 accumulators,
 * with 4 weights and a broadcast, fit AVX-512's 32 registers (AVX2: two passes of 2 gates). */
#define FL_TILE_ROWS_MAX 6

/* Batch rows per tile of the portable kernels (plain C, accumulators on the stack). */
#define FL_TILE_ROWS 3

/* ---------------------------------------------------------------- reduced precision */

/* Rows of inputs to the W_ih products are quantized as this many parts, x = hi + lo (see
 * fl_quantize_rows): the inputs' rounding made most of int8's error and half of bfloat16's
 * (docs/precision.md), and their products are the cheap ones (off the recurrent path for
 * small batches). 1: one part. h keeps one part: its range is known (|h| < 1). */
#define FL_INPUT_PARTS 2

/* ---------------------------------------------------------------- threads */

/* Below this many multiply-adds per step, waking a second thread costs more than it saves. */
#define FL_PARALLEL_MIN_MACS 32768L

/* A batch too small to split by rows splits each step by hidden blocks, with a barrier per
 * step; below this many recurrent multiply-adds per step the barrier costs more. */
#define FL_BARRIER_MIN_MACS 65536L

/* A projection of all steps before the loop takes threads of its own from this many
 * multiply-adds (a parallel region costs a few microseconds), even when the loop runs on one:
 * int8's seq_latency at 2 threads, 304 -> 258 us. */
#define FL_PROJECTION_PARALLEL_MIN_MACS (1L << 20)

/* Batches of this many rows per thread split by rows (each thread its own rows for the whole
 * run, no barrier); smaller ones split every step by hidden blocks. */
#define FL_ROWS_PER_THREAD_FOR_ROW_SPLIT 8

/* ---------------------------------------------------------------- input projection */

/* With SIMD tiles, batches this large project their inputs step by step, into a buffer that
 * stays in cache; smaller ones project all steps first, reading W_ih once for all steps. */
#define FL_STEP_PROJECTION_MIN_BATCH 12

/* Rows per sgemm call of the portable build's projection: at most this many (every size
 * handed to the 32-bit BLAS stays small), at least the next (BLAS packs W_ih once a call),
 * about FL_PROJ_CHUNKS chunks (to balance threads), a multiple of FL_PROJ_ROW_MULTIPLE. */
#define FL_PROJ_ROWS 1024
#define FL_PROJ_MIN_ROWS 64
#define FL_PROJ_CHUNKS 16
#define FL_PROJ_ROW_MULTIPLE 16

#endif
