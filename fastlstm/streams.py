"""Stateful streaming: a ``Stream`` carries the state of one batch of sequences across calls.

A stream owns its state and a workspace, so ``step`` allocates only the output it returns.
The batch size of a stream is fixed until ``reset(batch_size=...)``; for sequences that start
and stop independently, use ``fastlstm.StreamPool``. A stream may be used from several
threads; calls on one stream are serialised by a lock.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._checks import check_int, check_shape, float_array, lengths_array
from ._typing import Array, ArrayLike, State, StateArray
from .runtime import get_num_threads as _num_threads

if TYPE_CHECKING:
    from .models import LSTM


class Stream:
    def __init__(self, model: LSTM, batch_size: int = 1,
                 state: Sequence[StateArray] | None = None) -> None:
        model.engine.check_steps_forward("stream()")
        self._model = model
        self._engine = model.engine
        self._lock = threading.Lock()
        self._acquire, self._release = self._lock.acquire, self._lock.release
        self._batch = check_int(batch_size, "batch_size", minimum=0)
        self.reset(state=state, batch_size=batch_size)

    @property
    def batch_size(self) -> int:
        return self._batch

    @property
    def plan(self):
        """How its steps run: the core's plan (``fastlstm._core.Plan``), as for any call of
        the same work."""
        return self._stepper.plan

    @property
    def state(self) -> State:
        """Copies of the current (h, c), shaped like the model's h_n, c_n."""
        with self._lock:
            return self._engine.pack([h.copy() for h in self._h], [c.copy() for c in self._c])

    def reset(self, state: Sequence[StateArray] | None = None,
              batch_size: int | None = None) -> None:
        """Start over: zeros (for ``batch_size`` or the current one), or a custom state."""
        engine = self._engine
        if state is None:
            batch = self._batch if batch_size is None else batch_size
            batch = check_int(batch, "batch_size", minimum=0)
            h, c = engine.zero_lists(batch)
        else:
            if batch_size is not None:
                batch_size = check_int(batch_size, "batch_size", minimum=0)
            batch = engine.state_batch(state)
            h, c = engine.state_lists(state, batch, "state", against="state h0")
            if batch_size is not None and batch != batch_size:
                raise ValueError(f"state has batch {batch} but batch_size is {batch_size}")
            h = [a.copy() for a in h]
            c = [a.copy() for a in c]
        stepper = engine.stepper(h, c)   # reads and writes h, c in place
        with self._lock:
            self._batch = h[0].shape[0]
            self._h, self._c = h, c
            self._stepper = stepper
            self._step = stepper.step

    def _wrong_batch(self, got, name):
        return ValueError(
            f"{name} has batch {got} but this stream has batch size {self._batch}; call "
            f"reset(batch_size={got}) to start new sequences, or use fastlstm.StreamPool for "
            f"streams that join and leave")

    def step(self, x_t: ArrayLike) -> Array:
        """One time step: x_t (batch, input_size) -> y_t (batch, output_size)."""
        # the lock's methods and the stepper's step are looked up once (at reset): with the
        # weights streaming past every step, each lookup here is a cache miss or two
        self._acquire()
        try:
            y = self._step(x_t, _num_threads())
        finally:
            self._release()
        if y is not None:
            return y
        # anything but an aligned C-contiguous float32 array of the right shape, or a new
        # thread count
        x_t = float_array(x_t, "x_t")
        check_shape(x_t, "x_t", (None, self._engine.input_size), "(batch, input_size)")
        if x_t.shape[0] != self._batch:
            raise self._wrong_batch(x_t.shape[0], "x_t")
        with self._lock:
            threads = _num_threads()
            if self._stepper.plan.threads != threads:
                self._stepper = self._engine.stepper(self._h, self._c)
                self._step = self._stepper.step
            y = self._step(x_t, threads)
        if y is None:   # float_array's array is one the fast path takes: a bug, not bad input
            raise RuntimeError(f"Stream.step: the kernel did not take x_t as converted "
                               f"({x_t.dtype} {x_t.shape}, C-contiguous "
                               f"{x_t.flags.c_contiguous}, aligned {x_t.flags.aligned}, "
                               f"{threads} threads)")
        return y

    def feed(self, x_chunk: ArrayLike, lengths: ArrayLike | None = None) -> Array:
        """A chunk of steps, laid out like the model's input ((batch, time, input) by default).
        With ``lengths``, sequence b advances only ``lengths[b]`` steps of this chunk."""
        model = self._model
        x = self._engine.check_x(x_chunk, "x_chunk")
        B, T = (x.shape[0], x.shape[1]) if model.batch_first else (x.shape[1], x.shape[0])
        if B != self._batch:
            raise self._wrong_batch(B, "x_chunk")
        if lengths is not None:
            lengths = lengths_array(lengths, B, T)
        with self._lock:
            y, _, _ = self._engine.run(x, self._h, self._c, lengths, True, hn=self._h,
                                       cn=self._c)
        return y

    def __repr__(self):
        return f"Stream({self._model!r}, batch_size={self._batch})"
