"""ONNX: one ``LSTM`` node of a ``ModelProto`` or ``.onnx`` file, read with the ``onnx`` package.

What is read: W ``(D, 4H, I)``, R ``(D, 4H, H)``, B ``(D, 8H)`` (input then recurrent
biases), P ``(D, 3H)``, all in ONNX's gate order i, o, f, c (peepholes i, o, f); the
attributes ``direction``, ``hidden_size``, ``clip`` (fastlstm's ``gate_clip``),
``input_forget``, ``activations`` (f, g, h = recurrent_activation, activation,
output_activation) with ``activation_alpha`` / ``activation_beta`` (consumed, as
onnxruntime does, in order by the activations that take them; ONNX's defaults otherwise) and
``layout``. W, R, B, P, initial_h and initial_c must be initializers or ``Constant`` outputs;
``X`` and ``sequence_lens`` are the caller's.

How our call maps to the node (X, Y, Y_h, Y_c as in the ONNX spec, D directions):

- ``layout=0``: the model is time-major (``batch_first=False``); pass X ``(T, B, I)`` as is.
  Our ``y`` is ``(T, B, D*H)``, so ``Y = y.reshape(T, B, D, H).transpose(0, 2, 1, 3)``;
  our ``h_n``, ``c_n`` ``(D, B, H)`` are Y_h, Y_c.
- ``layout=1``: the model is batch-major; pass X ``(B, T, I)``. ``Y = y.reshape(B, T, D, H)``;
  ``Y_h = h_n.transpose(1, 0, 2)`` (same for Y_c).
- ``sequence_lens`` is our ``lengths``: Y is zero past each length, Y_h/Y_c are the states
  at each sequence's last valid step, the reverse direction runs over the valid steps only.
- A sequence of length 0 keeps its initial state in fastlstm (as in PyTorch and TF), while
  onnxruntime returns Y_h = Y_c = 0 for it; the two differ only when that initial state is
  not zero.
- When ``initial_h`` / ``initial_c`` are non-zero initializers the loaded model (an
  ``OnnxLSTM``) uses them whenever the call gives no ``initial_state`` (the missing one of the
  pair being zeros); they fix the batch size, as they do in the ONNX graph, and
  ``lstm.onnx_initial_state`` holds them. All-zero ones are dropped: zeros are the default.
- ``direction="reverse"`` also gives an ``OnnxLSTM``: its one direction runs over each
  sequence's valid steps backwards and stores each output at its own time step.
- One node is one layer: a stacked model exported from PyTorch has one LSTM node per layer.
"""
import numpy as np

from .._checks import check_memory, lengths_array
from .._spec import CellOptions, check_sizes, make_layer
from ..models import LSTM
from ._layouts import reorder_gates

# name: which of (alpha, beta) the activation takes, and ONNX's defaults for them.
_ONNX_ACTIVATIONS = {
    "sigmoid": ("sigmoid", (), ()),
    "tanh": ("tanh", (), ()),
    "relu": ("relu", (), ()),
    "softsign": ("softsign", (), ()),
    "softplus": ("softplus", (), ()),
    "hardsigmoid": ("hard_sigmoid", (0.2,), (0.5,)),
    "leakyrelu": ("leaky_relu", (0.01,), ()),
    "thresholdedrelu": ("thresholded_relu", (1.0,), ()),
    "scaledtanh": ("scaled_tanh", (1.0,), (1.0,)),
    "affine": ("affine", (1.0,), (0.0,)),
    "elu": ("elu", (1.0,), ()),
}
_DEFAULT_ACTIVATIONS = ["Sigmoid", "Tanh", "Tanh"]


def _activation_specs(names, alphas, betas, where):
    """ONNX activation names with their alpha/beta lists -> fastlstm (name, alpha, beta)."""
    alphas, betas = list(alphas), list(betas)
    specs = []
    for name in names:
        key = name.lower()
        if key not in _ONNX_ACTIVATIONS:
            raise ValueError(f"{where}: activation {name!r} is not supported; supported: "
                             f"{sorted(_ONNX_ACTIVATIONS)}")
        ours, alpha_default, beta_default = _ONNX_ACTIVATIONS[key]
        alpha = (alphas.pop(0) if alphas else alpha_default[0]) if alpha_default else 1.0
        beta = (betas.pop(0) if betas else beta_default[0]) if beta_default else 0.0
        specs.append((ours, float(alpha), float(beta)))
    return specs


