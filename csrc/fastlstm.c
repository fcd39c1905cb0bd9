/* fastlstm native kernels; see fastlstm.h for the layouts. */
#include "fastlstm.h"
#include "fl_omp.h"

#include <math.h>
#include <string.h>

/* Set once a parallel region with more than one thread has run in this process; a forked
 * child reads it to know that libgomp's thread pool did not survive the fork. */
static volatile int fl_parallel_used = 0;

static inline float clampf(float v, float lim)
{
    return v > lim ? lim : (v < -lim ? -lim : v);
}

static inline float sigmoidf(float v)
{
    /* Written for both signs so that expf never overflows. */
    if (v >= 0.0f) {
        return 1.0f / (1.0f + expf(-v));
    }
    float e = expf(v);
    return e / (1.0f + e);
}

void fl_activate(fl_activation act, float *v, int n)
{
    const float a = act.alpha, b = act.beta;
    int j;
    switch (act.kind) {
    case FL_ACT_TANH:
        for (j = 0; j < n; j++) v[j] = tanhf(v[j]);
        break;
    case FL_ACT_SIGMOID:
        for (j = 0; j < n; j++) v[j] = sigmoidf(v[j]);
        break;
    case FL_ACT_RELU:
        for (j = 0; j < n; j++) v[j] = v[j] > 0.0f ? v[j] : 0.0f;
        break;
    case FL_ACT_HARD_SIGMOID:
        for (j = 0; j < n; j++) {
            float t = a * v[j] + b;
            v[j] = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
        }
        break;
    case FL_ACT_AFFINE:
        for (j = 0; j < n; j++) v[j] = a * v[j] + b;
        break;
    case FL_ACT_SOFTSIGN:
        for (j = 0; j < n; j++) v[j] = v[j] / (1.0f + fabsf(v[j]));
        break;
    case FL_ACT_SOFTPLUS:
        /* log(1 + e^x) = max(x, 0) + log1p(e^-|x|), exact for large |x| */
        for (j = 0; j < n; j++) v[j] = (v[j] > 0.0f ? v[j] : 0.0f) + log1pf(expf(-fabsf(v[j])));
        break;
    case FL_ACT_ELU:
        for (j = 0; j < n; j++) v[j] = v[j] >= 0.0f ? v[j] : a * expm1f(v[j]);
        break;
    case FL_ACT_LEAKY_RELU:
        for (j = 0; j < n; j++) v[j] = v[j] >= 0.0f ? v[j] : a * v[j];
        break;
    case FL_ACT_THRESHOLDED_RELU:
        for (j = 0; j < n; j++) v[j] = v[j] > a ? v[j] : 0.0f;
        break;
    case FL_ACT_SCALED_TANH:
        for (j = 0; j < n; j++) v[j] = a * tanhf(b * v[j]);
        break;
    default:
        /* Unreachable: Python validates activation names before building a cell. */
        break;
    }
}

/* The fused cell update for one row and hidden units [j0, j1).
 *   pre : (4H) recurrent term R.h on entry; used as scratch, gates i, f, g, o
 *   gx  : (4H) input term W.x
 *   c   : (H)  cell state, updated in place
 *   h   : (H)  new hidden state before any projection
 */
