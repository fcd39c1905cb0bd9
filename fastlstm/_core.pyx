# cython: language_level=3
# (bounds-check directives come from setup.py: off by default, on for FASTLSTM_SANITIZE=1)
"""The native path: builds C cell descriptions and runs whole stacks without the GIL.

Python (fastlstm.models) validates every argument before it calls in here; this module only
checks what it must to never touch memory it does not own (shapes of the buffers it is given).
"""
cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.string cimport memcpy, memset
from scipy.linalg.cython_blas cimport sgemm as blas_sgemm

cimport numpy as cnp
import numpy as np

cnp.import_array()


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
        int standard
        int precision
        const void *w_ih_q
        const void *w_hh_q
        const void *w_hr_q
        const float *w_ih_scale
        const float *w_hh_scale
        const float *w_hr_scale
        const int *w_ih_comp
        const int *w_hh_comp
        const int *w_hr_comp
        const void *w_ih_lo_q
        const float *w_ih_lo_scale
        const int *w_ih_lo_comp

    ctypedef struct fl_run_plan:
        int by_step, single_row, by_tiles, compact, fused, threads, projection_threads, by_rows
        int ask_ahead
        size_t step_bytes

    enum:
        FL_BUFS

    void fl_plan(const fl_cell *cells, const int *directions, int layers, int batch, int steps,
                 int lengths, int stepwise, int threads, fl_run_plan *runs, size_t *floats)

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
        const fl_run_plan *plan
        const long long *gx_start
        const int *state_rows
        float *xc
        float *qx
        float *qh

    void fl_run_sequence(const fl_cell *cell, const fl_seq *seq, fl_sgemm_fn sgemm)
    size_t fl_packed_size(int groups, int units, int K)
    void fl_pack(const float *w, int groups, int units, int K, float *out)
    void fl_activate(fl_activation act, float *v, int n)
    enum:
        FL_PREC_FLOAT32, FL_PREC_INT8, FL_PREC_BF16
    int fl_padded_k(int precision, int K)
    size_t fl_packed_q_bytes(int precision, int groups, int units, int K)
    void fl_pack_q(int precision, const void *w, int groups, int units, int K, void *out)
    void fl_quantize_rows(int precision, const float *x, size_t x_ld, int rows, int K,
                          int parts, void *out, float *scales)
    int fl_openmp_enabled()
    int fl_openmp_version()
    int fl_openmp_used_in_parallel()
    int fl_cpu_has_avx2_fma()
    const char *fl_simd_name()
    int fl_blas_used()

    enum:
        FL_ROW_PAD

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


cdef object _aligned_empty(size_t n):
    """n float32 on a 64-byte boundary (NumPy's own alignment is 16 bytes): a 512-bit load of
    packed weights, or of a row of the buffers whose rows are multiples of 64 bytes, then
    never straddles two cache lines (measured: the tile 7% faster in L1, the one-row pair
    kernel 5-10% on a stream step's weights)."""
    cdef cnp.ndarray buf = np.empty(n + 16, np.float32)
    cdef size_t skip = ((64 - <size_t>cnp.PyArray_DATA(buf) % 64) % 64) // 4
    return buf[skip:skip + n]


cdef object _packed(object w, int groups, int units, int K):
    cdef const float[::1] src = w.reshape(-1)
    out = _aligned_empty(fl_packed_size(groups, units, K))
    cdef float[::1] dst = out
    fl_pack(&src[0], groups, units, K, &dst[0])
    return out


def apply_activation(tuple spec, float[::1] values):
    """Apply a normalised activation spec in place with the kernel's own code (for tests)."""
    if values.shape[0]:
        fl_activate(_activation(spec), &values[0], <int>values.shape[0])


PRECISION_CODES = {"float32": FL_PREC_FLOAT32, "int8": FL_PREC_INT8, "bfloat16": FL_PREC_BF16}


