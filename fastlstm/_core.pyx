# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The native path: builds C cell descriptions and runs whole stacks without the GIL.

Python (fastlstm.models) validates every argument before it calls in here; this module only
checks what it must to never touch memory it does not own (shapes of the buffers it is given).
"""
from libc.string cimport memset
from scipy.linalg.cython_blas cimport sgemm as blas_sgemm

import numpy as np


cdef extern from "fastlstm.h" nogil:
    ctypedef struct fl_activation:
        int kind
        float alpha
        float beta

    ctypedef void (*fl_sgemm_fn)(char *, char *, int *, int *, int *, float *, float *, int *,
                                 float *, int *, float *, float *, int *) noexcept nogil

    ctypedef struct fl_cell:
        int input_size, hidden_size, output_size
        const float *w_ih
        const float *w_ih_packed
        const float *w_hh
        const float *w_hh_packed
        const float *bias
        const float *w_hr
        const float *w_hr_packed
        const float *peephole
        int input_forget
        int has_gate_clip, has_cell_clip, has_proj_clip
        float gate_clip, cell_clip, proj_clip
        fl_activation gate_act, cell_act, out_act

    ctypedef struct fl_seq:
        int steps, batch
        Py_ssize_t row_b, row_t
        const float *x
        int x_ld
        float *y
        int y_ld
        const int *lengths
        const int *order
        int reverse
        const float *h0
        const float *c0
        float *hn
        float *cn
        float *gx
        float *pre
        float *hs
        float *hs2
        float *cs
        float *hfull
        int num_threads
        int input_by_tiles

    void fl_run_sequence(const fl_cell *cell, const fl_seq *seq, fl_sgemm_fn sgemm)
    size_t fl_packed_size(int groups, int units, int K)
    void fl_pack(const float *w, int groups, int units, int K, float *out)
    void fl_activate(fl_activation act, float *v, int n)
    int fl_openmp_enabled()
    int fl_openmp_version()
    int fl_openmp_used_in_parallel()
    int fl_cpu_has_avx2_fma()
    int fl_simd_avx2_in_use()

    enum:
        FL_ACT_TANH, FL_ACT_SIGMOID, FL_ACT_RELU, FL_ACT_HARD_SIGMOID, FL_ACT_AFFINE,
        FL_ACT_SOFTSIGN, FL_ACT_SOFTPLUS, FL_ACT_ELU, FL_ACT_LEAKY_RELU,
        FL_ACT_THRESHOLDED_RELU, FL_ACT_SCALED_TANH


ACTIVATION_CODES = {
    "tanh": FL_ACT_TANH,
    "sigmoid": FL_ACT_SIGMOID,
    "relu": FL_ACT_RELU,
    "hard_sigmoid": FL_ACT_HARD_SIGMOID,
    "affine": FL_ACT_AFFINE,
    "softsign": FL_ACT_SOFTSIGN,
    "softplus": FL_ACT_SOFTPLUS,
    "elu": FL_ACT_ELU,
    "leaky_relu": FL_ACT_LEAKY_RELU,
    "thresholded_relu": FL_ACT_THRESHOLDED_RELU,
    "scaled_tanh": FL_ACT_SCALED_TANH,
}


# SciPy's OpenBLAS thread control (set by fastlstm.runtime): fastlstm calls sgemm from its own
# threads, each on its own rows, so OpenBLAS must not start threads of its own meanwhile.
ctypedef void (*blas_set_threads_fn)(int) noexcept nogil
ctypedef int (*blas_get_threads_fn)() noexcept nogil
cdef blas_set_threads_fn _blas_set_threads = NULL
cdef blas_get_threads_fn _blas_get_threads = NULL
cdef int _blas_users = 0
cdef int _blas_saved = 1


def set_blas_thread_control(size_t setter, size_t getter):
    global _blas_set_threads, _blas_get_threads
    _blas_set_threads = <blas_set_threads_fn>setter
    _blas_get_threads = <blas_get_threads_fn>getter


cdef void _blas_enter():
    # Called with the GIL held, so the count needs no other lock.
    global _blas_users, _blas_saved
    if _blas_set_threads == NULL:
        return
    if _blas_users == 0:
        _blas_saved = _blas_get_threads()
        if _blas_saved != 1:
            _blas_set_threads(1)
    _blas_users += 1


cdef void _blas_leave():
    global _blas_users
    if _blas_set_threads == NULL:
        return
    _blas_users -= 1
    if _blas_users == 0 and _blas_saved != 1:
        _blas_set_threads(_blas_saved)


cdef void _sgemm(char *ta, char *tb, int *m, int *n, int *k, float *alpha, float *a, int *lda,
                 float *b, int *ldb, float *beta, float *c, int *ldc) noexcept nogil:
    blas_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


cdef fl_activation _activation(tuple spec):
    # spec is (name, alpha, beta), already validated by fastlstm.activations
    cdef fl_activation act
    act.kind = ACTIVATION_CODES[spec[0]]
    act.alpha = spec[1]
    act.beta = spec[2]
    return act


cdef const float *_ptr(const float[::1] a):
    return &a[0] if a is not None and a.shape[0] > 0 else NULL


cdef object _packed(object w, int groups, int units, int K):
    cdef const float[::1] src = w.reshape(-1)
    out = np.empty(fl_packed_size(groups, units, K), np.float32)
    cdef float[::1] dst = out
    fl_pack(&src[0], groups, units, K, &dst[0])
    return out


def apply_activation(tuple spec, float[::1] values):
    """Apply a normalised activation spec in place with the kernel's own code (for tests)."""
    if values.shape[0]:
        fl_activate(_activation(spec), &values[0], <int>values.shape[0])