static void cell_rows(const fl_cell *p, const float *gx, float *pre, float *c, float *h,
                      int j0, int j1)
{
    const int H = p->hidden_size, n = j1 - j0;
    float *pi = pre + j0, *pf = pre + H + j0, *pg = pre + 2 * H + j0, *po = pre + 3 * H + j0;
    const float *xi = gx + j0, *xf = gx + H + j0, *xg = gx + 2 * H + j0, *xo = gx + 3 * H + j0;
    const float *bi = p->bias + j0, *bf = p->bias + H + j0, *bg = p->bias + 2 * H + j0,
                *bo = p->bias + 3 * H + j0;
    float *cc = c + j0, *hh = h + j0;
    int j;

    for (j = 0; j < n; j++) {
        pi[j] += xi[j] + bi[j];
        pf[j] += xf[j] + bf[j];
        pg[j] += xg[j] + bg[j];
        po[j] += xo[j] + bo[j];
    }
    if (p->peephole) {
        const float *wi = p->peephole + j0, *wf = p->peephole + H + j0;
        for (j = 0; j < n; j++) {
            pi[j] += wi[j] * cc[j];
            pf[j] += wf[j] * cc[j];
        }
    }
    if (p->has_gate_clip) {
        const float lim = p->gate_clip;
        for (j = 0; j < n; j++) {
            pi[j] = clampf(pi[j], lim);
            pf[j] = clampf(pf[j], lim);
            pg[j] = clampf(pg[j], lim);
        }
    }
    fl_activate(p->gate_act, pi, n);
    if (!p->input_forget) fl_activate(p->gate_act, pf, n);
    fl_activate(p->cell_act, pg, n);

    /* c' = f*c + i*g, with f = 1 - i for a coupled input-forget gate */
    if (p->input_forget) {
        for (j = 0; j < n; j++) cc[j] = (1.0f - pi[j]) * cc[j] + pi[j] * pg[j];
    } else {
        for (j = 0; j < n; j++) cc[j] = pf[j] * cc[j] + pi[j] * pg[j];
    }
    if (p->has_cell_clip) {
        const float lim = p->cell_clip;
        for (j = 0; j < n; j++) cc[j] = clampf(cc[j], lim);
    }

    /* o = ra(Wo x + Ro h + bo + Po*c'), the peephole sees the new cell */
    if (p->peephole) {
        const float *wo = p->peephole + 2 * H + j0;
        for (j = 0; j < n; j++) po[j] += wo[j] * cc[j];
    }
    if (p->has_gate_clip) {
        const float lim = p->gate_clip;
        for (j = 0; j < n; j++) po[j] = clampf(po[j], lim);
    }
    fl_activate(p->gate_act, po, n);

    /* h' = o*act(c'); the g block is free now and holds act(c') */
    memcpy(pg, cc, (size_t)n * sizeof(float));
    fl_activate(p->out_act, pg, n);
    for (j = 0; j < n; j++) hh[j] = po[j] * pg[j];
}

/* Hidden units handed to one task when the batch is too small to give every thread rows. */
#define FL_UNIT_BLOCK 64
/* Below this many elements per step a parallel region costs more than it saves. */
#define FL_PARALLEL_MIN_WORK 8192

static void cell_step(const fl_cell *p, const fl_seq *s, int step, int active)
{
    const int H = p->hidden_size, G = 4 * H;
    float *hout = s->hfull ? s->hfull : s->hs;
    const int hout_ld = s->hfull ? H : p->output_size;
    int blocks = 1;
    int threads = s->num_threads;

    if (threads > 1 && (long)active * H >= FL_PARALLEL_MIN_WORK) {
        if (active < threads) blocks = (H + FL_UNIT_BLOCK - 1) / FL_UNIT_BLOCK;
    } else {
        threads = 1;
    }
    const long tasks = (long)active * blocks;

#define FL_TASK(task)                                                                      \
    do {                                                                                   \
        const int r = (int)((task) / blocks), blk = (int)((task) % blocks);                \
        const int b = s->order ? s->order[r] : r;                                          \
        const int len = s->lengths ? s->lengths[b] : s->steps;                             \
        const int t = s->reverse ? len - 1 - step : step;                                  \
        const ptrdiff_t row = (ptrdiff_t)b * s->row_b + (ptrdiff_t)t * s->row_t;           \
        const int j0 = blocks == 1 ? 0 : blk * FL_UNIT_BLOCK;                              \
        const int j1 = blocks == 1 ? H : (j0 + FL_UNIT_BLOCK < H ? j0 + FL_UNIT_BLOCK : H); \
        cell_rows(p, s->gx + row * G, s->pre + (size_t)r * G, s->cs + (size_t)r * H,      \
                  hout + (size_t)r * hout_ld, j0, j1);                                     \
    } while (0)

    if (threads > 1) {
        long task;
        fl_parallel_used = 1;
#pragma omp parallel for num_threads(threads) schedule(static)
        for (task = 0; task < tasks; task++) FL_TASK(task);
    } else {
        long task;
        for (task = 0; task < tasks; task++) FL_TASK(task);
    }
#undef FL_TASK
}