cdef object _packed_q(int precision, object codes, int groups, int units, int K):
    """codes (groups*units, K) of int8 or bfloat16 bits (uint16) packed by fl_pack_q, on a
    64-byte boundary."""
    cdef size_t n = fl_packed_q_bytes(precision, groups, units, K)
    buf = _aligned_empty((n + 3) // 4).view(np.uint8)
    cdef unsigned char[::1] dst = buf
    src = np.ascontiguousarray(codes)
    cdef const unsigned char[::1] raw = src.reshape(-1).view(np.uint8)
    fl_pack_q(precision, &raw[0], groups, units, K, &dst[0])
    return buf


cdef class CellKernel:
    """One direction of one layer: packed weights (float32, or int8 / bfloat16 with
    ``precision``) and the C cell description."""
    cdef fl_cell cell
    cdef readonly object w_ih, w_hh, bias, w_hr, peephole, w_ih_packed, w_hh_packed, w_hr_packed
    cdef readonly object quantized   # name -> (packed codes, row scales, row sums * 128)
    cdef readonly int input_size, hidden_size, output_size
    cdef readonly bint reverse    # runs backward over each sequence's valid steps
    cdef readonly str precision

    def __init__(self, w_ih, w_hh, bias, w_hr, peephole, *, gate_act, cell_act, out_act,
                 gate_clip, cell_clip, proj_clip, bint input_forget, bint reverse=False,
                 str precision="float32", dict codes=None):
        """``codes`` (with int8 or bfloat16): per weight name (weight_ih, weight_hh, and
        weight_hr with a projection; int8 also weight_ih_lo, W_ih's second part) its (codes,
        scales): int8 codes with a float32 scale per row, or bfloat16 bit patterns (uint16)
        with None; w_ih, w_hh and w_hr are then the values they stand for."""
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
        self.reverse = reverse
        memset(&self.cell, 0, sizeof(fl_cell))
        self.cell.input_size = I
        self.cell.hidden_size = H
        self.cell.output_size = O
        self.cell.w_ih = _ptr(self.w_ih.reshape(-1))
        self.cell.w_hh = _ptr(self.w_hh.reshape(-1))
        self.cell.bias = _ptr(self.bias)
        self.cell.w_hr = NULL if self.w_hr is None else _ptr(self.w_hr.reshape(-1))
        if precision == "float32":
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
        self.cell.standard = (gate_act[0] == "sigmoid" and cell_act[0] == "tanh"
                              and out_act[0] == "tanh" and peephole is None and not input_forget
                              and gate_clip is None and cell_clip is None)
        self.precision = precision
        self.quantized = {}
        if precision != "float32":
            self._set_codes(precision, codes or {})
        for a in (self.w_ih, self.w_hh, self.bias, self.w_hr, self.peephole, self.w_ih_packed,
                  self.w_hh_packed, self.w_hr_packed):
            if a is not None:
                a.flags.writeable = False

    cdef _set_codes(self, str precision, dict codes):
        if precision not in PRECISION_CODES:
            raise ValueError(f"CellKernel: precision must be one of {sorted(PRECISION_CODES)}, "
                             f"got {precision!r}")
        cdef int prec = PRECISION_CODES[precision]
        cdef int I = self.input_size, H = self.hidden_size, O = self.output_size
        want = {"weight_ih": (4, H, I), "weight_hh": (4, H, O)}
        if prec == FL_PREC_INT8:
            want["weight_ih_lo"] = (4, H, I)
        if self.w_hr is not None:
            want["weight_hr"] = (1, O, H)
        if set(codes) != set(want):
            raise ValueError(f"CellKernel: codes for {sorted(want)} expected, got {sorted(codes)}")
        dtype = np.int8 if prec == FL_PREC_INT8 else np.uint16
        for name, (groups, units, K) in want.items():
            q, scales = codes[name]
            q = np.ascontiguousarray(q)
            if q.dtype != dtype or q.shape != (groups * units, K):
                raise ValueError(f"CellKernel: {name} codes must be {np.dtype(dtype)} of shape "
                                 f"{(groups * units, K)}, got {q.dtype} {q.shape}")
            packed = _packed_q(prec, q, groups, units, K)
            if prec == FL_PREC_INT8:
                scales = np.ascontiguousarray(scales, dtype=np.float32)
                if scales.shape != (groups * units,):
                    raise ValueError(f"CellKernel: {name} scales must have shape "
                                     f"{(groups * units,)}, got {scales.shape}")
                comp = (128 * q.astype(np.int64).sum(axis=1)).astype(np.int32)
            else:
                scales = comp = None
            for a in (packed, scales, comp):
                if a is not None:
                    a.flags.writeable = False
            self.quantized[name] = (packed, scales, comp)
        self.cell.precision = prec
        self.cell.w_ih_q = cnp.PyArray_DATA(self.quantized["weight_ih"][0])
        self.cell.w_hh_q = cnp.PyArray_DATA(self.quantized["weight_hh"][0])
        if self.w_hr is not None:
            self.cell.w_hr_q = cnp.PyArray_DATA(self.quantized["weight_hr"][0])
        if prec == FL_PREC_INT8:
            self.cell.w_ih_scale = <const float *>cnp.PyArray_DATA(self.quantized["weight_ih"][1])
            self.cell.w_hh_scale = <const float *>cnp.PyArray_DATA(self.quantized["weight_hh"][1])
            self.cell.w_ih_comp = <const int *>cnp.PyArray_DATA(self.quantized["weight_ih"][2])
            self.cell.w_hh_comp = <const int *>cnp.PyArray_DATA(self.quantized["weight_hh"][2])
            if self.w_hr is not None:
                self.cell.w_hr_scale = <const float *>cnp.PyArray_DATA(self.quantized["weight_hr"][1])
                self.cell.w_hr_comp = <const int *>cnp.PyArray_DATA(self.quantized["weight_hr"][2])
            self.cell.w_ih_lo_q = cnp.PyArray_DATA(self.quantized["weight_ih_lo"][0])
            self.cell.w_ih_lo_scale = <const float *>cnp.PyArray_DATA(self.quantized["weight_ih_lo"][1])
            self.cell.w_ih_lo_comp = <const int *>cnp.PyArray_DATA(self.quantized["weight_ih_lo"][2])



cdef class Plan:
    """How a call of one shape runs (``plan``), as the core decided it in ``fl_plan``: per
    (layer, direction) whether the inputs are projected step by step, by tiles or sgemm,
    whether only the valid rows are (with lengths), the threads and how they split the work;
    and every scratch buffer's size. Workspaces are sized from it and runners follow it."""
    cdef fl_run_plan *runs
    cdef int n
    cdef readonly Py_ssize_t batch, steps
    cdef readonly bint lengths, stepwise, uses_blas
    cdef readonly bint compact     # some run projects only the valid rows (needs gx_start)
    cdef readonly int threads      # asked for; each run may use fewer
    cdef readonly tuple floats     # gx, pre, hs, hs2, cs, hfull, buf_a, buf_b, xc, qx, qh
    cdef readonly Py_ssize_t nbytes
    cdef readonly Py_ssize_t projected_rows, gates   # the input projection's buffer
    cdef readonly tuple cells      # what the plan read of each cell (_plan_cells)

    def __dealloc__(self):
        PyMem_Free(self.runs)

    @property
    def decisions(self):
        """Per (layer, direction), the core's decisions, as dicts (for tests and tuning)."""
        return [self.runs[k] for k in range(self.n)]

    def __repr__(self):
        first = self.runs[0]
        return (f"Plan(batch={self.batch}, steps={self.steps}, lengths={self.lengths}, "
                f"stepwise={self.stepwise}, threads={self.threads}, by_step={first.by_step}, "
                f"compact={first.compact}, by_rows={first.by_rows}, nbytes={self.nbytes})")


cdef tuple _plan_cells(list layers):
    # what fl_plan reads of the cells, per layer a tuple per direction: a runner checks that
    # its layers are the ones its plan was made for
    return tuple(tuple(((<CellKernel>k).input_size, (<CellKernel>k).hidden_size,
                        (<CellKernel>k).output_size, (<CellKernel>k).cell.standard,
                        (<CellKernel>k).precision)
                       for k in d) for d in layers)


def plan(list layers, Py_ssize_t batch, Py_ssize_t steps, bint lengths, bint stepwise,
         int threads):
    """The plan of a run of these layers (per layer, a list of CellKernel) over `batch`
    sequences of `steps` steps (each at most 2**31 - 1), with or without lengths, stepwise
    (each row's result independent of the batch: streams, pools) or not, on up to `threads`
    threads: what ``fl_plan`` decides."""
    cdef Plan p = Plan.__new__(Plan)
    cdef Py_ssize_t k = 0, l, d
    cdef size_t floats[FL_BUFS]
    cdef fl_cell *cells
    cdef int *directions
    if not (0 <= batch <= 2147483647 and 0 <= steps <= 2147483647):
        raise ValueError(f"batch {batch} and steps {steps} must be within 0..2**31 - 1")
    p.n = <int>sum(len(d) for d in layers)
    p.runs = <fl_run_plan *>PyMem_Malloc(p.n * sizeof(fl_run_plan))
    cells = <fl_cell *>PyMem_Malloc(p.n * sizeof(fl_cell))
    directions = <int *>PyMem_Malloc(len(layers) * sizeof(int))
    try:
        if p.runs == NULL or cells == NULL or directions == NULL:
            raise MemoryError()
        for l in range(len(layers)):
            directions[l] = <int>len(layers[l])
            for d in range(directions[l]):
                cells[k] = (<CellKernel>layers[l][d]).cell
                k += 1
        fl_plan(cells, directions, <int>len(layers), <int>batch, <int>steps, lengths, stepwise,
                threads, p.runs, floats)
    finally:
        PyMem_Free(cells)
        PyMem_Free(directions)
    p.batch, p.steps, p.lengths, p.stepwise, p.threads = batch, steps, lengths, stepwise, threads
    p.cells = _plan_cells(layers)
    p.floats = tuple(floats[k] for k in range(FL_BUFS))
    p.nbytes = 4 * sum(p.floats)
    p.gates = max(4 * (<CellKernel>c).hidden_size for d in layers for c in d)
    p.projected_rows = batch if p.runs[0].by_step else batch * steps
    p.compact = any(p.runs[k].compact for k in range(p.n))
    p.uses_blas = any(not (p.runs[k].by_tiles or p.runs[k].by_step or p.runs[k].single_row)
                      for k in range(p.n))
    return p


cdef inline float *_data(cnp.ndarray a):
    # a Workspace buffer: C-contiguous float32, made by Workspace.__init__ (the only way in:
    # the attributes are read-only and a Workspace is not picklable)
    return <float *>cnp.PyArray_DATA(a)


@cython.auto_pickle(False)
cdef class Workspace:
    """Scratch buffers of the sizes a plan asks for; any plan it ``fits`` may use them."""
    cdef readonly cnp.ndarray gx, pre, hs, hs2, cs, hfull, buf_a, buf_b, xc, qx, qh
    cdef readonly tuple floats
    cdef readonly Py_ssize_t nbytes

    def __init__(self, Plan plan, Workspace at_least=None):
        """Buffers for ``plan``, and at least as large as ``at_least``'s (one workspace for
        plans whose buffers do not grow together, e.g. a pool's step sizes and thread
        counts)."""
        n = plan.floats
        if at_least is not None:
            n = tuple(max(a, b) for a, b in zip(n, at_least.floats))
        self.floats, self.nbytes = n, 4 * sum(n)
        self.gx, self.pre, self.hs, self.hs2, self.cs, self.hfull = [
            _aligned_empty(k) for k in n[:6]]
        self.buf_a, self.buf_b, self.xc = [np.empty(k, np.float32) for k in n[6:9]]
        self.qx, self.qh = [_aligned_empty(k) for k in n[9:]]

    def fits(self, Plan plan):
        """Whether a run following ``plan`` can use these buffers."""
        cdef Py_ssize_t k
        for k in range(FL_BUFS):
            if <Py_ssize_t>plan.floats[k] > <Py_ssize_t>self.floats[k]:
                return False
        return True


cdef float *_state_entry(object a, Py_ssize_t k, Py_ssize_t rows, Py_ssize_t width,
                         bint written) except? NULL:
    """Entry k of a state given as one (entries, rows, width) array or as a sequence of
    (rows, width) arrays or None (NULL: zeros, or not written): C-contiguous native float32
    of exactly that shape, writeable when ``written``, or a ValueError (the caller validated
    it; this guards memory)."""
    cdef cnp.ndarray arr
    cdef bint stacked = cnp.PyArray_CheckExact(a) and cnp.PyArray_NDIM(<cnp.ndarray>a) == 3
    if not stacked:
        a = a[k]
        if a is None:
            return NULL
    if not cnp.PyArray_Check(a):
        raise ValueError("a state entry is not an array")
    arr = <cnp.ndarray>a
    if not (cnp.PyArray_TYPE(arr) == cnp.NPY_FLOAT32 and cnp.PyArray_ISNOTSWAPPED(arr)
            and (cnp.PyArray_ISCARRAY(arr) if written else cnp.PyArray_ISCARRAY_RO(arr))
            and cnp.PyArray_NDIM(arr) == (3 if stacked else 2)
            and cnp.PyArray_DIMS(arr)[cnp.PyArray_NDIM(arr) - 2] == rows
            and cnp.PyArray_DIMS(arr)[cnp.PyArray_NDIM(arr) - 1] == width
            and (not stacked or k < cnp.PyArray_DIMS(arr)[0])):
        raise ValueError(f"state entry {k} must be a C-contiguous aligned float32 ({rows}, "
                         f"{width}) array")
    if rows * width == 0:
        return NULL
    return <float *>cnp.PyArray_DATA(arr) + (k * rows * width if stacked else 0)


cdef unsigned long long _executions = 0


def executions():
    """How many runs (each over all layers of one batch) this process has made: what a test
    counts to see that a pool step is one native call."""
    return _executions


cdef class Runner:
    """A plan resolved to C descriptions on one workspace: per (layer, direction) its cell and
    its sequence arguments. ``run`` fills in x, y, the states and the lengths and executes
    every layer without the GIL. A stream keeps a runner bound to its state
    (``bind_state``), so a step costs two pointers."""
    cdef fl_cell *cells
    cdef fl_seq *seqs
    cdef int n, n_layers
    cdef int *directions
    cdef Py_ssize_t in_width, out_width
    cdef bint batch_first
    cdef bint uses_blas   # sgemm projects the inputs: hold OpenBLAS to one thread meanwhile
    cdef readonly Plan plan
    cdef readonly Workspace workspace
    cdef object kernels, bound

    def __cinit__(self, list layers, *args, **kwargs):
        cdef Py_ssize_t n = sum(len(d) for d in layers)
        self.cells = <fl_cell *>PyMem_Malloc(max(n, 1) * sizeof(fl_cell))
        self.seqs = <fl_seq *>PyMem_Malloc(max(n, 1) * sizeof(fl_seq))
        self.directions = <int *>PyMem_Malloc(max(len(layers), 1) * sizeof(int))
        if self.cells == NULL or self.seqs == NULL or self.directions == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self.cells)
        PyMem_Free(self.seqs)
        PyMem_Free(self.directions)

    def __init__(self, list layers, Plan plan, bint batch_first, Workspace ws):
        cdef fl_seq base
        cdef CellKernel kern
        cdef Py_ssize_t l, d, k = 0, D
        cdef float *yout
        cdef int x_ld
        if _plan_cells(layers) != plan.cells:
            raise ValueError(f"the plan was made for other layers: (input, hidden, output, "
                             f"standard, precision) per direction {plan.cells}, these have "
                             f"{_plan_cells(layers)}")
        if not ws.fits(plan):
            raise ValueError("workspace too small for the plan")
        self.kernels, self.plan, self.workspace, self.bound = layers, plan, ws, None
        self.n_layers = <int>len(layers)
        self.batch_first = batch_first
        self.in_width = (<CellKernel>layers[0][0]).input_size
        last = layers[len(layers) - 1]  # (no negative indexing: wraparound is off)
        self.out_width = len(last) * (<CellKernel>last[0]).output_size

        memset(&base, 0, sizeof(fl_seq))
        base.steps = <int>plan.steps
        base.batch = <int>plan.batch
        base.row_b = plan.steps if batch_first else 1
        base.row_t = 1 if batch_first else plan.batch
        base.xc, base.gx, base.pre = _data(ws.xc), _data(ws.gx), _data(ws.pre)
        base.qx, base.qh = _data(ws.qx), _data(ws.qh)
        base.cs, base.hs, base.hs2 = _data(ws.cs), _data(ws.hs), _data(ws.hs2)
        self.uses_blas = plan.uses_blas
        x_ld = <int>self.in_width
        for l in range(self.n_layers):
            D = len(layers[l])
            self.directions[l] = <int>D
            yout = NULL if l == self.n_layers - 1 else _data(ws.buf_a if l % 2 == 0 else ws.buf_b)
            for d in range(D):
                kern = <CellKernel>layers[l][d]
                self.cells[k] = kern.cell
                self.seqs[k] = base
                self.seqs[k].x = NULL if l == 0 else _data(ws.buf_b if l % 2 == 0 else ws.buf_a)
                self.seqs[k].x_ld = x_ld
                self.seqs[k].y = NULL if yout == NULL else yout + d * kern.output_size
                self.seqs[k].y_ld = <int>(D * kern.output_size)
                self.seqs[k].reverse = kern.reverse
                self.seqs[k].hfull = _data(ws.hfull) if kern.w_hr is not None else NULL
                self.seqs[k].plan = &plan.runs[k]
                k += 1
            x_ld = <int>(D * (<CellKernel>layers[l][0]).output_size)
        self.n = <int>k

    cdef int _bind(self, h0, c0, hn, cn) except -1:
        # h0, c0, hn, cn: see run
        cdef int k
        cdef Py_ssize_t B = self.plan.batch
        for k in range(self.n):
            O, H = self.cells[k].output_size, self.cells[k].hidden_size
            self.seqs[k].state_rows = NULL   # sequence b's state is row b (step_rows sets rows)
            self.seqs[k].h0 = _state_entry(h0, k, B, O, False)
            self.seqs[k].c0 = _state_entry(c0, k, B, H, False)
            self.seqs[k].hn = _state_entry(hn, k, B, O, True)
            self.seqs[k].cn = _state_entry(cn, k, B, H, True)
        return 0

    def bind_state(self, list h, list c):
        """Read and write the state in place at every ``step``: h, c per (layer, direction)
        C-contiguous float32 (batch, width) arrays of the planned batch."""
        self._bind(h, c, h, c)
        self.bound = (h, c)

    def run(self, const float[:, :, ::1] x, float[:, :, ::1] y, h0, c0, hn, cn,
            object lengths):
        """x laid out as planned (B, T, I) or (T, B, I); y likewise with the output width, or
        None when only the final states are wanted. h0, c0: per (layer, direction), (B, O) /
        (B, H) float32 C-contiguous arrays or None (zeros), as a list or stacked in one
        (entries, B, width) array; hn, cn: where the final states go, likewise (may be h0,
        c0). lengths: (B,) int32 or None, as planned."""
        cdef Py_ssize_t B = self.plan.batch
        cdef const int[::1] lengths_v, order_v
        cdef const long long[::1] start_v
        cdef int k
        self._check_xy(x, y)
        if (lengths is not None) != self.plan.lengths:
            raise ValueError("lengths given to a plan made without them, or the reverse")
        order = gx_start = None
        if lengths is not None:
            lengths_v = lengths
            if lengths_v.shape[0] != B:
                raise ValueError("lengths must have one entry per sequence")
            order = np.argsort(-np.asarray(lengths), kind="stable").astype(np.int32)
            order_v = order
            if self.plan.compact:
                gx_start = np.zeros(B, np.int64)
                np.cumsum(lengths[:B - 1], out=gx_start[1:])
                start_v = gx_start
        for k in range(self.n):
            if lengths is not None and B:
                self.seqs[k].lengths, self.seqs[k].order = &lengths_v[0], &order_v[0]
                self.seqs[k].gx_start = &start_v[0] if self.plan.compact else NULL
            else:
                self.seqs[k].lengths = self.seqs[k].order = NULL
                self.seqs[k].gx_start = NULL
        self._bind(h0, c0, hn, cn)
        self.bound = None
        # (the arrays behind the pointers stay referenced by this frame until _execute ends)
        self._execute(&x[0, 0, 0] if x.size else NULL, &y[0, 0, 0] if y is not None and y.size else NULL)

    def step_rows(self, const float[:, :, ::1] x, float[:, :, ::1] y, list h, list c,
                  const int[::1] rows):
        """One step (the plan has one) of the planned batch, sequence b's state being row
        rows[b] of the slabs h, c (per (layer, direction), C-contiguous float32 (capacity,
        width) arrays, read and updated in place): a pool's step, with no gather or scatter
        of states. x and y as in ``run``."""
        cdef Py_ssize_t B = self.plan.batch, cap, b
        cdef int k
        cdef float *hk
        cdef float *ck
        if self.plan.steps != 1 or self.plan.lengths:
            raise ValueError("step_rows needs a plan of one step without lengths")
        if rows.shape[0] != B or len(h) != self.n or len(c) != self.n:
            raise ValueError(f"rows must have {B} entries and h, c {self.n} slabs each")
        self._check_xy(x, y)
        cap = h[0].shape[0]
        for b in range(B):
            if not 0 <= rows[b] < cap:
                raise ValueError(f"rows[{b}] = {rows[b]} is not a row of slabs of {cap}")
        for k in range(self.n):   # all checked before any is set: a refusal changes nothing
            _state_entry(h, k, cap, self.cells[k].output_size, True)
            _state_entry(c, k, cap, self.cells[k].hidden_size, True)
        self.bound = None
        try:
            for k in range(self.n):
                hk = _state_entry(h, k, cap, self.cells[k].output_size, True)
                ck = _state_entry(c, k, cap, self.cells[k].hidden_size, True)
                self.seqs[k].h0 = self.seqs[k].hn = hk
                self.seqs[k].c0 = self.seqs[k].cn = ck
                self.seqs[k].lengths = self.seqs[k].order = NULL
                self.seqs[k].gx_start = NULL
                self.seqs[k].state_rows = &rows[0] if B else NULL
            self._execute(&x[0, 0, 0] if x.size else NULL, &y[0, 0, 0] if y.size else NULL)
        finally:   # the rows are this call's: a later run or step indexes states by batch row
            for k in range(self.n):
                self.seqs[k].state_rows = NULL

    cdef int _check_xy(self, const float[:, :, ::1] x, float[:, :, ::1] y) except -1:
        cdef Py_ssize_t rows = self.plan.batch if self.batch_first else self.plan.steps
        cdef Py_ssize_t cols = self.plan.steps if self.batch_first else self.plan.batch
        if x.shape[0] != rows or x.shape[1] != cols or x.shape[2] != self.in_width:
            raise ValueError(f"x has shape {tuple(x.shape)[:3]} but the plan is for "
                             f"{(rows, cols, self.in_width)}")
        if y is not None and (y.shape[0] != rows or y.shape[1] != cols
                              or y.shape[2] != self.out_width):
            raise ValueError(f"y has shape {tuple(y.shape)[:3]} but the plan needs "
                             f"{(rows, cols, self.out_width)}")
        return 0

    def step(self, object x_t, int threads):
        """The streaming fast path, on the bound state: x_t must already be a C-contiguous
        float32 (batch, input) array of the planned batch (the plan has one time step) and
        ``threads`` the plan's; returns y_t (batch, out), or None for anything else, for the
        caller to convert, replan or refuse."""
        # (NumPy's C API rather than typed memoryviews: a step is a few microseconds, and
        # the buffer protocol's two acquisitions were a tenth of it)
        cdef cnp.ndarray xa, y
        cdef cnp.npy_intp dims[2]
        if not cnp.PyArray_CheckExact(x_t) or self.bound is None:
            return None
        xa = <cnp.ndarray>x_t
        if not (cnp.PyArray_TYPE(xa) == cnp.NPY_FLOAT32 and cnp.PyArray_ISNOTSWAPPED(xa)
                and cnp.PyArray_NDIM(xa) == 2 and cnp.PyArray_ISCARRAY_RO(xa)
                and cnp.PyArray_DIMS(xa)[0] == self.plan.batch
                and cnp.PyArray_DIMS(xa)[1] == self.in_width and self.plan.steps == 1
                and threads == self.plan.threads):
            return None
        dims[0], dims[1] = self.plan.batch, self.out_width
        y = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT32, 0)
        if self.plan.batch == 0:
            return y
        self._execute(<const float *>cnp.PyArray_DATA(xa), <float *>cnp.PyArray_DATA(y))
        return y

    cdef _execute(self, const float *x, float *y):
        global _executions
        cdef int d, k, first_last = self.n - self.directions[self.n_layers - 1]
        _executions += 1
        for d in range(self.directions[0]):
            self.seqs[d].x = x
        for k in range(first_last, self.n):
            self.seqs[k].y = NULL if y == NULL else y + (k - first_last) * self.cells[k].output_size
        if not self.uses_blas:
            with nogil:
                for k in range(self.n):
                    fl_run_sequence(&self.cells[k], &self.seqs[k], _sgemm)
            return
        _blas_enter()
        try:
            with nogil:
                for k in range(self.n):
                    fl_run_sequence(&self.cells[k], &self.seqs[k], _sgemm)
        finally:
            _blas_leave()


