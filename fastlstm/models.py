"""The models: ``LSTMCell`` and ``LSTM``. They validate in Python, then make one call into the
native core (``fastlstm._core.run_stack``) that runs every layer and direction without the GIL.

Models are immutable: weights are read-only float32 arrays and every call has scratch buffers
of its own (kept by the model for later calls, never shared by two at once), so one model can
serve any number of threads and any batch size.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _core, runtime
from ._checks import (MAX_INDEX, check_bool, check_int, check_memory, check_shape,
                      float_array, lengths_array)
from ._spec import CellOptions, Layer, check_sizes, init_params, make_layer
from ._typing import Array, ArrayLike, CellState, PathLike, State, StateArray

if TYPE_CHECKING:
    from .streams import Stream

# An activation: a name ("tanh", "hard_sigmoid", ...) or (name, alpha, beta) as fastlstm.activations
# takes them.
Activation = Any


def _kernel(layer, params):
    o = layer.options
    H = layer.hidden_size
    bias = params["bias_ih"].astype(np.float32) + params["bias_hh"]
    bias[H:2 * H] += np.float32(o.forget_bias)
    return _core.CellKernel(
        params["weight_ih"], params["weight_hh"], bias, params.get("weight_hr"),
        params.get("peephole"), gate_act=o.recurrent_activation, cell_act=o.activation,
        out_act=o.output_activation, gate_clip=o.gate_clip, cell_clip=o.cell_clip,
        proj_clip=o.proj_clip, input_forget=o.input_forget)


def _cell_options(hidden_size, kwargs):
    return CellOptions.make(hidden_size, **kwargs)


def _rng(seed):
    if seed is not None and (isinstance(seed, (bool, np.bool_))
                             or not isinstance(seed, (int, np.integer, np.random.Generator,
                                                      np.random.SeedSequence))):
        raise TypeError(f"seed must be None, a non-negative integer or a numpy Generator, "
                        f"got {type(seed).__name__} {seed!r}")
    if isinstance(seed, (int, np.integer)) and seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return np.random.default_rng(seed)


# Bytes per parameter while a new model is built: the float64 draw, its float32 copy, the
# frozen weights and the kernel's packed copy.
_BUILD_BYTES_PER_PARAM = 20


def _check_build_memory(input_size, hidden_size, proj_size, num_layers, directions, peepholes):
    H, O = hidden_size, proj_size or hidden_size
    params = 0
    for k in range(num_layers):
        I = input_size if k == 0 else directions * O
        params += directions * (4 * H * (I + O) + 8 * H + (O * H if proj_size else 0)
                                + (3 * H if peepholes else 0))
    check_memory(params * _BUILD_BYTES_PER_PARAM,
                 f"a model with input_size={input_size}, hidden_size={hidden_size}, "
                 f"num_layers={num_layers} ({params} parameters)")


class _Stack:
    """Shared machinery of LSTM and LSTMCell: layers, kernels, weights and the native call."""

    def _setup(self, layers, bidirectional, batch_first):
        self._layers = tuple(layers)
        self._kernels = [[_kernel(layer, p) for p in layer.directions] for layer in layers]
        self._bidirectional = bidirectional
        self._batch_first = batch_first
        self._workspaces = []   # see _take_workspace
        self._workspaces_lock = threading.Lock()
        for prev, layer in zip(layers, layers[1:]):
            want = prev.output_size * (2 if bidirectional else 1)
            if layer.input_size != want:
                raise ValueError(f"layer input_size {layer.input_size} does not match the "
                                 f"previous layer's output {want}")
        # sizes every call needs, worked out once (a call's own overhead is a few microseconds)
        D = 2 if bidirectional else 1
        self._entries = sum(len(l.directions) for l in layers)
        self._uniform_state = all(l.hidden_size == layers[0].hidden_size
                                  and l.output_size == layers[0].output_size for l in layers)
        self._state_floats = sum(len(l.directions) * (l.output_size + l.hidden_size)
                                 for l in layers)
        widest = max(D * l.output_size for l in layers)
        self._call_sizes = (
            max(4 * l.hidden_size for l in layers),                       # gates
            min(len(layers) - 1, 2) * widest,                             # between layers
            max(4 * l.hidden_size for l in layers) + 3 * max(l.output_size for l in layers)
            + 2 * max(l.hidden_size for l in layers))                     # pre, hs, hs2, cs, hfull

    # sizes -----------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        return self._layers[0].input_size

    @property
    def hidden_size(self) -> int:
        return self._layers[-1].hidden_size

    @property
    def proj_size(self) -> int:
        return self._layers[-1].options.proj_size

    @property
    def output_size(self) -> int:
        return self._layers[-1].output_size

    @property
    def num_directions(self) -> int:
        return 2 if self._bidirectional else 1

    # states -------------------------------------------------------------------------
    def _zero_state(self, batch):
        """Zero (h, c) laid out as a call returns them: one (layers*directions, batch, width)
        array each when the layers share sizes, else tuples of (batch, width) arrays. Either
        iterates as the per-(layer, direction) arrays the kernel writes in place, so a call
        returns what it wrote without stacking a copy."""
        if batch > MAX_INDEX:
            raise ValueError(f"batch_size must be <= {MAX_INDEX} (2**31 - 1), got {batch}")
        check_memory(4 * batch * self._state_floats, f"a state for batch {batch}")
        if self._uniform_state:
            first = self._layers[0]
            return (np.zeros((self._entries, batch, first.output_size), np.float32),
                    np.zeros((self._entries, batch, first.hidden_size), np.float32))
        return (tuple(np.zeros((batch, l.output_size), np.float32)
                      for l in self._layers for _ in l.directions),
                tuple(np.zeros((batch, l.hidden_size), np.float32)
                      for l in self._layers for _ in l.directions))

    def _zero_lists(self, batch):
        hs, cs = self._zero_state(batch)
        return list(hs), list(cs)

    def _pack(self, hs, cs):
        if self._uniform_state:
            return np.stack(hs), np.stack(cs)
        return tuple(hs), tuple(cs)

    def _state_lists(self, state, batch, name, against="x"):
        """Validate a user state (h0, c0) into per-(layer, direction) float32 2-D arrays;
        `against` names what fixes the batch size, for the message."""
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(f"{name} must be a pair (h0, c0), got {type(state).__name__}"
                            + (f" of length {len(state)}" if isinstance(state, (tuple, list))
                               else ""))
        entries = [(l.output_size, l.hidden_size) for l in self._layers for _ in l.directions]
        n = len(entries)
        out = ([], [])
        for which, (label, value) in enumerate(zip(("h0", "c0"), state)):
            width_of = lambda k: entries[k][which]
            if isinstance(value, (tuple, list)) and len(value) == n and not self._uniform_state:
                parts = [float_array(v, f"{name} {label}[{k}]") for k, v in enumerate(value)]
            else:
                arr = float_array(value, f"{name} {label}")
                if arr.ndim != 3:
                    raise ValueError(f"{name} {label} must have 3 dimensions "
                                     f"(layers*directions, batch, features), got shape {arr.shape}")
                if arr.shape[0] != n:
                    raise ValueError(f"{name} {label} has {arr.shape[0]} layers*directions but "
                                     f"the model has {n}")
                parts = list(arr)
            for k, part in enumerate(parts):
                where = f"{name} {label}" if len(parts) == 1 or self._uniform_state else \
                    f"{name} {label}[{k}]"
                if part.ndim != 2:
                    raise ValueError(f"{where} must be (batch, features), got shape {part.shape}")
                if part.shape[0] != batch:
                    raise ValueError(f"{where} has batch {part.shape[0]} but {against} has "
                                     f"batch {batch}")
                if part.shape[1] != width_of(k):
                    raise ValueError(f"{where} has width {part.shape[1]} but the model's "
                                     f"{'output' if which == 0 else 'cell'} size is {width_of(k)}")
                out[which].append(np.ascontiguousarray(part))
        return out

    # running --------------------------------------------------------------------------
    def _run(self, x, h0, c0, lengths, return_sequences, workspace=None, hn=None, cn=None,
             stepwise=False):
        """x: float32 (B, T, I) or (T, B, I) per batch_first, validated. ``stepwise`` makes
        each row's result independent of the batch it shares (streams, pools)."""
        bf = self._batch_first
        B, T = (x.shape[0], x.shape[1]) if bf else (x.shape[1], x.shape[0])
        if workspace is None:
            self._check_call_size(B, T, return_sequences)
        order = gx_start = None
        if lengths is not None:
            order = np.argsort(-lengths, kind="stable").astype(np.int32)
            if not stepwise and not _core.projects_by_step(B):
                # only the valid rows are projected, packed sequence after sequence
                gx_start = np.zeros(B, np.int64)
                np.cumsum(lengths[:-1], out=gx_start[1:])
        D = self.num_directions
        if return_sequences:
            shape = (B, T, D * self.output_size) if bf else (T, B, D * self.output_size)
            y = (np.zeros if lengths is not None else np.empty)(shape, np.float32)
        else:
            y = None
        if hn is None:
            hn, cn = self._zero_state(B)
        own = workspace is None
        if own:
            workspace = self._take_workspace(B * T, B, gx_start is not None)
        try:
            _core.run_stack(self._kernels, x, bf, h0, c0, list(hn), list(cn), lengths, order,
                            y, workspace, runtime.get_num_threads(), stepwise, gx_start)
        finally:
            if own:
                self._keep_workspace(workspace)
        if not return_sequences:
            y = np.concatenate(hn[-D:], axis=1)
            if T == 0:
                y[:] = 0
            elif lengths is not None:
                y[lengths == 0] = 0
        return y, hn, cn

    # A call's scratch buffers come from a small free list on the model: allocating them
    # took 8 of a one-step call's 33 us (measured: B=1, T=1, hidden 256). A call takes a kept
    # set that fits, or allocates one, and gives it back after the call, so concurrent calls
    # each have their own. At most _KEEP_WORKSPACES sets are kept, each at most
    # _KEEP_WORKSPACE_BYTES, so a model holds little memory after one huge call.
    _KEEP_WORKSPACES = 2
    _KEEP_WORKSPACE_BYTES = 32 << 20

    def _take_workspace(self, rows, batch, compact):
        with self._workspaces_lock:
            for k, ws in enumerate(self._workspaces):
                if ws.fits(self._kernels, rows, batch, compact):
                    return self._workspaces.pop(k)
        return _core.Workspace(self._kernels, rows, batch, compact=compact)

    def _keep_workspace(self, ws):
        if ws.nbytes <= self._KEEP_WORKSPACE_BYTES:
            with self._workspaces_lock:
                if len(self._workspaces) < self._KEEP_WORKSPACES:
                    self._workspaces.append(ws)

    # pickling -------------------------------------------------------------------------
    # By value and compact: sizes, options and each weight's raw float32 bytes. The pickle
    # names no callable but the model's class (pickle's NEWOBJ), and unpickling validates
    # every weight as a loader does, then rebuilds the kernels.
    _PICKLE_FORMAT = 1

    def __getstate__(self):
        return {
            "format": self._PICKLE_FORMAT,
            "bidirectional": self._bidirectional,
            "batch_first": self._batch_first,
            "layers": [{
                "input_size": layer.input_size,
                "hidden_size": layer.hidden_size,
                "options": layer.options.to_dict(),
                "directions": [{name: (arr.shape, arr.astype("<f4", copy=False).tobytes())
                                for name, arr in params.items()}
                               for params in layer.directions],
            } for layer in self._layers],
        }

    def __setstate__(self, state):
        if not isinstance(state, dict) or state.get("format") != self._PICKLE_FORMAT:
            raise ValueError(f"cannot unpickle {type(self).__name__}: unknown format "
                             f"{state.get('format') if isinstance(state, dict) else state!r}")
        layers = []
        for k, entry in enumerate(state["layers"]):
            input_size, hidden = check_sizes(entry["input_size"], entry["hidden_size"])
            directions = [{name: np.frombuffer(data, "<f4").reshape(shape)
                           for name, (shape, data) in params.items()}
                          for params in entry["directions"]]
            layers.append(make_layer(input_size, hidden,
                                     CellOptions.from_dict(entry["options"], hidden),
                                     directions, where=f"pickled layer {k}"))
        self._setup(layers, check_bool(state["bidirectional"], "bidirectional"),
                    check_bool(state["batch_first"], "batch_first"))

    def _check_call_size(self, B, T, return_sequences):
        """Refuse, before anything is allocated, a call the kernel cannot index (batch or time
        past 2**31 - 1) or whose buffers would not fit in memory."""
        for label, n in (("batch", B), ("time", T)):
            if n > MAX_INDEX:
                raise ValueError(f"x has {label} size {n}; fastlstm supports at most "
                                 f"{MAX_INDEX} (2**31 - 1)")
        rows = B * T
        projected = B if _core.projects_by_step(B) else rows   # rows of the input projection
        gates, between, per_sequence = self._call_sizes
        out = self.num_directions * self.output_size if return_sequences else 0
        check_memory(4 * (projected * gates + rows * (between + out) + B * per_sequence),
                     f"a call on x with batch {B} and time {T} (input projection "
                     f"{projected} x {gates} floats, outputs and layer buffers)")

    # weights --------------------------------------------------------------------------
    def _weight_items(self, layer_suffix):
        for k, layer in enumerate(self._layers):
            for d, params in enumerate(layer.directions):
                suffix = (f"_l{k}" if layer_suffix else "") + ("_reverse" if d else "")
                for name, arr in params.items():
                    yield name + suffix, arr