def _model_proto(path_or_model):
    import onnx  # the one framework this loader needs

    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model
    if isinstance(path_or_model, (bytes, bytearray)):
        try:
            return onnx.load_from_string(bytes(path_or_model))
        except Exception as exc:  # DecodeError and others for foreign bytes
            raise ValueError(f"the bytes given are not a readable ONNX model: {exc}") from None
    try:
        return onnx.load(path_or_model)
    except FileNotFoundError:
        raise ValueError(f"ONNX file {path_or_model!r} does not exist") from None
    except Exception as exc:  # onnx raises DecodeError and others for foreign bytes
        raise ValueError(f"{path_or_model!r} is not a readable ONNX model: {exc}") from None


def _subgraphs(node):
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.g
        yield from attr.graphs


def _lstm_nodes(graph):
    """Every LSTM node, subgraphs (If, Loop, Scan bodies) included, with a display name."""
    for i, node in enumerate(graph.node):
        if node.op_type == "LSTM" and node.domain in ("", "ai.onnx"):
            yield (node.name or f"<unnamed LSTM #{i}>"), node
        for sub in _subgraphs(node):
            yield from _lstm_nodes(sub)


def _constants(model):
    """The TensorProto of every initializer and Constant output, by name (converted to
    arrays only when the LSTM node needs them)."""
    values = {}

    def visit(graph):
        for init in graph.initializer:
            values[init.name] = init
        for node in graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        values[node.output[0]] = attr.t
            for sub in _subgraphs(node):
                visit(sub)

    visit(model.graph)
    return values


def _attributes(node):
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def read(path_or_model, node=None):
    """Read one LSTM node: (layer, direction, batch_first, initial (h0, c0) or None)."""
    model = _model_proto(path_or_model)
    try:
        return _read_node(model, node)
    except (TypeError, AttributeError, KeyError, IndexError, RecursionError,
            UnicodeDecodeError, OverflowError) as exc:
        # attributes or tensors of the wrong type or size: a damaged or crafted model
        raise ValueError(f"the ONNX model's LSTM node is malformed ({type(exc).__name__}: "
                         f"{exc})") from None