def gather_rows(object values, cnp.ndarray out):
    """Copy ``values`` (arrays, in order) into the rows of ``out`` (a C-contiguous float32
    (n, width) array) while each is a C-contiguous native float32 ``(width,)`` array; return
    how many were copied, for the caller to convert or refuse the next one."""
    cdef cnp.ndarray v
    cdef Py_ssize_t n = 0, width
    cdef char *dst
    if not (cnp.PyArray_TYPE(out) == cnp.NPY_FLOAT32 and cnp.PyArray_ISCARRAY(out)
            and cnp.PyArray_NDIM(out) == 2):
        raise ValueError("out must be a C-contiguous float32 matrix")
    width = cnp.PyArray_DIMS(out)[1]
    dst = <char *>cnp.PyArray_DATA(out)
    for value in values:
        if n == cnp.PyArray_DIMS(out)[0] or not cnp.PyArray_CheckExact(value):
            break
        v = <cnp.ndarray>value
        if not (cnp.PyArray_TYPE(v) == cnp.NPY_FLOAT32 and cnp.PyArray_ISNOTSWAPPED(v)
                and cnp.PyArray_NDIM(v) == 1 and cnp.PyArray_DIMS(v)[0] == width
                and cnp.PyArray_ISCARRAY_RO(v)):
            break
        memcpy(dst + n * width * 4, cnp.PyArray_DATA(v), width * 4)
        n += 1
    return n