class LSTMCell(_Stack):
    """One LSTM cell: ``y, (h, c) = cell(x_t, state)`` with x_t of shape (batch, input_size)."""

    def __init__(self, input_size: int, hidden_size: int, *, proj_size: int = 0, forget_bias: float = 0.0,
                 activation: Activation = "tanh", recurrent_activation: Activation = "sigmoid",
                 output_activation: Activation | None = None, peepholes: bool = False,
                 cell_clip: float | None = None, gate_clip: float | None = None,
                 proj_clip: float | None = None, input_forget: bool = False,
                 seed: int | None = None) -> None:
        input_size, hidden_size = check_sizes(input_size, hidden_size)
        opts = _cell_options(hidden_size, dict(
            proj_size=proj_size, forget_bias=forget_bias, activation=activation,
            recurrent_activation=recurrent_activation, output_activation=output_activation,
            peepholes=peepholes, cell_clip=cell_clip, gate_clip=gate_clip, proj_clip=proj_clip,
            input_forget=input_forget))
        rng = _rng(seed)
        _check_build_memory(input_size, hidden_size, opts.proj_size, 1, 1, opts.peepholes)
        layer = make_layer(input_size, hidden_size, opts,
                           [init_params(rng, input_size, hidden_size, opts)])
        self._setup([layer], False, True)

    @classmethod
    def _from_layer(cls, layer):
        self = cls.__new__(cls)
        self._setup([layer], False, True)
        return self

    @classmethod
    def from_weights(cls, weights: Mapping[str, ArrayLike], *, input_size: int | None = None,
                     hidden_size: int | None = None, **options: Any) -> LSTMCell:
        """A cell from a dict in ``cell.weights``' names (``weight_ih``, ...)."""
        if not hasattr(weights, "keys"):
            raise TypeError(f"weights must be a mapping of names (weight_ih, weight_hh, "
                            f"bias_ih, bias_hh, ...) to arrays, got {type(weights).__name__}")
        w_ih = np.asarray(weights["weight_ih"]) if "weight_ih" in weights else None
        if w_ih is None or w_ih.ndim != 2:
            raise ValueError("weights must hold 'weight_ih' of shape (4*hidden, input)")
        hidden_size = hidden_size or w_ih.shape[0] // 4
        input_size = input_size or w_ih.shape[1]
        input_size, hidden_size = check_sizes(input_size, hidden_size)
        opts = _cell_options(hidden_size, options)
        return cls._from_layer(make_layer(input_size, hidden_size, opts, [dict(weights)]))

    @classmethod
    def from_torch(cls, cell: Any) -> LSTMCell:
        """A cell from a ``torch.nn.LSTMCell`` or its state dict (tensors or NumPy arrays)."""
        from .loaders import torch as torch_loader

        return cls._from_layer(torch_loader.cell_layer(cell))

    @classmethod
    def from_tf1(cls, variables: Mapping[str, ArrayLike], *, forget_bias: float = 1.0,
                 cell_clip: float | None = None, proj_clip: float | None = None,
                 activation: Activation = "tanh") -> LSTMCell:
        """A cell from the variables of a ``tf.compat.v1`` ``BasicLSTMCell`` / ``LSTMCell``;
        see ``fastlstm.loaders.tf1``."""
        from .loaders import tf1

        return cls._from_layer(tf1.cell_layer(variables, forget_bias=forget_bias,
                                              cell_clip=cell_clip, proj_clip=proj_clip,
                                              activation=activation))

    def save(self, path: PathLike) -> None:
        """Write the cell to ``path`` (a documented .npz, see ``fastlstm.io``)."""
        from . import io

        io.save(self, path)

    @property
    def options(self) -> CellOptions:
        return self._layers[0].options

    @property
    def weights(self) -> dict[str, Array]:
        return dict(self._weight_items(layer_suffix=False))

    def zero_state(self, batch_size: int) -> CellState:
        batch_size = check_int(batch_size, "batch_size", minimum=0)
        hs, cs = self._zero_lists(batch_size)
        return hs[0], cs[0]

    def __call__(self, x_t: ArrayLike,
                 state: Sequence[ArrayLike] | None = None) -> tuple[Array, CellState]:
        x = float_array(x_t, "x_t")
        check_shape(x, "x_t", (None, self.input_size), "(batch, input_size)")
        B = x.shape[0]
        if state is None:
            h0 = c0 = [None]
        else:
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise TypeError(f"state must be a pair (h, c), got {type(state).__name__}")
            h = float_array(state[0], "state h")
            c = float_array(state[1], "state c")
            check_shape(h, "state h", (B, self.output_size), "(batch, output_size)")
            check_shape(c, "state c", (B, self.hidden_size), "(batch, hidden_size)")
            h0, c0 = [h], [c]
        y, hn, cn = self._run(x[:, None, :], h0, c0, None, return_sequences=False,
                              stepwise=True)
        return y, (hn[0], cn[0])

    def __repr__(self):
        return (f"LSTMCell({self.input_size}, {self.hidden_size}"
                + (f", proj_size={self.proj_size}" if self.proj_size else "") + ")")