cdef class CellKernel:
    """One direction of one layer: packed float32 weights and the C cell description."""
    cdef fl_cell cell
    cdef readonly object w_ih, w_hh, bias, w_hr, peephole, w_ih_packed, w_hh_packed, w_hr_packed
    cdef readonly int input_size, hidden_size, output_size

    def __init__(self, w_ih, w_hh, bias, w_hr, peephole, *, gate_act, cell_act, out_act,
                 gate_clip, cell_clip, proj_clip, bint input_forget):
        self.w_ih = np.ascontiguousarray(w_ih, dtype=np.float32)
        self.w_hh = np.ascontiguousarray(w_hh, dtype=np.float32)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        self.w_hr = None if w_hr is None else np.ascontiguousarray(w_hr, dtype=np.float32)
        self.peephole = None if peephole is None else np.ascontiguousarray(peephole, dtype=np.float32)
        H = self.w_ih.shape[0] // 4
        O = H if self.w_hr is None else self.w_hr.shape[0]
        I = self.w_ih.shape[1]
        if (self.w_ih.shape != (4 * H, I) or self.w_hh.shape != (4 * H, O)
                or self.bias.shape != (4 * H,)
                or (self.w_hr is not None and self.w_hr.shape != (O, H))
                or (self.peephole is not None and self.peephole.shape != (3, H))):
            raise ValueError("CellKernel: inconsistent weight shapes")
        self.input_size, self.hidden_size, self.output_size = I, H, O
        memset(&self.cell, 0, sizeof(fl_cell))
        self.cell.input_size = I
        self.cell.hidden_size = H
        self.cell.output_size = O
        self.cell.w_ih = _ptr(self.w_ih.reshape(-1))
        self.cell.w_hh = _ptr(self.w_hh.reshape(-1))
        self.cell.bias = _ptr(self.bias)
        self.cell.w_hr = NULL if self.w_hr is None else _ptr(self.w_hr.reshape(-1))
        self.w_ih_packed = _packed(self.w_ih, 4, H, I)
        self.cell.w_ih_packed = _ptr(self.w_ih_packed)
        self.w_hh_packed = _packed(self.w_hh, 4, H, O)
        self.cell.w_hh_packed = _ptr(self.w_hh_packed)
        self.w_hr_packed = None if self.w_hr is None else _packed(self.w_hr, 1, O, H)
        self.cell.w_hr_packed = NULL if self.w_hr is None else _ptr(self.w_hr_packed)
        self.cell.peephole = NULL if self.peephole is None else _ptr(self.peephole.reshape(-1))
        self.cell.input_forget = input_forget
        self.cell.has_gate_clip = gate_clip is not None
        self.cell.gate_clip = 0.0 if gate_clip is None else gate_clip
        self.cell.has_cell_clip = cell_clip is not None
        self.cell.cell_clip = 0.0 if cell_clip is None else cell_clip
        self.cell.has_proj_clip = proj_clip is not None
        self.cell.proj_clip = 0.0 if proj_clip is None else proj_clip
        self.cell.gate_act = _activation(gate_act)
        self.cell.cell_act = _activation(cell_act)
        self.cell.out_act = _activation(out_act)
        for a in (self.w_ih, self.w_hh, self.bias, self.w_hr, self.peephole, self.w_ih_packed,
                  self.w_hh_packed, self.w_hr_packed):
            if a is not None:
                a.flags.writeable = False