def runtime_facts():
    return {
        "openmp": bool(fl_openmp_enabled()),
        "openmp_version": fl_openmp_version(),
        "openmp_used_in_parallel": bool(fl_openmp_used_in_parallel()),
        "avx2_fma": bool(fl_cpu_has_avx2_fma()),
        "kernels": fl_simd_name().decode(),
        "blas_used": bool(fl_blas_used()),
        "reduced_precision": {p: fl_qtile_kernel(fl_simd(), PRECISION_CODES[p], 0).name.decode()
                              for p in ("int8", "bfloat16")},
    }


# ------------------------------------------------------------------------------ test hooks
# Thin wrappers over the kernel table of every instruction set this CPU runs, so that
# tests/test_native_kernels.py can test each one directly, whichever table fl_simd() chose.
# Not part of fastlstm's API. Shapes are checked so that a wrong call raises instead of
# writing past a buffer; the layouts are those of csrc/fl_simd.h.

cdef extern from "fl_simd.h" nogil:
    ctypedef struct fl_l2_ask:
        const float *ask_from "from"
        int lines

    ctypedef struct fl_fused:
        const float *wp
        int K
        const float *x
        int x_ld
        const float *pre
        int pre_ld
        int add
        const float *gx
        int gx_ld
        const float *bias
        float *c
        int c_ld
        float *h
        int h_ld
        float **y
        int nb, H, width

    ctypedef void (*fl_tile_fn)(int, const float *, int, const float *, int, int, float *, int,
                                int, int, int, fl_l2_ask) noexcept nogil
    ctypedef void (*fl_pair_fn)(const float *, const float *, int, const float *, float *,
                                float *, int, int, int) noexcept nogil
    ctypedef void (*fl_vec_fn)(float *, int) noexcept nogil
    ctypedef void (*fl_cell_fn)(const float **, const float *, const float **, float **,
                                float **, int, int, int, int) noexcept nogil
    ctypedef void (*fl_fused_fn)(const fl_fused *) noexcept nogil

    ctypedef struct fl_qtile:
        int M, units
        const void *w
        int Kp
        const void *x
        int x_ld
        const float *x_scale
        int x_scale_step
        int parts
        int accumulate
        int nb
        float *out
        int out_ld, m_stride, width
        int blocks
        size_t block_bytes
        const float *w_scale
        const int *w_comp

    ctypedef void (*fl_qtile_fn)(const fl_qtile *) noexcept nogil

    ctypedef struct fl_qkernel:
        fl_qtile_fn tile
        const char *name

    ctypedef void (*fl_qrow_fn)(int, const float *, int, int, int, void *,
                                float *) noexcept nogil

    ctypedef struct fl_simd_table:
        fl_tile_fn tile
        fl_pair_fn pair
        fl_vec_fn sigmoid
        fl_vec_fn tanh
        fl_cell_fn standard_cell
        fl_fused_fn gates_cell
        int rows
        int units
        int project_by_tiles
        const char *name
        fl_qrow_fn quantize_row

    const fl_simd_table *fl_simd_usable(int i)
    const fl_simd_table *fl_simd()
    void fl_quantize_row_c(int precision, const float *x, int K, int Kp, int parts, void *out,
                           float *scales)
    const fl_qkernel *fl_qtile_kernel(const fl_simd_table *table, int precision, int i)

    enum:
        FL_K_CHUNK, FL_TILE_ROWS_MAX, FL_LINE_FLOATS, FL_STEP_PROJECTION_MIN_BATCH


