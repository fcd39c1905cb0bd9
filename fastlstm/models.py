"""The models: ``LSTMCell`` and ``LSTM``. They validate in Python, then make one call through
their engine (``fastlstm._engine``) into the native core, which runs every layer and direction
without the GIL.

Models are immutable: weights are read-only float32 arrays and every call has scratch buffers
of its own (kept by the model for later calls, never shared by two at once), so one model can
serve any number of threads and any batch size.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import io
from ._checks import (check_bool, check_int, check_memory, check_shape, float_array,
                      lengths_array)
from ._engine import Engine
from .precision import SECOND_PART, check_precision, quantize_layer, with_codes
from .precision import unpickle_codes as precision_codes
from ._spec import CellOptions, Layer, check_sizes, init_params, make_layer
from ._typing import Array, ArrayLike, CellState, PathLike, State, StateArray

if TYPE_CHECKING:
    from .streams import Stream

# An activation: a name ("tanh", "hard_sigmoid", ...) or (name, alpha, beta) as fastlstm.activations
# takes them.
Activation = Any


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
    """Shared parts of LSTM and LSTMCell: the layer specs, the engine that runs them, pickling
    and weights."""

    def _setup(self, layers, bidirectional, batch_first, initial_state=None):
        self._engine = Engine(tuple(layers), bidirectional, batch_first, initial_state)

    @property
    def engine(self):
        """The model's engine (``fastlstm._engine.Engine``): the interface streams, pools and
        the file formats use. Not needed for ordinary use."""
        return self._engine

    @property
    def layers(self):
        """The model as data: per layer a ``fastlstm._spec.Layer`` (sizes, options and the
        weights of each direction in PyTorch's layout), as the reference takes it."""
        return self._engine.layers

    # sizes -----------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        return self._engine.input_size

    @property
    def hidden_size(self) -> int:
        return self._engine.hidden_size

    @property
    def proj_size(self) -> int:
        return self._engine.layers[-1].options.proj_size

    @property
    def output_size(self) -> int:
        return self._engine.output_size

    @property
    def num_directions(self) -> int:
        return self._engine.directions

    @property
    def precision(self) -> str:
        """The weights' precision: "float32", or "int8" / "bfloat16" (``fastlstm.quantize``)."""
        return self._engine.precision

    @property
    def initial_state(self):
        """The state a call without ``initial_state`` starts from when the model holds one
        (an ONNX graph's ``initial_h``/``initial_c``; it fixes the batch size), as copies
        shaped like ``h_n, c_n``; None when calls start from zeros."""
        held = self._engine.held_state
        return None if held is None else self._engine.pack([a.copy() for a in held[0]],
                                                           [a.copy() for a in held[1]])

    # pickling -------------------------------------------------------------------------
    # By value and compact: sizes, options and each weight's raw float32 bytes. The pickle
    # names no callable but the model's class (pickle's NEWOBJ), and unpickling validates
    # every weight as a loader does, then rebuilds the kernels. Format 2 is format 1 for a
    # model with a reverse layer or a held initial_state, which format-1 readers (fastlstm
    # before those) would silently drop: they refuse 2. Format 3 adds a quantized model's
    # codes, which readers of 1 and 2 would drop. Other models stay format 1.
    _PICKLE_FORMATS = (1, 2, 3)
    _PICKLE_FORMAT_QUANTIZED = 3

    def __getstate__(self):
        raw = lambda arr: (arr.shape, arr.astype("<f4", copy=False).tobytes())
        held = self._engine.held_state
        newer = held is not None or any(layer.reverse for layer in self._engine.layers)
        quantized = self.precision != "float32"
        state = {
            "format": self._PICKLE_FORMAT_QUANTIZED if quantized else 2 if newer else 1,
            "bidirectional": self._engine.bidirectional,
            "batch_first": self._engine.batch_first,
            "layers": [{
                "input_size": layer.input_size,
                "hidden_size": layer.hidden_size,
                "options": layer.options.to_dict(),
                "reverse": layer.reverse,
                "directions": [{name: raw(arr) for name, arr in params.items()}
                               for params in layer.directions],
            } for layer in self._engine.layers],
            "initial_state": None if held is None else [[raw(a) for a in part]
                                                        for part in held],
        }
        if quantized:
            state["precision"] = self.precision
            state["codes"] = [[{name: (c.shape, c.dtype.str, c.tobytes(),
                                       None if s is None else s.astype("<f4").tobytes())
                                for name, (c, s) in coded.items()}
                               for coded in layer.codes] for layer in self._engine.layers]
        return state

    def __setstate__(self, state):
        if not isinstance(state, dict) or state.get("format") not in self._PICKLE_FORMATS:
            raise ValueError(f"cannot unpickle {type(self).__name__}: unknown format "
                             f"{state.get('format') if isinstance(state, dict) else state!r}")
        layers = []
        for k, entry in enumerate(state["layers"]):
            input_size, hidden = check_sizes(entry["input_size"], entry["hidden_size"])
            directions = [{name: np.frombuffer(data, "<f4").reshape(shape)
                           for name, (shape, data) in params.items()}
                          for params in entry["directions"]]
            layer = make_layer(input_size, hidden, CellOptions.from_dict(entry["options"], hidden),
                               directions, where=f"pickled layer {k}",
                               reverse=entry.get("reverse", False))
            if state["format"] == self._PICKLE_FORMAT_QUANTIZED:
                layer = self._unpickle_codes(state, k, layer)
            layers.append(layer)
        held = state.get("initial_state")
        if held is not None:
            held = tuple([np.frombuffer(data, "<f4").reshape(shape) for shape, data in part]
                         for part in held)
        self._setup(layers, check_bool(state["bidirectional"], "bidirectional"),
                    check_bool(state["batch_first"], "batch_first"), held)

    @staticmethod
    def _unpickle_codes(state, k, layer):
        """Layer k of a format-3 state with its codes, each checked as a file's are."""
        precision = state.get("precision")
        if precision not in ("int8", "bfloat16"):
            raise ValueError(f"pickled precision must be 'int8' or 'bfloat16' in format 3, "
                             f"got {precision!r}")
        where = f"pickled layer {k}"
        coded_layers = state.get("codes")
        if not isinstance(coded_layers, list) or len(coded_layers) != len(state["layers"]) \
                or not isinstance(coded_layers[k], list) \
                or len(coded_layers[k]) != len(layer.directions) \
                or not all(isinstance(c, dict) for c in coded_layers[k]):
            raise ValueError(f"{where}: its codes must be a list of one dict per direction")
        shapes = layer.expected_shapes()
        try:
            codes = [{name: precision_codes(precision, name,
                                            shapes.get(SECOND_PART.get(name, name)), raw, where)
                      for name, raw in coded.items()} for coded in coded_layers[k]]
        except (TypeError, IndexError, KeyError) as exc:
            raise ValueError(f"{where}: malformed codes ({exc})") from None
        return with_codes(layer, precision, codes)

    # weights --------------------------------------------------------------------------
    def _weight_items(self, layer_suffix):
        for k, layer in enumerate(self._engine.layers):
            for d, params in enumerate(layer.directions):
                suffix = (f"_l{k}" if layer_suffix else "") + ("_reverse" if d else "")
                for name, arr in params.items():
                    yield name + suffix, arr


class LSTMCell(_Stack):
    """One LSTM cell: ``y, (h, c) = cell(x_t, state)`` with x_t of shape (batch, input_size)."""
    file_kind = "LSTMCell"   # what fastlstm.io writes it as

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
    def from_layer(cls, layer):
        """A cell from one layer spec (``fastlstm._spec.Layer``) of one direction."""
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
        return cls.from_layer(make_layer(input_size, hidden_size, opts, [dict(weights)]))

    @classmethod
    def from_torch(cls, source, *, module=None, prefix=None, trust_pickle=False):
        """A cell from a ``torch.nn.LSTMCell``: the cell, a module holding it (``module=`` its
        dotted name), a state dict, a ``.pt``/``.pth``/``.bin``/``.safetensors`` file or
        TorchScript; the same sources as ``LSTM.from_torch`` (see ``fastlstm.loaders.torch``)."""
        from .loaders import torch as torch_loader

        return cls.from_layer(torch_loader.cell_layer(source, module=module, prefix=prefix,
                                                      trust_pickle=trust_pickle))

    @classmethod
    def from_tf1(cls, variables: Mapping[str, ArrayLike], *, forget_bias: float = 1.0,
                 cell_clip: float | None = None, proj_clip: float | None = None,
                 activation: Activation = "tanh") -> LSTMCell:
        """A cell from the variables of a ``tf.compat.v1`` ``BasicLSTMCell`` / ``LSTMCell``;
        see ``fastlstm.loaders.tf1``."""
        from .loaders import tf1

        return cls.from_layer(tf1.cell_layer(variables, forget_bias=forget_bias,
                                             cell_clip=cell_clip, proj_clip=proj_clip,
                                             activation=activation))

    def save(self, path: PathLike) -> None:
        """Write the cell to ``path`` (a documented .npz, see ``fastlstm.io``)."""
        io.save(self, path)

    @property
    def options(self) -> CellOptions:
        return self._engine.layers[0].options

    @property
    def weights(self) -> dict[str, Array]:
        return dict(self._weight_items(layer_suffix=False))

    def zero_state(self, batch_size: int) -> CellState:
        batch_size = check_int(batch_size, "batch_size", minimum=0)
        hs, cs = self._engine.zero_lists(batch_size)
        return hs[0], cs[0]

    def __call__(self, x_t: ArrayLike,
                 state: Sequence[ArrayLike] | None = None) -> tuple[Array, CellState]:
        x = float_array(x_t, "x_t")
        check_shape(x, "x_t", (None, self.input_size), "(batch, input_size)")
        B = x.shape[0]
        if state is None:
            h0 = c0 = [None]
        else:
            h0, c0 = self._engine.cell_state(state, B, "state")
        y, hn, cn = self._engine.run(x[:, None, :], h0, c0, None, return_sequences=False,
                                     stepwise=True)
        return y, (hn[0], cn[0])

    def __repr__(self):
        return (f"LSTMCell({self.input_size}, {self.hidden_size}"
                + (f", proj_size={self.proj_size}" if self.proj_size else "")
                + (f", precision={self.precision!r}" if self.precision != "float32" else "") + ")")


class LSTM(_Stack):
    """A stack of LSTM layers, optionally bidirectional; see the README for the conventions."""
    file_kind = "LSTM"       # what fastlstm.io writes it as

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
    def from_layers(cls, layers, *, bidirectional=False, batch_first=True, initial_state=None):
        """A model from layer specs (``fastlstm._spec.Layer``, what the loaders and
        ``fastlstm.io`` produce); see ``LSTM.layers``. ``initial_state``: a state the model
        holds, for calls that give none (see ``LSTM.initial_state``)."""
        self = cls.__new__(cls)
        self._setup(list(layers), bidirectional, batch_first, initial_state)
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
            first = group[0].layers[0]
            for c in group[1:]:
                other = c.layers[0]
                if (other.input_size, other.hidden_size, other.options) != \
                        (first.input_size, first.hidden_size, first.options):
                    raise ValueError(f"cells[{k}]: forward and backward cells must have the same "
                                     f"sizes and options")
            layers.append(Layer(first.input_size, first.hidden_size, first.options,
                                tuple(c.layers[0].directions[0] for c in group),
                                precision=first.precision,
                                codes=tuple(c.layers[0].codes[0] for c in group)
                                if first.codes else ()))
        precisions = [c.precision for e in cells for c in (e if bidirectional else (e,))]
        if len(set(precisions)) > 1:
            raise ValueError(f"cells must share one precision (fastlstm.quantize), got "
                             f"{precisions}")
        return cls.from_layers(layers, bidirectional=bidirectional, batch_first=batch_first)

    @classmethod
    def from_torch(cls, source, *, module=None, prefix=None, batch_first=None,
                   trust_pickle=False, **config):
        """A model from a ``torch.nn.LSTM``; see ``fastlstm.loaders.torch``.

        ``source``: the ``nn.LSTM``; any module holding LSTMs (``module="encoder.rnn"`` picks
        one by dotted name, needed when there are several); a state dict; a ``.pt`` / ``.pth``
        / ``.bin`` state-dict file; a TorchScript file or module; a ``.safetensors`` file.
        ``batch_first``: a module's own wins (giving another is an error); a state dict or
        file has none, so it defaults to False, as ``nn.LSTM``. ``trust_pickle=True`` allows
        a file holding a pickled module (unpickling runs code). Sizes given in ``config``
        (``hidden_size=``, ...) are checked against the weights.
        """
        from .loaders import torch as torch_loader

        config.update(module=module, prefix=prefix, batch_first=batch_first,
                      trust_pickle=trust_pickle)
        layers, bidirectional, batch_first = torch_loader.lstm_layers(source, config)
        return cls.from_layers(layers, bidirectional=bidirectional, batch_first=batch_first)

    @classmethod
    def from_keras(cls, layer_or_path: Any, *, layer: str | None = None,
                   activation: Activation | None = None,
                   recurrent_activation: Activation | None = None) -> LSTM:
        """A model from a Keras LSTM: a Keras 3 or Keras 2 (``tf_keras``) ``LSTM``,
        ``RNN(LSTMCell)``, ``RNN(StackedRNNCells)``, ``Bidirectional`` or ``CuDNNLSTM`` layer or
        a model holding one; a ``.keras``, ``.weights.h5`` or legacy ``.h5`` file (full model or
        weights); a Keras 2 SavedModel directory (needs TensorFlow).

        ``layer=`` names the layer when there are several; ``activation=`` /
        ``recurrent_activation=`` complete a weights-only file, which has no config.
        Keras repeats the last output at masked steps where ``lengths`` gives zeros:
        ``fastlstm.loaders.keras.repeat_last_output`` converts. See ``fastlstm.loaders.keras``.
        """
        from .loaders import keras as keras_loader

        layers, bidirectional, batch_first = keras_loader.read(
            layer_or_path, layer=layer, activation=activation,
            recurrent_activation=recurrent_activation)
        return cls.from_layers(layers, bidirectional=bidirectional, batch_first=batch_first)

    @classmethod
    def from_onnx(cls, source, *, node=None):
        """A model from an ONNX model's ``LSTM`` node, or a chain of them (one per layer, as
        exporters write stacks): ``node`` is a name, a list of names, or None (the one node,
        or the one chain all nodes form). A ``ModelProto``, bytes or a ``.onnx`` path (external
        data is read from its folder). See ``fastlstm.loaders.onnx`` for the layouts."""
        from .loaders import onnx as onnx_loader

        spec = onnx_loader.read(source, node=node)
        return cls.from_layers(spec.layers, bidirectional=spec.bidirectional,
                               batch_first=spec.batch_first, initial_state=spec.initial_state)

    @classmethod
    def from_tf1_checkpoint(cls, path, *, scope=None, forget_bias=1.0, **options):
        """A model from a ``tf.compat.v1`` Saver checkpoint (prefix, ``.index`` file or folder
        with a ``checkpoint`` file): the LSTM cells under ``scope`` (``MultiRNNCell`` layers
        in order, ``bidirectional_dynamic_rnn`` fw/bw) as one stack that gives
        ``dynamic_rnn``'s outputs. ``options``: ``cell_clip``, ``proj_clip``, ``activation``,
        which a checkpoint does not record. Needs TensorFlow; see ``fastlstm.loaders.tf1``."""
        from .loaders import tf1

        layers, bidirectional = tf1.checkpoint_layers(path, scope=scope,
                                                      forget_bias=forget_bias, **options)
        return cls.from_layers(layers, bidirectional=bidirectional, batch_first=True)

    def save(self, path: PathLike) -> None:
        """Write the model to ``path`` (a documented .npz, see ``fastlstm.io``)."""
        io.save(self, path)

    @property
    def num_layers(self) -> int:
        return len(self._engine.layers)

    @property
    def bidirectional(self) -> bool:
        return self._engine.bidirectional

    @property
    def batch_first(self) -> bool:
        return self._engine.batch_first

    @property
    def layer_options(self) -> tuple[CellOptions, ...]:
        return tuple(l.options for l in self._engine.layers)

    @property
    def weights(self) -> dict[str, Array]:
        return dict(self._weight_items(layer_suffix=True))

    def zero_state(self, batch_size: int) -> State:
        batch_size = check_int(batch_size, "batch_size", minimum=0)
        return self._engine.zero_state(batch_size)

    def __call__(self, x: ArrayLike, initial_state: Sequence[StateArray] | None = None,
                 lengths: ArrayLike | None = None,
                 return_sequences: bool = True) -> tuple[Array, State]:
        x = self._engine.check_x(x)
        B, T = (x.shape[0], x.shape[1]) if self.batch_first else (x.shape[1], x.shape[0])
        return_sequences = check_bool(return_sequences, "return_sequences")
        if initial_state is not None:
            h0, c0 = self._engine.state_lists(initial_state, B, "initial_state")
        elif self._engine.held_state is None:
            h0 = c0 = [None] * self._engine.entries
        else:
            h0, c0 = self._engine.held_state
            if h0[0].shape[0] != B:
                raise ValueError(f"x has batch {B} but the model's initial state (held in the "
                                 f"model it was loaded from) has batch {h0[0].shape[0]}; pass "
                                 f"initial_state=... for another batch")
        if lengths is not None:
            lengths = lengths_array(lengths, B, T)
        y, hn, cn = self._engine.run(x, h0, c0, lengths, return_sequences)
        return y, (hn, cn)

    def stream(self, batch_size: int = 1,
               state: Sequence[StateArray] | None = None) -> Stream:
        """A stateful stream over this model (forward layers only); see fastlstm.Stream.
        It starts from ``state``, or zeros (pass ``state=lstm.initial_state`` to start from a
        state the model holds)."""
        from .streams import Stream

        return Stream(self, batch_size=batch_size, state=state)

    def __repr__(self):
        return (f"LSTM({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
                + (", bidirectional=True" if self.bidirectional else "")
                + (", reverse=True" if any(l.reverse for l in self.layers) else "")
                + (f", proj_size={self.proj_size}" if self.proj_size else "")
                + f", batch_first={self.batch_first}"
                + (f", precision={self.precision!r}" if self.precision != "float32" else "") + ")")


def load(path: PathLike) -> LSTM | LSTMCell:
    """Read a model written by ``model.save``: an LSTM or an LSTMCell, as it was saved (the
    file format is ``fastlstm.io``'s; loading never executes code)."""
    parts = io.read(path)
    if parts["kind"] == "LSTMCell":
        return LSTMCell.from_layer(parts["layers"][0])
    return LSTM.from_layers(parts["layers"], bidirectional=parts["bidirectional"],
                            batch_first=parts["batch_first"], initial_state=parts["initial_state"])


def quantize(model: LSTM | LSTMCell, precision: str) -> LSTM | LSTMCell:
    """A copy of ``model`` (LSTM or LSTMCell) whose weights are in ``precision``: "int8",
    "bfloat16", or "float32" (a float32 copy; of a quantized model, the values its codes stand
    for). Same class, same API; see ``fastlstm.precision`` for what is quantized and how."""
    if not isinstance(model, (LSTM, LSTMCell)):
        raise TypeError(f"model must be a fastlstm LSTM or LSTMCell, got {type(model).__name__}")
    check_precision(precision)
    layers = [quantize_layer(layer, precision) for layer in model.layers]
    if isinstance(model, LSTMCell):
        return LSTMCell.from_layer(layers[0])
    return LSTM.from_layers(layers, bidirectional=model.bidirectional,
                            batch_first=model.batch_first, initial_state=model.initial_state)