cdef class Workspace:
    """Scratch buffers for runs of up to `rows` (b, t) rows and `batch` sequences.

    A stream keeps one so that a step allocates nothing but its output.
    """
    cdef readonly object gx, pre, hs, hs2, cs, hfull, buf_a, buf_b
    cdef readonly Py_ssize_t rows, batch

    def __init__(self, list layers, Py_ssize_t rows, Py_ssize_t batch):
        cdef int G = 0, H = 0, O = 0, W = 0
        for directions in layers:
            for k in directions:
                G = max(G, 4 * k.hidden_size)
                H = max(H, k.hidden_size)
                O = max(O, k.output_size)
            W = max(W, len(directions) * directions[0].output_size)
        self.rows, self.batch = rows, batch
        self.gx = np.empty(max(rows * G, 1), np.float32)
        self.pre = np.empty(max(batch * G, 1), np.float32)
        self.hs = np.empty(max(batch * O, 1), np.float32)
        self.hs2 = np.empty(max(batch * O, 1), np.float32)
        self.cs = np.empty(max(batch * H, 1), np.float32)
        self.hfull = np.empty(max(batch * H, 1), np.float32)
        # Layer outputs alternate between two buffers; the last layer writes to the caller's y.
        n_between = rows * W if len(layers) > 1 else 0
        self.buf_a = np.empty(max(n_between, 1), np.float32)
        self.buf_b = np.empty(max(n_between if len(layers) > 2 else 0, 1), np.float32)


def run_stack(list layers, const float[:, :, ::1] x, bint batch_first, list h0, list c0,
              list hn, list cn, const int[::1] lengths, const int[::1] order,
              float[:, :, ::1] y, Workspace ws, int num_threads, bint stepwise=False):
    """Run every layer and direction of a stack over x.

    layers: per layer, a list of CellKernel (1 or 2 directions).
    x: (B, T, I) when batch_first else (T, B, I), C-contiguous float32.
    h0, c0: per (layer, direction), (B, O) / (B, H) float32 C-contiguous arrays or None (zeros).
    hn, cn: per (layer, direction), output arrays (may be the same objects as h0, c0).
    lengths, order: (B,) int32 or None.  y: the last layer's output, laid out like x, or None.
    stepwise: input projection by the tile kernel, so that each row's result is independent of
    the rest of the batch (streams and pools).
    """
    cdef Py_ssize_t B, T
    cdef fl_seq seq
    cdef const float *xin
    cdef float[::1] a_view, b_view, gx_v, pre_v, hs_v, hs2_v, cs_v, hf_v

    if batch_first:
        B, T = x.shape[0], x.shape[1]
    else:
        T, B = x.shape[0], x.shape[1]
    if ws.rows < B * T or ws.batch < B:
        raise ValueError("workspace too small")

    gx_v, pre_v, hs_v, hs2_v, cs_v, hf_v = ws.gx, ws.pre, ws.hs, ws.hs2, ws.cs, ws.hfull
    a_view, b_view = ws.buf_a, ws.buf_b

    memset(&seq, 0, sizeof(fl_seq))
    seq.steps = <int>T
    seq.batch = <int>B
    seq.row_b = T if batch_first else 1
    seq.row_t = 1 if batch_first else B
    seq.lengths = NULL if lengths is None else &lengths[0]
    seq.order = NULL if order is None else &order[0]
    seq.gx = &gx_v[0]
    seq.pre = &pre_v[0]
    seq.hs = &hs_v[0]
    seq.hs2 = &hs2_v[0]
    seq.cs = &cs_v[0]
    seq.num_threads = num_threads
    seq.input_by_tiles = stepwise

    xin = &x[0, 0, 0] if x.shape[0] * x.shape[1] * x.shape[2] > 0 else NULL
    _blas_enter()
    try:
        _run_layers(layers, seq, xin, <int>x.shape[2], y, a_view, b_view, hf_v, h0, c0, hn, cn)
    finally:
        _blas_leave()