def _read_node(model, node):
    found = list(_lstm_nodes(model.graph))
    names = [name for name, _ in found]
    if not found:
        raise ValueError("the ONNX model has no LSTM node")
    if node is None:
        if len(found) > 1:
            raise ValueError(f"the ONNX model has {len(found)} LSTM nodes {names}; "
                             f"choose one with node=...")
        name, lstm = found[0]
    else:
        matches = [f for f in found if f[0] == node]
        if not matches:
            raise ValueError(f"node={node!r} is not an LSTM node of the model; "
                             f"LSTM nodes: {names}")
        name, lstm = matches[0]
    where = f"ONNX LSTM node {name!r}"
    attrs = _attributes(lstm)
    consts = _constants(model)
    inputs = list(lstm.input) + [""] * (8 - len(lstm.input))
    x_name, w_name, r_name, b_name, _, h0_name, c0_name, p_name = inputs[:8]

    def const(input_name, label, required=False):
        if not input_name:
            if required:
                raise ValueError(f"{where} has no {label} input")
            return None
        if input_name not in consts:
            if required:
                raise ValueError(f"{where}: {label} ({input_name!r}) is computed in the graph, "
                                 f"not an initializer or Constant; fastlstm needs its value")
            return None
        from onnx import TensorProto, checker, numpy_helper

        tensor = consts[input_name]
        if tensor.data_location == TensorProto.EXTERNAL:
            # onnx.load(path) has already read the data of a file's tensors; a proto in
            # memory must not make us open files relative to the current directory
            raise ValueError(f"{where}: {label} ({input_name!r}) refers to external data that "
                             f"is not loaded; load the model with onnx.load(path) first")
        count = int(np.prod(list(tensor.dims), dtype=object))
        held = len(tensor.raw_data) if tensor.raw_data else max(
            len(tensor.float_data), len(tensor.double_data), len(tensor.int32_data),
            len(tensor.int64_data), len(tensor.uint64_data), len(tensor.string_data))
        if count < 0 or count > held:
            # every element takes at least one byte: the dims claim more than the tensor holds
            raise ValueError(f"{where}: {label} ({input_name!r}) declares shape "
                             f"{list(tensor.dims)} but holds only {held} values/bytes")
        check_memory(8 * count, f"{where} {label} of shape {list(tensor.dims)}")
        try:
            return np.asarray(numpy_helper.to_array(tensor), dtype=np.float64)
        except (ValueError, TypeError, checker.ValidationError) as exc:
            raise ValueError(f"{where}: {label} ({input_name!r}) is not a readable real "
                             f"tensor of shape {list(tensor.dims)} ({exc})") from None

    W = const(w_name, "W", required=True)
    R = const(r_name, "R", required=True)
    B = const(b_name, "B")
    P = const(p_name, "P")
    if W.ndim != 3 or R.ndim != 3:
        raise ValueError(f"{where}: W must be (directions, 4*hidden, input) and R "
                         f"(directions, 4*hidden, hidden); got {W.shape} and {R.shape}")
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"{where}: unknown direction {direction!r}")
    D = 2 if direction == "bidirectional" else 1
    H = R.shape[2]
    if attrs.get("hidden_size", H) != H or R.shape != (D, 4 * H, H) or W.shape[:2] != (D, 4 * H):
        raise ValueError(f"{where}: hidden_size {attrs.get('hidden_size')}, direction "
                         f"{direction!r} and W {W.shape}, R {R.shape} do not agree")
    I = W.shape[2]
    check_sizes(I, H)
    if B is not None and B.shape != (D, 8 * H):
        raise ValueError(f"{where}: B must have shape {(D, 8 * H)}, got {B.shape}")
    if P is not None and P.shape != (D, 3 * H):
        raise ValueError(f"{where}: P must have shape {(D, 3 * H)}, got {P.shape}")
    layout = attrs.get("layout", 0)
    if layout not in (0, 1):
        raise ValueError(f"{where}: layout must be 0 or 1, got {layout}")
    acts = [a.decode() if isinstance(a, bytes) else a
            for a in attrs.get("activations", _DEFAULT_ACTIVATIONS * D)]
    if len(acts) != 3 * D:
        raise ValueError(f"{where}: expected {3 * D} activations for direction {direction!r}, "
                         f"got {acts}")
    specs = _activation_specs(acts, attrs.get("activation_alpha", []),
                              attrs.get("activation_beta", []), where)
    if D == 2 and specs[:3] != specs[3:]:
        raise ValueError(f"{where}: the two directions use different activations {acts}; "
                         f"fastlstm runs both directions of a layer with one set")
    opts = CellOptions.make(
        H, recurrent_activation=specs[0], activation=specs[1], output_activation=specs[2],
        peepholes=P is not None, gate_clip=attrs.get("clip"),
        input_forget=bool(attrs.get("input_forget", 0)))
    dirs = []
    for d in range(D):
        p = {"weight_ih": reorder_gates(W[d], "onnx", "fastlstm"),
             "weight_hh": reorder_gates(R[d], "onnx", "fastlstm")}
        if B is None:
            p["bias_ih"] = p["bias_hh"] = np.zeros(4 * H)
        else:
            p["bias_ih"] = reorder_gates(B[d, :4 * H], "onnx", "fastlstm")
            p["bias_hh"] = reorder_gates(B[d, 4 * H:], "onnx", "fastlstm")
        if P is not None:
            p["peephole"] = reorder_gates(P[d].reshape(3, H), "iof", "ifo")
        dirs.append(p)
    layer = make_layer(I, H, opts, dirs, where=where)
    h0, c0 = const(h0_name, "initial_h"), const(c0_name, "initial_c")
    # All-zero initial states (what torch.onnx.export writes) are fastlstm's default for any
    # batch size: dropping them frees the model from the batch size baked into the graph.
    h0, c0 = (None if s is not None and not s.any() else s for s in (h0, c0))
    initial = None
    if h0 is not None or c0 is not None:
        batch = (h0 if h0 is not None else c0).shape[1 - layout]
        shape = (D, batch, H)
        if layout == 1:
            h0, c0 = (None if s is None else s.transpose(1, 0, 2) for s in (h0, c0))
        for label, s in (("initial_h", h0), ("initial_c", c0)):
            if s is not None and s.shape != shape:
                raise ValueError(f"{where}: {label} must have shape {shape} (after layout), "
                                 f"got {s.shape}")
        initial = tuple(np.zeros(shape, np.float32) if s is None else
                        np.array(s, np.float32) for s in (h0, c0))
        for s in initial:
            s.flags.writeable = False
    return layer, direction, layout == 1, initial


