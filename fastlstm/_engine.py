"""The engine behind every model: its kernels, its states and its native calls.

``models``, ``streams``, ``pool``, ``io`` and the loaders talk to the native core only through
an ``Engine`` (``model.engine``), whose interface is small:

- ``zero_state(batch)``, ``state_lists(state, batch, name)``, ``pack(hs, cs)``: states in the
  caller's layout (PyTorch's ``(layers*directions, batch, width)``, or per-layer tuples when
  the layers differ in size) and as the per-(layer, direction) arrays the kernel reads;
  ``state_batch(state)``, the batch of a state nothing else fixes; ``cell_state(state,
  batch, name)``, a one-cell ``(h, c)`` as ``LSTMCell`` takes it;
- ``run(x, h0, c0, lengths, return_sequences, stepwise=...)``: one call over a batch;
- ``check_steps_forward(who)``: refuses a model that streams and pools cannot step;
  ``stepper(h, c)``: a one-step runner bound to state arrays, for a stream;
  ``workspace(plan)`` and ``runner(plan, workspace)``: runners on shared buffers, for a pool
  (whose ``step_rows`` reads and writes each stream's row of the state slabs).

How a call runs (projection mode, compaction, thread split, every buffer's size) is the
core's plan (``_core.plan``), asked once per call shape; the engine keeps a few runners
with their buffers for later calls of a shape it has seen, so a repeated call allocates
only its outputs. Every door (model call, stream, pool) gets the same plan for the same work.
"""
import threading

import numpy as np

from . import _core, runtime
from ._checks import MAX_INDEX, check_memory, check_shape, float_array


# Rows of float32 inputs copied into a batch buffer in C (a pool step's inputs).
gather_rows = _core.gather_rows


def _kernel(layer, params, codes, reverse):
    o = layer.options
    H = layer.hidden_size
    bias = params["bias_ih"].astype(np.float32) + params["bias_hh"]
    bias[H:2 * H] += np.float32(o.forget_bias)
    return _core.CellKernel(
        params["weight_ih"], params["weight_hh"], bias, params.get("weight_hr"),
        params.get("peephole"), gate_act=o.recurrent_activation, cell_act=o.activation,
        out_act=o.output_activation, gate_clip=o.gate_clip, cell_clip=o.cell_clip,
        proj_clip=o.proj_clip, input_forget=o.input_forget, reverse=reverse,
        precision=layer.precision, codes=codes or None)


