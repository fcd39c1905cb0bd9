"""Serving many independent streams: ``StreamPool`` steps all streams given input as one batch.

Each stream (one user, one device, one session) is one sequence with its own state. Streams
open and close at any step and may skip steps; a step makes one native call with one time
step over the streams it is given, the kernel reading and writing each stream's state in its
own row of the state slabs (preallocated, indexed by slot). The step buffers and the kernel's
workspace are reused, so a step allocates only its outputs and a few small views.

Thread safety: a pool may be shared by any number of threads. ``open``, ``close``, ``step``
and ``state`` each hold the pool's lock for their whole duration, so calls on one pool are
serialised: every stream sees its steps in the order the calls took the lock, and a stream
closed by one thread is never stepped by another half-way. The native call runs with the GIL
released, so other threads run Python (or other pools and models) while a step computes; for
throughput from several cores, give each thread its own pool (they may share one model).
"""
from __future__ import annotations

import threading
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from ._checks import float_array
from ._engine import gather_rows
from .models import LSTM, LSTMCell
from .runtime import get_num_threads

_MIN_CAPACITY = 8  # slots allocated up front; the slabs double when more streams are open


class StreamPool:
    """Independent streams over one unidirectional model, stepped together.

    ``open(key, state=None)`` starts a stream from zeros or from ``state``, a pair ``(h, c)``
    shaped like the model's own states for a batch of 1 (an LSTM's ``h_n, c_n``, an
    LSTMCell's ``(h, c)``), e.g. what ``close`` returned;
    ``step({key: x_t, ...})`` advances the given streams by one step and returns
    ``{key: y_t}``; ``close(key)`` ends a stream and returns its final ``(h, c)``.
    ``x_t`` is ``(input_size,)`` or ``(1, input_size)``; ``y_t`` is ``(output_size,)`` or
    ``(1, output_size)`` to match. Keys are any hashable values. The slabs grow to the largest
    number of streams open at once and keep that size.
    """

    def __init__(self, lstm: _Stack) -> None:
        if not isinstance(lstm, (LSTM, LSTMCell)):
            raise TypeError(f"StreamPool needs a fastlstm.LSTM or LSTMCell, "
                            f"got {type(lstm).__name__}")
        lstm.engine.check_steps_forward("StreamPool")
        self._model = lstm
        self._engine = lstm.engine
        self._lock = threading.Lock()
        self._slots = {}   # key -> row of the state slabs
        self._free = []    # rows released by close(), reused before new ones
        self._used = 0     # rows ever handed out (the high-water mark)
        self._capacity = 0
        self._grow(_MIN_CAPACITY)

    # storage ----------------------------------------------------------------------------
    def _grow(self, capacity):
        """(Re)allocate the slabs and the step buffers for `capacity` streams."""
        engine = self._engine
        h_new, c_new = engine.zero_lists(capacity)
        if self._capacity:
            for new, old in zip(h_new + c_new, self._h + self._c):
                new[:self._used] = old[:self._used]
        self._h, self._c = h_new, c_new
        self._x = np.empty((capacity, engine.input_size), np.float32)
        # one workspace for every step size up to capacity; a runner per size on it
        self._workspace = engine.workspace(engine.plan(capacity, 1, stepwise=True))
        self._runners = {}
        self._capacity = capacity

    def _take_slot(self):
        if self._free:
            return self._free.pop()
        if self._used == self._capacity:
            self._grow(2 * self._capacity)
        self._used += 1
        return self._used - 1

    def _slot(self, key, caller):
        try:
            slot = self._slots.get(key)
        except TypeError:
            raise TypeError(f"{caller}: key must be hashable, got {type(key).__name__}") from None
        if slot is None:
            raise self._not_open(key, caller)
        return slot

    def _not_open(self, key, caller):
        return ValueError(f"{caller}: stream {key!r} is not open (call open({key!r}) first; "
                          f"{len(self._slots)} streams are open)")

    def _initial_state(self, key, state):
        """A user state for one stream as per-(layer, direction) (1, features) arrays."""
        model = self._model
        name = f"open({key!r}): state"
        if isinstance(model, LSTMCell):   # (batch, features), as cell(x_t, state) takes it
            return self._engine.cell_state(state, 1, name)
        return self._engine.state_lists(state, 1, name, against="a StreamPool stream")

    def _packed_state(self, slot):
        """Copies of one stream's state, shaped as the model's own states for a batch of 1."""
        hs = [h[slot:slot + 1].copy() for h in self._h]
        cs = [c[slot:slot + 1].copy() for c in self._c]
        if isinstance(self._model, LSTMCell):
            return hs[0], cs[0]
        return self._engine.pack(hs, cs)

    def _input_row(self, key, x_t):
        """x_t as a float32 (input_size,) or (1, input_size) array, or an error naming `key`."""
        x_t = float_array(x_t, f"step: x_t for stream {key!r}")
        width = self._model.input_size
        if x_t.shape != (width,) and x_t.shape != (1, width):
            raise ValueError(f"step: x_t for stream {key!r} must have shape (input_size,) = "
                             f"({width},) or (1, {width}), got {x_t.shape}")
        return x_t

    # public API -------------------------------------------------------------------------
    @property
    def model(self) -> _Stack:
        return self._model

    def plan(self, n):
        """How a step of ``n`` streams runs: the core's plan (``fastlstm._core.Plan``), as
        for any call of the same work."""
        return self._engine.plan(n, 1, stepwise=True)

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: object) -> bool:
        try:
            return key in self._slots
        except TypeError:
            return False

    def keys(self) -> list[Hashable]:
        """The keys of the open streams, in the order they were opened (a list copy)."""
        with self._lock:
            return list(self._slots)

    def open(self, key: Hashable, state: Sequence[StateArray] | None = None) -> None:
        """Start stream `key` from zeros or from `state`: (h, c) for a batch of 1, shaped like
        the model's own states (an LSTM's h_n, c_n; an LSTMCell's (h, c))."""
        try:
            hash(key)
        except TypeError:
            raise TypeError(f"open: key must be hashable, got {type(key).__name__}") from None
        if state is not None:
            h0, c0 = self._initial_state(key, state)
        with self._lock:
            if key in self._slots:
                raise ValueError(f"open: stream {key!r} is already open; close({key!r}) it "
                                 f"first to start it over")
            slot = self._take_slot()
            for k, (h, c) in enumerate(zip(self._h, self._c)):
                if state is None:
                    h[slot] = 0.0
                    c[slot] = 0.0
                else:
                    h[slot] = h0[k][0]
                    c[slot] = c0[k][0]
            self._slots[key] = slot

    def close(self, key: Hashable) -> State:
        """End stream `key`; return its final (h, c), shaped as open() takes a state."""
        with self._lock:
            slot = self._slot(key, "close")
            state = self._packed_state(slot)
            del self._slots[key]
            self._free.append(slot)
        return state

    def state(self, key: Hashable) -> State:
        """Copies of stream `key`'s current (h, c), like close() returns, leaving it open."""
        with self._lock:
            return self._packed_state(self._slot(key, "state"))

    def step(self, inputs: Mapping[Hashable, ArrayLike]) -> dict[Hashable, Array]:
        """Advance the streams named in `inputs` ({key: x_t}) by one step, as one batch.

        Streams not named keep their state. If any key or input is invalid, nothing moves.
        """
        if not isinstance(inputs, Mapping):
            raise TypeError(f"step: inputs must be a mapping {{key: x_t}}, "
                            f"got {type(inputs).__name__}")
        n = len(inputs)
        if n == 0:
            return {}
        engine = self._engine
        width = engine.input_size
        with self._lock:
            slots = self._slots
            try:
                rows = np.fromiter(map(slots.__getitem__, inputs), np.int32, n)
            except KeyError:
                unknown = next(key for key in inputs if key not in slots)
                raise self._not_open(unknown, "step") from None
            x = self._x
            matrices = None  # positions of inputs given as (1, input_size)
            done = gather_rows(inputs.values(), x)   # native float32 rows, copied in C
            if done < n:
                for i, (key, x_t) in enumerate(inputs.items()):
                    if i < done:
                        continue
                    x_t = self._input_row(key, x_t)
                    if x_t.ndim == 2:
                        matrices = (matrices or []) + [i]
                        x_t = x_t[0]
                    x[i] = x_t
            x_run = x[:n].reshape((n, 1, width) if engine.batch_first else (1, n, width))
            runner = self._runners.get(n)
            threads = get_num_threads()
            if runner is None or runner.plan.threads != threads:
                # stepwise: a row's result does not depend on the other streams in the batch
                plan = engine.plan(n, 1, stepwise=True)
                if not self._workspace.fits(plan):
                    # reduced precision: buffers per thread when a step is cut by blocks, so
                    # a smaller step or more threads may need more
                    self._workspace = engine.workspace(plan, at_least=self._workspace)
                    self._runners = {}
                runner = engine.runner(plan, self._workspace)
                self._runners[n] = runner
            y = np.empty(x_run.shape[:2] + (engine.output_size,), np.float32)
            # the kernel reads and writes each stream's state in its row of the slabs
            runner.step_rows(x_run, y, self._h, self._c, rows)
        y = y.reshape(n, -1)
        ys = dict(zip(inputs, y))
        if matrices:
            keys = list(inputs)
            for i in matrices:
                ys[keys[i]] = y[i:i + 1]
        return ys

    def __repr__(self):
        return f"StreamPool({self._model!r}, open streams: {len(self._slots)})"