/* Copy (and clip) the new hidden rows out to y. */
static void write_outputs(const fl_cell *p, const fl_seq *s, int step, int active)
{
    const int O = p->output_size;
    int r;
    for (r = 0; r < active; r++) {
        float *hr = s->hs + (size_t)r * O;
        if (p->has_proj_clip) {
            int j;
            for (j = 0; j < O; j++) hr[j] = clampf(hr[j], p->proj_clip);
        }
        if (s->y) {
            const int b = s->order ? s->order[r] : r;
            const int len = s->lengths ? s->lengths[b] : s->steps;
            const int t = s->reverse ? len - 1 - step : step;
            const ptrdiff_t row = (ptrdiff_t)b * s->row_b + (ptrdiff_t)t * s->row_t;
            memcpy(s->y + row * s->y_ld, hr, (size_t)O * sizeof(float));
        }
    }
}

/* sgemm takes 32-bit sizes: the input projection is done in slices of at most this many rows. */
#define FL_GEMM_MAX_ELEMS 1073741824L

void fl_run_sequence(const fl_cell *p, const fl_seq *s, fl_sgemm_fn sgemm)
{
    const int H = p->hidden_size, O = p->output_size, B = s->batch, T = s->steps;
    int G = 4 * H, I = p->input_size;
    float one = 1.0f, zero = 0.0f;
    char tr = 'T', nt = 'N';
    int r, step, active;

    if (B == 0) return;

    /* Gx = X . W_ih^T for every (b, t) row at once: one sgemm (column-major view: 4H x rows). */
    if (T > 0) {
        const long rows = (long)B * T;
        long widest = I > G ? I : G;
        long chunk = FL_GEMM_MAX_ELEMS / widest;
        long r0;
        int xld = s->x_ld;
        if (chunk < 1) chunk = 1;
        for (r0 = 0; r0 < rows; r0 += chunk) {
            int n = (int)(rows - r0 < chunk ? rows - r0 : chunk);
            sgemm(&tr, &nt, &G, &n, &I, &one, (float *)p->w_ih, &I, (float *)s->x + r0 * xld, &xld,
                  &zero, s->gx + r0 * G, &G);
        }
    }

    /* Gather the initial state into working order. */
    for (r = 0; r < B; r++) {
        const int b = s->order ? s->order[r] : r;
        if (s->h0) memcpy(s->hs + (size_t)r * O, s->h0 + (size_t)b * O, (size_t)O * sizeof(float));
        else memset(s->hs + (size_t)r * O, 0, (size_t)O * sizeof(float));
        if (s->c0) memcpy(s->cs + (size_t)r * H, s->c0 + (size_t)b * H, (size_t)H * sizeof(float));
        else memset(s->cs + (size_t)r * H, 0, (size_t)H * sizeof(float));
    }

    active = B;
    for (step = 0; step < T; step++) {
        if (s->lengths) {
            while (active > 0 && s->lengths[s->order[active - 1]] <= step) active--;
        }
        if (active == 0) break;
        /* pre = Hs . W_hh^T for the live rows */
        int oo = O;
        sgemm(&tr, &nt, &G, &active, &oo, &one, (float *)p->w_hh, &oo, s->hs, &oo, &zero, s->pre, &G);
        cell_step(p, s, step, active);
        if (p->w_hr) {
            /* h' = W_hr . h */
            int hh = H;
            sgemm(&tr, &nt, &oo, &active, &hh, &one, (float *)p->w_hr, &hh, s->hfull, &hh, &zero,
                  s->hs, &oo);
        }
        write_outputs(p, s, step, active);
    }

    /* Scatter the final state back to batch order (rows that finished early kept theirs). */
    for (r = 0; r < B; r++) {
        const int b = s->order ? s->order[r] : r;
        if (s->hn) memcpy(s->hn + (size_t)b * O, s->hs + (size_t)r * O, (size_t)O * sizeof(float));
        if (s->cn) memcpy(s->cn + (size_t)b * H, s->cs + (size_t)r * H, (size_t)H * sizeof(float));
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

int fl_cpu_has_avx2_fma(void)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}