def _simd_tables_for_test():
    """Test hook: (name, rows, units) of every kernel table this CPU runs, narrowest first."""
    cdef int i = 0
    found = []
    while fl_simd_usable(i) != NULL:
        t = fl_simd_usable(i)
        found.append((t.name.decode(), t.rows, t.units))
        i += 1
    return found


def _kernel_constants_for_test():
    """Test hook: the constants of csrc/fl_tuning.h that the kernel tests depend on."""
    return {"FL_K_CHUNK": FL_K_CHUNK, "FL_TILE_ROWS_MAX": FL_TILE_ROWS_MAX,
            "FL_LINE_FLOATS": FL_LINE_FLOATS,
            "FL_STEP_PROJECTION_MIN_BATCH": FL_STEP_PROJECTION_MIN_BATCH}


cdef const fl_simd_table *_table_for_test(str isa) except NULL:
    cdef int i = 0
    while fl_simd_usable(i) != NULL:
        if fl_simd_usable(i).name.decode() == isa:
            return fl_simd_usable(i)
        i += 1
    raise ValueError(f"this CPU does not run the {isa!r} kernels")


cdef int _need(bint ok, str what) except -1:
    if not ok:
        raise ValueError(f"test hook: {what}")
    return 0


def _tile_for_test(str isa, int M, const float[::1] wp, int K, const float[:, ::1] x,
                   float[:, ::1] out, int m_stride, int width, bint accumulate, int ask_lines=0):
    """Test hook: the table's tile, out[r, m*m_stride + u] (+)= sum_k wp[k, m, u] * x[r, k] for
    the nb = len(x) rows; ask_lines > 0 asks for that many lines of wp into L2 meanwhile."""
    cdef const fl_simd_table *t = _table_for_test(isa)
    cdef fl_l2_ask ask
    cdef int nb = <int>x.shape[0]
    _need(M == 1 or M == 4, "M is 1 or 4")
    _need(1 <= nb <= t.rows, "1 <= rows <= the table's rows")
    _need(1 <= width <= t.units and K >= 1 and x.shape[1] >= K and m_stride >= 0, "sizes")
    _need(wp.shape[0] >= <Py_ssize_t>K * M * t.units, "wp holds K*M*units floats")
    _need(out.shape[0] == nb and out.shape[1] >= (M - 1) * m_stride + width, "out's shape")
    _need(0 <= ask_lines <= wp.shape[0] // FL_LINE_FLOATS, "ask within wp")
    ask.ask_from = &wp[0]
    ask.lines = ask_lines
    with nogil:
        t.tile(M, &wp[0], K, &x[0, 0], <int>x.shape[1], nb, &out[0, 0], <int>out.shape[1],
               m_stride, width, accumulate, ask)


def _pair_for_test(str isa, const float[::1] wp0, const float[::1] wp1, int K,
                   const float[::1] x, float[::1] out0, float[::1] out1, int m_stride,
                   int width0, int width1):
    """Test hook: the table's one-row pair kernel, two blocks of four gates (gates m_stride
    apart in out0 and out1)."""
    cdef const fl_simd_table *t = _table_for_test(isa)
    _need(K >= 1 and x.shape[0] >= K and m_stride >= 0, "sizes")
    _need(1 <= width0 <= t.units and 1 <= width1 <= t.units, "widths")
    _need(min(wp0.shape[0], wp1.shape[0]) >= <Py_ssize_t>K * 4 * t.units, "wp0, wp1 sizes")
    _need(out0.shape[0] >= 3 * m_stride + width0 and out1.shape[0] >= 3 * m_stride + width1,
          "out0, out1 sizes")
    with nogil:
        t.pair(&wp0[0], &wp1[0], K, &x[0], &out0[0], &out1[0], m_stride, width0, width1)


def _activation_for_test(str isa, str name, float[::1] values):
    """Test hook: the table's sigmoid or tanh, in place."""
    cdef const fl_simd_table *t = _table_for_test(isa)
    cdef fl_vec_fn fn
    _need(name in ("sigmoid", "tanh"), "name is sigmoid or tanh")
    fn = t.sigmoid if name == "sigmoid" else t.tanh
    if values.shape[0]:
        with nogil:
            fn(&values[0], <int>values.shape[0])


def _standard_cell_for_test(str isa, const float[:, ::1] gx, const float[::1] bias,
                            const float[:, ::1] pre, float[:, ::1] c, float[:, ::1] h, int j0,
                            int j1):
    """Test hook: the table's standard cell for units [j0, j1) of len(gx) rows (H = len(c[0]));
    False when the table has none (the generic cell serves it)."""
    cdef const fl_simd_table *t = _table_for_test(isa)
    cdef const float *gxr[FL_TILE_ROWS_MAX]
    cdef const float *prer[FL_TILE_ROWS_MAX]
    cdef float *cr[FL_TILE_ROWS_MAX]
    cdef float *hr[FL_TILE_ROWS_MAX]
    cdef int r, nb = <int>gx.shape[0], H = <int>c.shape[1]
    if t.standard_cell == NULL:
        return False
    _need(1 <= nb <= FL_TILE_ROWS_MAX and 0 <= j0 <= j1 <= H, "rows and units")
    _need(pre.shape[0] == nb and c.shape[0] == nb and h.shape[0] == nb, "one row each")
    _need(gx.shape[1] == 4 * H and pre.shape[1] == 4 * H and bias.shape[0] == 4 * H
          and h.shape[1] == H, "4H gates, H units")
    for r in range(nb):
        gxr[r], prer[r], cr[r], hr[r] = &gx[r, 0], &pre[r, 0], &c[r, 0], &h[r, 0]
    with nogil:
        t.standard_cell(gxr, &bias[0], prer, cr, hr, nb, H, j0, j1)
    return True


def _gates_cell_for_test(str isa, const float[::1] wp, int K, const float[:, ::1] x,
                         const float[:, ::1] pre, const float[:, ::1] gx,
                         const float[::1] bias, float[:, ::1] c, float[:, ::1] h,
                         float[:, ::1] y, int H, int width):
    """Test hook: the table's last K block fused with the standard cell (fl_fused), for one
    block of `width` units at column 0 of len(x) rows (gates H apart in pre, gx and bias; pre
    None: no earlier blocks; y None: no output rows). False when the table has none."""
    cdef const fl_simd_table *t = _table_for_test(isa)
    cdef fl_fused f
    cdef float *yr[FL_TILE_ROWS_MAX]
    cdef int r, nb = <int>x.shape[0]
    if t.gates_cell == NULL:
        return False
    _need(1 <= nb <= t.rows and 1 <= width <= t.units and width <= H, "rows and width")
    _need(1 <= K <= FL_K_CHUNK and x.shape[1] >= K, "one K block")
    _need(wp.shape[0] >= <Py_ssize_t>K * 4 * t.units, "wp holds K*4*units floats")
    _need(pre is None or (pre.shape[0] == nb and pre.shape[1] >= 3 * H + width), "pre's shape")
    _need(gx.shape[0] == nb and gx.shape[1] >= 3 * H + width and bias.shape[0] >= 3 * H + width,
          "gx and bias hold four gates H apart")
    _need(c.shape[0] == nb and c.shape[1] >= width and h.shape[0] == nb and h.shape[1] >= width,
          "c and h")
    _need(y is None or (y.shape[0] == nb and y.shape[1] >= width), "y's shape")
    f.wp, f.K, f.x, f.x_ld = &wp[0], K, &x[0, 0], <int>x.shape[1]
    f.add = pre is not None
    f.pre = &pre[0, 0] if pre is not None else NULL
    f.pre_ld = <int>pre.shape[1] if pre is not None else 0
    f.gx, f.gx_ld, f.bias = &gx[0, 0], <int>gx.shape[1], &bias[0]
    f.c, f.c_ld, f.h, f.h_ld = &c[0, 0], <int>c.shape[1], &h[0, 0], <int>h.shape[1]
    f.y = NULL
    if y is not None:
        for r in range(nb):
            yr[r] = &y[r, 0]
        f.y = yr
    f.nb, f.H, f.width = nb, H, width
    with nogil:
        t.gates_cell(&f)
    return True


def _qkernels_for_test(str isa, str precision):
    """Test hook: the names of the table's reduced-precision product kernels this CPU runs,
    the one runs use first."""
    cdef const fl_simd_table *t = _table_for_test(isa)
    cdef int i = 0
    found = []
    while fl_qtile_kernel(t, PRECISION_CODES[precision], i) != NULL:
        found.append(fl_qtile_kernel(t, PRECISION_CODES[precision], i).name.decode())
        i += 1
    return found


def _quantize_rows_for_test(str precision, const float[:, ::1] x, int parts=1, str isa=None):
    """Test hook: fl_quantize_rows of x's rows: (codes (rows * parts, padded K) uint8 or
    uint16, scales (rows * parts,))."""
    cdef int prec = PRECISION_CODES[precision]
    cdef int rows = <int>x.shape[0], K = <int>x.shape[1], Kp = fl_padded_k(prec, K)
    _need(prec != FL_PREC_FLOAT32 and rows >= 1 and K >= 1, "a reduced precision and rows")
    _need(parts == 1 or parts == 2, "parts is 1 or 2")
    codes = np.zeros((rows * parts, Kp), np.uint8 if prec == FL_PREC_INT8 else np.uint16)
    scales = np.zeros(rows * parts, np.float32)
    cdef float[::1] sc = scales
    cdef void *out = cnp.PyArray_DATA(<cnp.ndarray>codes)
    cdef const fl_simd_table *t = NULL if isa is None else _table_for_test(isa)
    cdef fl_qrow_fn row = fl_quantize_row_c
    cdef int r, esize = 1 if prec == FL_PREC_INT8 else 2
    if t != NULL and t.quantize_row != NULL:
        row = t.quantize_row
    with nogil:
        if t == NULL:
            fl_quantize_rows(prec, &x[0, 0], <size_t>x.shape[1], rows, K, parts, out, &sc[0])
        else:
            for r in range(rows):
                row(prec, &x[r, 0], K, Kp, parts, <char *>out + <size_t>r * parts * Kp * esize,
                    &sc[r * parts])
    return codes, scales


def _qtile_for_test(str isa, str precision, int variant, int M, codes, int K, x_codes,
                    const float[::1] x_scale, float[:, ::1] out, int m_stride, int width,
                    const float[::1] w_scale=None, const int[::1] w_comp=None, int parts=1,
                    bint accumulate=False):
    """Test hook: the table's `variant`-th product kernel of `precision` (see
    _qkernels_for_test) on one block: codes (M*units, K) int8 or uint16 rows (one block of
    the table's units), packed here; x_codes (nb, padded K) from _quantize_rows_for_test;
    out[r, m*m_stride + u] as in fl_qtile (fl_simd.h); w_scale, w_comp at unit 0."""
    cdef const fl_simd_table *t = _table_for_test(isa)
    cdef int prec = PRECISION_CODES[precision]
    cdef const fl_qkernel *k = fl_qtile_kernel(t, prec, variant)
    cdef fl_qtile q
    cdef int nb = <int>x_codes.shape[0] // parts
    _need(k != NULL, "a kernel this CPU runs")
    _need(M == 1 or M == 4, "M is 1 or 4")
    _need((parts == 1 or (parts == 2 and M == 4)) and x_codes.shape[0] == nb * parts,
          "parts: 1, or 2 with M = 4")
    _need(nb <= t.rows, "rows")
    _need(1 <= nb and 1 <= width <= t.units, "rows and width")
    _need(codes.shape == (M * t.units, K) and x_codes.shape[1] == fl_padded_k(prec, K),
          "codes and x_codes shapes")
    _need(out.shape[0] == nb and out.shape[1] >= (M - 1) * m_stride + width, "out's shape")
    if prec == FL_PREC_INT8:
        _need(w_scale is not None and w_comp is not None and x_scale.shape[0] >= nb * parts
              and w_scale.shape[0] >= (M - 1) * m_stride + width
              and w_comp.shape[0] >= (M - 1) * m_stride + width, "scales")
    # fl_pack_q packs with the process's table's units, so pack by hand for this one
    per = 4 if prec == FL_PREC_INT8 else 2
    Kp = fl_padded_k(prec, K)
    padded = np.zeros((M * t.units, Kp), codes.dtype)
    padded[:, :K] = codes
    packed = np.ascontiguousarray(
        padded.reshape(M, t.units, Kp // per, per).transpose(2, 0, 1, 3))
    xc = np.ascontiguousarray(x_codes)
    q.M, q.units, q.w, q.Kp = M, t.units, cnp.PyArray_DATA(packed), Kp
    q.x, q.x_ld, q.nb, q.parts = cnp.PyArray_DATA(xc), Kp, nb, parts
    q.x_scale_step, q.accumulate = 1, accumulate
    q.x_scale = &x_scale[0] if x_scale is not None and x_scale.shape[0] else NULL
    q.out, q.out_ld, q.m_stride, q.width = &out[0, 0], <int>out.shape[1], m_stride, width
    q.blocks, q.block_bytes = 1, 0
    q.w_scale = &w_scale[0] if w_scale is not None else NULL
    q.w_comp = &w_comp[0] if w_comp is not None else NULL
    with nogil:
        k.tile(&q)