cdef _run_layers(list layers, fl_seq seq, const float *xin, int x_ld, float[:, :, ::1] y,
                 float[::1] a_view, float[::1] b_view, float[::1] hf_v, list h0, list c0,
                 list hn, list cn):
    cdef Py_ssize_t L = len(layers), l, d, D, k = 0
    cdef CellKernel kern
    cdef float *yout
    cdef int y_ld
    cdef float[:, ::1] st
    cdef const float[:, ::1] cst
    cdef fl_cell cells[2]
    cdef fl_seq seqs[2]
    for l in range(L):
        directions = layers[l]
        D = len(directions)
        out_w = D * (<CellKernel>directions[0]).output_size
        if l == L - 1:
            yout = NULL if (y is None or y.shape[0] * y.shape[1] * y.shape[2] == 0) else &y[0, 0, 0]
            y_ld = <int>out_w
        else:
            yout = &a_view[0] if l % 2 == 0 else &b_view[0]
            y_ld = <int>out_w
        for d in range(D):
            kern = <CellKernel>directions[d]
            cells[d] = kern.cell
            seqs[d] = seq
            seqs[d].x = xin
            seqs[d].x_ld = x_ld
            seqs[d].y = NULL if yout == NULL else yout + d * kern.output_size
            seqs[d].y_ld = y_ld
            seqs[d].reverse = d == 1
            seqs[d].hfull = &hf_v[0] if kern.w_hr is not None else NULL
            if h0[k] is None:
                seqs[d].h0 = NULL
            else:
                cst = h0[k]
                seqs[d].h0 = &cst[0, 0] if cst.shape[0] * cst.shape[1] > 0 else NULL
            if c0[k] is None:
                seqs[d].c0 = NULL
            else:
                cst = c0[k]
                seqs[d].c0 = &cst[0, 0] if cst.shape[0] * cst.shape[1] > 0 else NULL
            st = hn[k]
            seqs[d].hn = &st[0, 0] if st.shape[0] * st.shape[1] > 0 else NULL
            st = cn[k]
            seqs[d].cn = &st[0, 0] if st.shape[0] * st.shape[1] > 0 else NULL
            k += 1
        with nogil:
            for d in range(D):
                fl_run_sequence(&cells[d], &seqs[d], _sgemm)
        xin = yout
        x_ld = y_ld


def runtime_facts():
    return {
        "openmp": bool(fl_openmp_enabled()),
        "openmp_version": fl_openmp_version(),
        "openmp_used_in_parallel": bool(fl_openmp_used_in_parallel()),
        "avx2_fma": bool(fl_cpu_has_avx2_fma()),
        "avx2_kernels": bool(fl_simd_avx2_in_use()),
    }