class LSTM(_Stack):
    """A stack of LSTM layers, optionally bidirectional; see the README for the conventions."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *,
                 bidirectional: bool = False, batch_first: bool = True, proj_size: int = 0, forget_bias: float = 0.0,
                 activation: Activation = "tanh", recurrent_activation: Activation = "sigmoid",
                 output_activation: Activation | None = None, peepholes: bool = False,
                 cell_clip: float | None = None, gate_clip: float | None = None,
                 proj_clip: float | None = None, input_forget: bool = False,
                 seed: int | None = None) -> None:
        input_size, hidden_size = check_sizes(input_size, hidden_size)
        num_layers = check_int(num_layers, "num_layers", minimum=1, maximum=1024)
        bidirectional = check_bool(bidirectional, "bidirectional")
        batch_first = check_bool(batch_first, "batch_first")
        opts = _cell_options(hidden_size, dict(
            proj_size=proj_size, forget_bias=forget_bias, activation=activation,
            recurrent_activation=recurrent_activation, output_activation=output_activation,
            peepholes=peepholes, cell_clip=cell_clip, gate_clip=gate_clip, proj_clip=proj_clip,
            input_forget=input_forget))
        rng = _rng(seed)
        D = 2 if bidirectional else 1
        _check_build_memory(input_size, hidden_size, opts.proj_size, num_layers, D,
                            opts.peepholes)
        layers = []
        for k in range(num_layers):
            layer_in = input_size if k == 0 else D * (opts.proj_size or hidden_size)
            dirs = [init_params(rng, layer_in, hidden_size, opts) for _ in range(D)]
            layers.append(make_layer(layer_in, hidden_size, opts, dirs, where=f"layer {k}"))
        self._setup(layers, bidirectional, batch_first)

    @classmethod
    def _from_layers(cls, layers, *, bidirectional, batch_first):
        self = cls.__new__(cls)
        self._setup(list(layers), bidirectional, batch_first)
        return self

    @classmethod
    def from_cells(cls, cells: Sequence[LSTMCell | tuple[LSTMCell, LSTMCell]],
                   bidirectional: bool = False, batch_first: bool = True) -> LSTM:
        """Stack cells into layers; the cells keep their weights.

        Unidirectional: ``[cell_layer0, cell_layer1, ...]``. Bidirectional: one
        ``(forward_cell, backward_cell)`` pair per layer.
        """
        bidirectional = check_bool(bidirectional, "bidirectional")
        batch_first = check_bool(batch_first, "batch_first")
        if not isinstance(cells, (list, tuple)) or not cells:
            raise TypeError(f"cells must be a non-empty list of LSTMCell, got {cells!r}")
        layers = []
        for k, entry in enumerate(cells):
            group = entry if bidirectional else (entry,)
            if bidirectional and (not isinstance(entry, (list, tuple)) or len(entry) != 2):
                raise TypeError(f"cells[{k}] must be a (forward, backward) pair of LSTMCell when "
                                f"bidirectional=True, got {entry!r}")
            for c in group:
                if not isinstance(c, LSTMCell):
                    raise TypeError(f"cells[{k}] must be an LSTMCell, got {type(c).__name__}")
            first = group[0]._layers[0]
            for c in group[1:]:
                other = c._layers[0]
                if (other.input_size, other.hidden_size, other.options) != \
                        (first.input_size, first.hidden_size, first.options):
                    raise ValueError(f"cells[{k}]: forward and backward cells must have the same "
                                     f"sizes and options")
            layers.append(Layer(first.input_size, first.hidden_size, first.options,
                                tuple(c._layers[0].directions[0] for c in group)))
        return cls._from_layers(layers, bidirectional=bidirectional, batch_first=batch_first)

    @classmethod
    def from_torch(cls, module_or_state_dict: Any, **config: Any) -> LSTM:
        """A model from a ``torch.nn.LSTM`` or its state dict; see ``fastlstm.loaders.torch``.

        A state dict (tensors or NumPy arrays) carries no ``batch_first``: pass it (default
        False, as ``nn.LSTM``); layers, directions and ``proj_size`` come from the keys.
        """
        from .loaders import torch as torch_loader

        layers, bidirectional, batch_first = torch_loader.lstm_layers(module_or_state_dict,
                                                                      config)
        return cls._from_layers(layers, bidirectional=bidirectional, batch_first=batch_first)

    @classmethod
    def from_keras(cls, layer_or_path: Any, *, layer: str | None = None,
                   activation: Activation | None = None,
                   recurrent_activation: Activation | None = None) -> LSTM:
        """A model from a Keras 3 LSTM layer, model or saved ``.keras`` / ``.weights.h5`` file.

        ``layer=`` names the layer when there are several; ``activation=`` /
        ``recurrent_activation=`` complete a ``.weights.h5`` file, which has no config.
        Keras repeats the last output at masked steps where ``lengths`` gives zeros:
        ``fastlstm.loaders.keras.repeat_last_output`` converts. See ``fastlstm.loaders.keras``.
        """
        from .loaders import keras as keras_loader

        layers, bidirectional = keras_loader.read(layer_or_path, layer=layer,
                                                  activation=activation,
                                                  recurrent_activation=recurrent_activation)
        return cls._from_layers(layers, bidirectional=bidirectional, batch_first=True)

    @classmethod
    def from_onnx(cls, path_or_model: Any, node: str | Sequence[str] | None = None) -> LSTM:
        """A model from an ONNX ``LSTM`` node; see ``fastlstm.loaders.onnx`` for the layouts."""
        from .loaders import onnx as onnx_loader

        return onnx_loader.load(cls, path_or_model, node=node)

    def save(self, path: PathLike) -> None:
        """Write the model to ``path`` (a documented .npz, see ``fastlstm.io``)."""
        from . import io

        io.save(self, path)

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    @property
    def bidirectional(self) -> bool:
        return self._bidirectional

    @property
    def batch_first(self) -> bool:
        return self._batch_first

    @property
    def layer_options(self) -> tuple[CellOptions, ...]:
        return tuple(l.options for l in self._layers)

    @property
    def weights(self) -> dict[str, Array]:
        return dict(self._weight_items(layer_suffix=True))

    def zero_state(self, batch_size: int) -> State:
        batch_size = check_int(batch_size, "batch_size", minimum=0)
        return self._zero_state(batch_size)

    def _check_x(self, x, name="x"):
        x = float_array(x, name)
        what = "(batch, time, input_size)" if self._batch_first else "(time, batch, input_size)"
        check_shape(x, name, (None, None, self.input_size), what)
        return x

    def __call__(self, x: ArrayLike, initial_state: Sequence[StateArray] | None = None,
                 lengths: ArrayLike | None = None,
                 return_sequences: bool = True) -> tuple[Array, State]:
        x = self._check_x(x)
        B, T = (x.shape[0], x.shape[1]) if self._batch_first else (x.shape[1], x.shape[0])
        return_sequences = check_bool(return_sequences, "return_sequences")
        if initial_state is None:
            h0 = c0 = [None] * self._entries
        else:
            h0, c0 = self._state_lists(initial_state, B, "initial_state")
        if lengths is not None:
            lengths = lengths_array(lengths, B, T)
        y, hn, cn = self._run(x, h0, c0, lengths, return_sequences)
        return y, (hn, cn)

    def stream(self, batch_size: int = 1,
               state: Sequence[StateArray] | None = None) -> Stream:
        """A stateful stream over this model (unidirectional only); see fastlstm.Stream."""
        from .streams import Stream

        return Stream(self, batch_size=batch_size, state=state)

    def __repr__(self):
        return (f"LSTM({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
                + (", bidirectional=True" if self._bidirectional else "")
                + (f", proj_size={self.proj_size}" if self.proj_size else "")
                + f", batch_first={self._batch_first})")
