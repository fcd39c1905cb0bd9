/* The cell math: the activations by kind and the generic cell update (peepholes, clips,
 * coupled gates, any activations); the standard cell has SIMD versions in the kernel tables. */
#include "fl_cell.h"
#include "fl_simd.h"

#include <math.h>
#include <string.h>

void fl_activate(fl_activation act, float *v, int n)
{
    const float a = act.alpha, b = act.beta;
    int j;
    switch (act.kind) {
    case FL_ACT_TANH:
        fl_simd()->tanh(v, n);
        break;
    case FL_ACT_SIGMOID:
        fl_simd()->sigmoid(v, n);
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

/* The fused cell update (see fl_cell.h); update_rows in fl_run.c gives the standard cell to
 * the SIMD table's kernel when there is one. */
void fl_cell_rows(const fl_cell *p, const float *gx, float *pre, float *c, float *h, int j0,
                  int j1)
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