def load(cls, path_or_model, node=None):
    """Build the model for ``LSTM.from_onnx``: a plain ``cls`` when the node needs nothing
    more, an ``OnnxLSTM`` for a ``reverse`` node or initial states held in the graph."""
    layer, direction, batch_first, initial = read(path_or_model, node=node)
    bidirectional = direction == "bidirectional"
    if direction != "reverse" and initial is None:
        return cls.from_layers([layer], bidirectional=bidirectional, batch_first=batch_first)
    model = OnnxLSTM.__new__(OnnxLSTM)
    model._setup([layer], bidirectional, batch_first)  # (OnnxLSTM is an LSTM)
    model._onnx_reverse = direction == "reverse"
    model._onnx_initial_state = initial
    return model


class OnnxLSTM(LSTM):
    """An ONNX LSTM node that a plain ``LSTM`` cannot express: ``direction="reverse"`` (the
    one layer runs over each sequence's valid steps backwards, its outputs stored at their
    own time steps) and/or ``initial_h`` / ``initial_c`` held in the graph (used when the
    call gives no ``initial_state``). Streaming and saving are refused for such a node."""

    @property
    def onnx_initial_state(self):
        """The node's (initial_h, initial_c) as (D, batch, H) arrays, or None."""
        return self._onnx_initial_state

    @property
    def onnx_reverse(self):
        return self._onnx_reverse

    def __call__(self, x, initial_state=None, lengths=None, return_sequences=True):
        if initial_state is None:
            initial_state = self._onnx_initial_state
        if not self._onnx_reverse:
            return super().__call__(x, initial_state=initial_state, lengths=lengths,
                                    return_sequences=return_sequences)
        x = self.engine.check_x(x)
        bf = self.batch_first
        B, T = (x.shape[0], x.shape[1]) if bf else (x.shape[1], x.shape[0])
        valid = np.full(B, T) if lengths is None else lengths_array(lengths, B, T)
        # source step of every (batch, step): each sequence's valid part reversed in place
        steps = np.arange(T)[None, :]
        src = np.where(steps < valid[:, None], valid[:, None] - 1 - steps, steps)
        rows = np.arange(B)[:, None]
        flip = (lambda a: a[rows, src]) if bf else \
            (lambda a: a.transpose(1, 0, 2)[rows, src].transpose(1, 0, 2))
        y, state = super().__call__(np.ascontiguousarray(flip(x)), initial_state=initial_state,
                                    lengths=lengths, return_sequences=return_sequences)
        if return_sequences:
            y = np.ascontiguousarray(flip(y))
        return y, state

    def stream(self, batch_size=1, state=None):
        raise ValueError("an ONNX LSTM node with direction='reverse' or initial states in the "
                         "graph cannot stream; build a plain LSTM from lstm.weights instead")

    def save(self, path):
        raise ValueError("an ONNX LSTM node with direction='reverse' or initial states in the "
                         "graph cannot be saved as a plain fastlstm model")