class Engine:
    """Kernels and native calls for a stack of ``_spec.Layer``s (see the module docstring)."""

    # At most `keep` runners (each with its buffers) are kept for later calls, each holding
    # at most `keep_bytes` of buffers: a model holds little memory after a huge call.
    keep = 2
    keep_bytes = 32 << 20
    _KEEP_PLANS = 64

    def __init__(self, layers, bidirectional, batch_first, initial_state=None):
        needed = 2 if bidirectional else 1
        for k, layer in enumerate(layers):
            if len(layer.directions) != needed:
                raise ValueError(f"layer {k} has {len(layer.directions)} directions but a "
                                 f"{'bidirectional' if bidirectional else 'unidirectional'} "
                                 f"model needs {needed}")
        for prev, layer in zip(layers, layers[1:]):
            want = prev.output_size * needed
            if layer.input_size != want:
                raise ValueError(f"layer input_size {layer.input_size} does not match the "
                                 f"previous layer's output {want}")
        self.layers = tuple(layers)
        self.bidirectional = bidirectional
        self.batch_first = batch_first
        # a layer's second direction, and the one direction of a reverse layer, run backward
        self.kernels = [[_kernel(layer, p, layer.codes[d] if layer.codes else None,
                                 d == 1 or layer.reverse)
                         for d, p in enumerate(layer.directions)] for layer in layers]
        self.precision = layers[0].precision
        if any(l.precision != self.precision for l in layers):
            raise ValueError(f"layers must share one precision, got "
                             f"{[l.precision for l in layers]}")
        self.steps_forward = not any(l.reverse or len(l.directions) > 1 for l in layers)
        self.directions = 2 if bidirectional else 1
        self.input_size = layers[0].input_size
        self.output_size = layers[-1].output_size
        self.hidden_size = layers[-1].hidden_size
        self.entries = sum(len(l.directions) for l in layers)
        self.widths = [(l.output_size, l.hidden_size) for l in layers for _ in l.directions]
        self.uniform_state = all(l.hidden_size == layers[0].hidden_size
                                 and l.output_size == layers[0].output_size for l in layers)
        self._state_floats = sum(o + h for o, h in self.widths)
        # A state the model holds (an ONNX graph's initial_h/initial_c): calls that give
        # none start from it. Per-(layer, direction) read-only arrays; it fixes the batch.
        self.held_state = None
        if initial_state is not None:
            held = self.state_lists(initial_state, self.state_batch(initial_state),
                                    "initial_state", against="initial_state h0")
            self.held_state = tuple([np.array(a, np.float32) for a in part] for part in held)
            for part in self.held_state:
                for arr in part:
                    arr.flags.writeable = False
        self._plans = {}       # (batch, steps, lengths, stepwise, threads) -> _core.Plan
        self._kept = []        # idle runners, most recently used last
        self._kept_lock = threading.Lock()

    # states -----------------------------------------------------------------------------
    def zero_state(self, batch):
        """Zero (h, c) laid out as a call returns them: one (layers*directions, batch, width)
        array each when the layers share sizes, else tuples of (batch, width) arrays. Either
        iterates as the per-(layer, direction) arrays the kernel writes in place."""
        if batch > MAX_INDEX:
            raise ValueError(f"batch_size must be <= {MAX_INDEX} (2**31 - 1), got {batch}")
        check_memory(4 * batch * self._state_floats, f"a state for batch {batch}")
        if self.uniform_state:
            O, H = self.widths[0]
            return (np.zeros((self.entries, batch, O), np.float32),
                    np.zeros((self.entries, batch, H), np.float32))
        return (tuple(np.zeros((batch, o), np.float32) for o, _ in self.widths),
                tuple(np.zeros((batch, h), np.float32) for _, h in self.widths))

    def empty_state(self, batch):
        """Like zero_state, uninitialised: for a run to write."""
        if self.uniform_state:
            O, H = self.widths[0]
            return (np.empty((self.entries, batch, O), np.float32),
                    np.empty((self.entries, batch, H), np.float32))
        return self.zero_state(batch)

    def zero_lists(self, batch):
        hs, cs = self.zero_state(batch)
        return list(hs), list(cs)

    def pack(self, hs, cs):
        """Per-(layer, direction) arrays -> (h, c) in the layout a call returns."""
        if self.uniform_state:
            return np.stack(hs), np.stack(cs)
        return tuple(hs), tuple(cs)

    @staticmethod
    def state_batch(state):
        """The batch of a user state (h0, c0) that nothing else fixes: its first h array's
        (0 when it is malformed, for state_lists to say how)."""
        first = state[0] if isinstance(state, (tuple, list)) and state else None
        try:
            return np.asarray(first[0] if isinstance(first, (tuple, list)) else first).shape[-2]
        except (IndexError, TypeError, ValueError):
            return 0

    def cell_state(self, state, batch, name):
        """Validate a one-cell state (h, c) of (batch, width) arrays, as ``LSTMCell`` takes
        it, into [h], [c]."""
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(f"{name} must be a pair (h, c), got {type(state).__name__}")
        ((O, H),) = self.widths
        h, c = (float_array(v, f"{name} {label}") for v, label in zip(state, "hc"))
        check_shape(h, f"{name} h", (batch, O), "(batch, output_size)")
        check_shape(c, f"{name} c", (batch, H), "(batch, hidden_size)")
        return [h], [c]

    def state_lists(self, state, batch, name, against="x"):
        """Validate a user state (h0, c0) into per-(layer, direction) float32 C-contiguous
        aligned 2-D arrays; ``against`` names what fixes the batch size, for the message."""
        if self.uniform_state and type(state) in (tuple, list) and len(state) == 2:
            h, c = state   # the common case first: the arrays a call returned
            if (type(h) is np.ndarray and type(c) is np.ndarray and h.dtype == np.float32
                    and c.dtype == np.float32 and h.flags.c_contiguous and c.flags.c_contiguous
                    and h.flags.aligned and c.flags.aligned
                    and h.shape == (self.entries, batch, self.widths[0][0])
                    and c.shape == (self.entries, batch, self.widths[0][1])):
                return [h, c]
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(f"{name} must be a pair (h0, c0), got {type(state).__name__}"
                            + (f" of length {len(state)}" if isinstance(state, (tuple, list))
                               else ""))
        n = self.entries
        out = [[], []]
        for which, (label, value) in enumerate(zip(("h0", "c0"), state)):
            if isinstance(value, (tuple, list)) and len(value) == n and not self.uniform_state:
                parts = [float_array(v, f"{name} {label}[{k}]") for k, v in enumerate(value)]
            else:
                arr = float_array(value, f"{name} {label}")
                if arr.ndim != 3:
                    raise ValueError(f"{name} {label} must have 3 dimensions "
                                     f"(layers*directions, batch, features), got shape {arr.shape}")
                if arr.shape[0] != n:
                    raise ValueError(f"{name} {label} has {arr.shape[0]} layers*directions but "
                                     f"the model has {n}")
                if arr.shape[1:] == (batch, self.widths[0][which]) and self.uniform_state:
                    # the common case, checked whole: the kernel reads the stacked array
                    out[which] = arr
                    continue
                parts = list(arr)
            for k, part in enumerate(parts):
                where = f"{name} {label}" if len(parts) == 1 or self.uniform_state else \
                    f"{name} {label}[{k}]"
                width = self.widths[k][which]
                if part.ndim != 2:
                    raise ValueError(f"{where} must be (batch, features), got shape {part.shape}")
                if part.shape[0] != batch:
                    raise ValueError(f"{where} has batch {part.shape[0]} but {against} has "
                                     f"batch {batch}")
                if part.shape[1] != width:
                    raise ValueError(f"{where} has width {part.shape[1]} but the model's "
                                     f"{'output' if which == 0 else 'cell'} size is {width}")
                out[which].append(np.ascontiguousarray(part))
        return out

    def check_x(self, x, name="x"):
        """x as a float32 array laid out as the model takes it, or an error naming ``name``."""
        x = float_array(x, name)
        what = "(batch, time, input_size)" if self.batch_first else "(time, batch, input_size)"
        check_shape(x, name, (None, None, self.input_size), what)
        return x

    # plans and runners ------------------------------------------------------------------
    def plan(self, batch, steps, lengths=False, stepwise=False):
        """The core's plan for a call of this shape on the current thread count (see
        ``_core.plan``), made once per shape and kept (a few dozen shapes at most). Making
        it refuses, before anything is allocated, a call the kernel cannot index (batch or
        time past 2**31 - 1) or whose buffers, outputs and states would not fit in memory."""
        threads = runtime.get_num_threads()
        key = (batch, steps, lengths, stepwise, threads)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        if batch > MAX_INDEX or steps > MAX_INDEX:
            label, n = ("batch", batch) if batch > MAX_INDEX else ("time", steps)
            raise ValueError(f"x has {label} size {n}; fastlstm supports at most "
                             f"{MAX_INDEX} (2**31 - 1)")
        plan = _core.plan(self.kernels, batch, steps, lengths, stepwise, threads)
        out = batch * steps * self.directions * self.output_size
        check_memory(plan.nbytes + 4 * (out + 2 * batch * self._state_floats),
                     f"a call on x with batch {batch} and time {steps} (input projection "
                     f"{plan.projected_rows} x {plan.gates} floats, outputs and layer buffers)")
        if len(self._plans) >= self._KEEP_PLANS:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def _runner(self, plan):
        """A runner for ``plan``: a kept one made for it, else one on kept buffers that fit,
        else a new one."""
        with self._kept_lock:
            for k, runner in enumerate(self._kept):
                if runner.plan is plan:
                    return self._kept.pop(k)
            for k, runner in enumerate(self._kept):
                if runner.workspace.fits(plan):
                    return _core.Runner(self.kernels, plan, self.batch_first,
                                        self._kept.pop(k).workspace)
        return _core.Runner(self.kernels, plan, self.batch_first, _core.Workspace(plan))

    def _keep(self, runner):
        if runner.workspace.nbytes <= self.keep_bytes:
            with self._kept_lock:
                self._kept.append(runner)
                del self._kept[:-self.keep]

    def kept_workspaces(self):
        """The buffers kept for later calls (a list copy; for tests and diagnostics)."""
        with self._kept_lock:
            return [runner.workspace for runner in self._kept]

    def drop_kept(self):
        """Let go of the kept buffers."""
        with self._kept_lock:
            self._kept.clear()

    def run(self, x, h0, c0, lengths, return_sequences, *, stepwise=False, hn=None, cn=None):
        """One call. x: float32 (B, T, I) or (T, B, I) per batch_first, validated; h0, c0:
        per-(layer, direction) arrays or None (zeros); lengths: validated int32 or None.
        ``stepwise`` makes each row's result independent of the batch it shares (streams,
        pools). hn, cn: where the final states go (may be h0, c0); new arrays by default.
        Returns (y, hn, cn) as ``LSTM.__call__`` does: y every step's output, laid out as x,
        or without return_sequences the last layer's final h of each direction side by side,
        (B, D*output_size), zeros for a sequence of length 0."""
        bf = self.batch_first
        B, T = (x.shape[0], x.shape[1]) if bf else (x.shape[1], x.shape[0])
        plan = self.plan(B, T, lengths is not None, stepwise)
        D = self.directions
        if return_sequences:
            shape = (B, T, D * self.output_size) if bf else (T, B, D * self.output_size)
            y = (np.zeros if lengths is not None else np.empty)(shape, np.float32)
        else:
            y = None
        if hn is None:
            hn, cn = self.empty_state(B)   # the run writes every row
        runner = self._runner(plan)
        try:
            runner.run(x, y, h0, c0, hn, cn, lengths)
        finally:
            self._keep(runner)
        if not return_sequences:
            y = np.concatenate(hn[-D:], axis=1)
            if T == 0:
                y[:] = 0
            elif lengths is not None:
                y[lengths == 0] = 0
        return y, hn, cn

    def workspace(self, plan, at_least=None):
        """New scratch buffers for ``plan`` (and any plan they fit), at least as large as
        the workspace ``at_least``."""
        return _core.Workspace(plan, at_least)

    def runner(self, plan, workspace):
        """A runner following ``plan`` on ``workspace`` (which must fit it)."""
        return _core.Runner(self.kernels, plan, self.batch_first, workspace)

    def check_steps_forward(self, who):
        """Refuse, for ``who`` (a stream, a pool), a model that cannot run step by step."""
        if not self.steps_forward:
            raise ValueError(f"{who} needs a unidirectional model: a bidirectional or reverse "
                             f"layer reads the future, so it cannot run step by step")

    def stepper(self, h, c):
        """A one-step runner over the states h, c (per-(layer, direction) arrays of one batch,
        updated in place), for a stream: ``stepper.step(x_t, threads)``."""
        plan = self.plan(h[0].shape[0], 1, stepwise=True)
        runner = self.runner(plan, self.workspace(plan))
        runner.bind_state(h, c)
        return runner
