"""ONNX: an ``LSTM`` node, or a chain of them, of a ``ModelProto``, bytes or ``.onnx`` file,
read with the ``onnx`` package.

What is read per node: W ``(D, 4H, I)``, R ``(D, 4H, H)``, B ``(D, 8H)`` (input then recurrent
biases), P ``(D, 3H)``, all in ONNX's gate order i, o, f, c (peepholes i, o, f); the
attributes ``direction``, ``hidden_size``, ``clip`` (fastlstm's ``gate_clip``),
``input_forget``, ``activations`` (f, g, h = recurrent_activation, activation,
output_activation) with ``activation_alpha`` / ``activation_beta`` (consumed, as
onnxruntime does, in order by the activations that take them; ONNX's defaults otherwise) and
``layout``. ``X`` and ``sequence_lens`` are the caller's.

Where the values come from:

- W, R, B, P, initial_h and initial_c are initializers, ``Constant`` outputs, or computed
  from them (old exporters reorder gate blocks with Slice/Concat and add the direction axis
  with Unsqueeze): such a cone of constant-only ops is folded by onnx's reference evaluator
  (``onnx.reference.ReferenceEvaluator``) on a small graph of just that cone, after shape
  inference has bounded every intermediate's size; only the ops in ``_FOLDABLE_OPS`` are
  folded. An initial state computed from the graph's inputs (torch's exporter writes zeros
  expanded to the input's batch) is the caller's ``initial_state``; W and R must be constant.
- Nodes inside ``If``/``Loop``/``Scan`` subgraphs are found and named by their path:
  ``<If node>/<attribute>/<LSTM node>``, e.g. ``"If_0/then_branch/LSTM_1"`` (an unnamed node
  is ``<op #index>``); they may read their parents' initializers.
- A file's external data is read from the file's folder, and only for the tensors of the
  chosen nodes (``onnx.external_data_helper``, which refuses locations outside the folder).
  A ``ModelProto`` given in memory must have its external data loaded already
  (``onnx.load(path)`` does that for every tensor).

Chains: exporters write a stacked (bidirectional) LSTM as one node per layer, node k's Y
going to node k+1's X through layout ops (torch: Transpose + Reshape, or Squeeze). Node B
follows node A when A's Y reaches B's X only through ``_LAYOUT_OPS`` and running those ops
(reference evaluator, on a Y of distinct values) gives exactly the stacked layer's input:
``Y (T, D, B, H) -> (T, B, D*H)`` for layout 0, ``(B, T, D, H) -> (B, T, D*H)`` for layout 1.
The nodes of a chain must share direction, layout and ``sequence_lens``; its Y_h/Y_c are the
nodes' concatenated, as exporters concatenate them.

How our call maps to a node (X, Y, Y_h, Y_c as in the ONNX spec, D directions):

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
- When ``initial_h`` / ``initial_c`` are non-zero constants the loaded model holds them
  (``lstm.initial_state``) and starts every call that gives no ``initial_state`` from them
  (the missing ones being zeros); they fix the batch size, as they do in the ONNX graph.
  All-zero ones are dropped: zeros are the default.
- ``direction="reverse"`` gives reverse layers (``lstm.layers[k].reverse``): the core runs
  the one direction over each sequence's valid steps backwards and stores each output at its
  own time step.

``read`` turns the chosen node(s) into an ``OnnxSpec`` (layers, directions, layout, initial
state); ``LSTM.from_onnx`` builds the model from it. ``find`` lists the
nodes, chains and the GRU/RNN nodes fastlstm cannot run, for ``fastlstm.inspect``.
"""
import os
from dataclasses import dataclass, replace

import numpy as np

from .._checks import check_memory
from .._spec import CellOptions, check_sizes, make_layer
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


# Ops that only move a stack's outputs around between two LSTM nodes of a chain (exporters
# write Transpose + Reshape for a bidirectional layer's Y, Squeeze for a one-directional one).
_LAYOUT_OPS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten"}
# Ops folded when an LSTM input is computed from constants (old exporters reorder the gate
# blocks of W, R and B with Slice/Concat and add the direction axis with Unsqueeze). Their
# outputs are never larger than their inputs except by broadcasting, which the shape check
# before folding bounds.
_FOLDABLE_OPS = {"Identity", "Cast", "Unsqueeze", "Squeeze", "Reshape", "Transpose", "Slice",
                 "Concat", "Split", "Gather", "Flatten", "Constant", "Add", "Sub", "Mul", "Div",
                 "Neg"}
_MAX_CONE_NODES = 512
_MAX_BRIDGE_NODES = 8
_MAX_FOLDED_ELEMENTS = 1 << 28
_RNN_OPS = ("LSTM", "GRU", "RNN")


@dataclass(frozen=True)
class OnnxSpec:
    """What the model needs from one LSTM node or one chain of them: the layers (one per
    node; ``reverse`` layers for ``direction="reverse"`` nodes), the directions and layout
    they share, and the initial (h0, c0) held in the graph (None when zeros or the
    caller's), which the model keeps as its ``initial_state``."""
    nodes: tuple
    layers: tuple
    bidirectional: bool
    batch_first: bool
    reverse: bool
    initial_state: tuple = None


@dataclass(frozen=True)
class _NodeSpec:
    name: str
    layer: object
    direction: str
    layout: int
    initial: tuple        # (h0, c0) of shape (D, batch, H) or None
    sequence_lens: str    # the input's name, "" when absent

    @property
    def directions(self):
        return 2 if self.direction == "bidirectional" else 1


def _is_op(node, op_types):
    return node.op_type in op_types and node.domain in ("", "ai.onnx")


def _subgraphs(node):
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.name, attr.g
        for k, graph in enumerate(attr.graphs):
            yield f"{attr.name}[{k}]", graph


class _Scope:
    """One graph (the main graph or an If/Loop/Scan body): its producers, consumers,
    constants and inputs; names not found here are looked up in the enclosing graphs."""

    def __init__(self, graph, parent):
        self.graph = graph
        self.parent = parent
        self.producer, self.consumers, self.consts = {}, {}, {}
        self.inputs = {v.name for v in graph.input}
        for init in graph.initializer:
            self.consts[init.name] = init
        for node in graph.node:
            for name in node.output:
                if name:
                    self.producer[name] = node
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
            if _is_op(node, ("Constant",)) and node.output:
                for attr in node.attribute:
                    if attr.name == "value" and attr.HasField("t"):
                        self.consts[node.output[0]] = attr.t

    def lookup(self, name):
        """(kind, what, owning scope) of a tensor name: ("const", TensorProto, scope),
        ("node", producing node, scope) or ("input", None, scope or None when unknown)."""
        scope = self
        while scope is not None:
            if name in scope.consts:
                return "const", scope.consts[name], scope
            if name in scope.producer:
                return "node", scope.producer[name], scope
            if name in scope.inputs:
                return "input", None, scope
            scope = scope.parent
        return "input", None, None

    def static_dims(self, name):
        for value in list(self.graph.input) + list(self.graph.value_info) + \
                list(self.graph.output):
            if value.name == name and value.type.HasField("tensor_type"):
                return [d.dim_value if d.HasField("dim_value") else None
                        for d in value.type.tensor_type.shape.dim]
        return None


class _NotConstant(Exception):
    """An input computed from the graph's inputs (the caller's, not the model's)."""


class _Model:
    """An ONNX model indexed for the loader: every LSTM node (subgraphs included) with its
    path name, the constants, and the chains the nodes form."""

    def __init__(self, proto, base_dir):
        self.proto = proto
        self.base_dir = base_dir
        self.entries = []     # (path name, node, scope) of every LSTM node
        self.others = []      # (path name, op type) of GRU and RNN nodes
        self._specs, self._links, self._unreadable = {}, {}, {}
        self._walk(proto.graph, None, "")

    def _walk(self, graph, parent, prefix):
        scope = _Scope(graph, parent)
        for i, node in enumerate(graph.node):
            name = prefix + (node.name or f"<{node.op_type} #{i}>")
            if _is_op(node, ("LSTM",)):
                self.entries.append((name, node, scope))
            elif _is_op(node, _RNN_OPS):
                self.others.append((name, node.op_type))
            for attr_name, sub in _subgraphs(node):
                self._walk(sub, scope, f"{name}/{attr_name}/")

    @property
    def names(self):
        return [name for name, _, _ in self.entries]

    # tensors ----------------------------------------------------------------------------
    def tensor_array(self, tensor, where, label):
        """A TensorProto's values (its own dtype), external data read from the model's folder."""
        from onnx import TensorProto, checker, external_data_helper, numpy_helper

        if tensor.data_location == TensorProto.EXTERNAL:
            if self.base_dir is None:
                # a proto in memory must not make us open files relative to the current directory
                raise ValueError(f"{where}: {label} refers to external data that is not loaded; "
                                 f"pass the model's path, or load it with onnx.load(path) first")
            # onnx reads at most the bytes the file holds; the dims are checked against them below
            loaded = TensorProto()
            loaded.CopyFrom(tensor)
            try:
                external_data_helper.load_external_data_for_tensor(loaded, self.base_dir)
            except Exception as exc:  # a missing file, a path outside the folder, bad offsets
                raise ValueError(f"{where}: {label}'s external data cannot be read: "
                                 f"{exc}") from None
            tensor = loaded
        count = int(np.prod(list(tensor.dims), dtype=object))
        held = len(tensor.raw_data) if tensor.raw_data else max(
            len(tensor.float_data), len(tensor.double_data), len(tensor.int32_data),
            len(tensor.int64_data), len(tensor.uint64_data), len(tensor.string_data))
        if count < 0 or count > held:
            # every element takes at least one byte: the dims claim more than the tensor holds
            raise ValueError(f"{where}: {label} declares shape {list(tensor.dims)} but holds "
                             f"only {held} values/bytes")
        check_memory(8 * count, f"{where} {label} of shape {list(tensor.dims)}")
        try:
            arr = np.asarray(numpy_helper.to_array(tensor))
        except (ValueError, TypeError, checker.ValidationError) as exc:
            raise ValueError(f"{where}: {label} is not a readable real tensor of shape "
                             f"{list(tensor.dims)} ({exc})") from None
        if arr.dtype.kind not in "fiub":
            raise ValueError(f"{where}: {label} is not a readable real tensor of shape "
                             f"{list(tensor.dims)} (dtype {arr.dtype})")
        return arr

    def value(self, scope, name, where, label):
        """The value of tensor ``name`` as seen from ``scope``: an initializer or Constant, or
        computed from them (folded). Raises _NotConstant when it depends on graph inputs."""
        kind, tensor, _ = scope.lookup(name)
        if kind == "const":
            return self.tensor_array(tensor, where, f"{label} ({name!r})")
        if kind == "input":
            raise _NotConstant(name)
        return self._fold(scope, name, where, label)

    def _fold(self, scope, target, where, label):
        """Evaluate the constant cone of ``target`` with onnx's reference evaluator."""
        from onnx import ValueInfoProto, helper, numpy_helper, shape_inference
        from onnx.reference import ReferenceEvaluator

        order, leaves, seen = [], {}, set()

        def visit(name, from_scope, depth):
            if not name or name in seen:
                return
            seen.add(name)
            kind, found, owner = from_scope.lookup(name)
            if kind == "input":
                raise _NotConstant(name)
            if kind == "const":
                leaves[name] = found
                return
            if len(seen) > _MAX_CONE_NODES or depth > _MAX_CONE_NODES:
                raise ValueError(f"{where}: {label} ({target!r}) is computed by more than "
                                 f"{_MAX_CONE_NODES} nodes; fastlstm folds only small ones")
            for name_in in found.input:
                visit(name_in, owner, depth + 1)
            order.append(found)

        visit(target, scope, 0)
        unsupported = sorted({n.op_type for n in order if not _is_op(n, _FOLDABLE_OPS)})
        if unsupported:
            raise ValueError(f"{where}: {label} ({target!r}) is computed from constants by "
                             f"{unsupported}, which fastlstm does not fold (it folds "
                             f"{sorted(_FOLDABLE_OPS)})")
        inits = [numpy_helper.from_array(self.tensor_array(t, where, f"{label} input {n!r}"), n)
                 for n, t in leaves.items()]
        graph = helper.make_graph(order, "fold", [], [ValueInfoProto(name=target)], inits)
        model = helper.make_model(graph, opset_imports=list(self.proto.opset_import),
                                  ir_version=self.proto.ir_version)
        try:
            inferred = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
            for info in list(inferred.graph.value_info) + list(inferred.graph.output):
                dims = info.type.tensor_type.shape.dim
                if not info.type.tensor_type.HasField("shape") or \
                        any(not d.HasField("dim_value") for d in dims):
                    raise ValueError(f"the shape of {info.name!r} is not known before folding")
                count = int(np.prod([d.dim_value for d in dims], dtype=object))
                if count > _MAX_FOLDED_ELEMENTS:
                    raise ValueError(f"{info.name!r} would have {count} elements")
                check_memory(8 * count, f"{where}: folding {label}")
            result = ReferenceEvaluator(model).run(None, {})[0]
        except (MemoryError, _NotConstant):
            raise
        except Exception as exc:  # onnx's shape inference and evaluator raise many types
            raise ValueError(f"{where}: {label} ({target!r}) is computed from constants but "
                             f"cannot be folded: {type(exc).__name__}: {exc}") from None
        result = np.asarray(result)
        if result.dtype.kind not in "fiub":
            raise ValueError(f"{where}: {label} ({target!r}) folds to a {result.dtype} tensor, "
                             f"not a real one")
        return result

    # nodes ------------------------------------------------------------------------------
    def spec(self, entry):
        name = entry[0]
        if name not in self._specs:
            try:
                self._specs[name] = self._read_node(*entry)
            except (TypeError, AttributeError, KeyError, IndexError, RecursionError,
                    UnicodeDecodeError, OverflowError) as exc:
                # attributes or tensors of the wrong type or size: a damaged or crafted model
                raise ValueError(f"the ONNX model's LSTM node {name!r} is malformed "
                                 f"({type(exc).__name__}: {exc})") from None
        return self._specs[name]

    def _read_node(self, name, lstm, scope):
        from onnx import helper

        where = f"ONNX LSTM node {name!r}"
        attrs = {a.name: helper.get_attribute_value(a) for a in lstm.attribute}
        inputs = list(lstm.input) + [""] * (8 - len(lstm.input))
        _, w_name, r_name, b_name, seq_name, h0_name, c0_name, p_name = inputs[:8]

        def const(input_name, label, required=False):
            """The input's value; None when absent or (not required) computed from the
            graph's inputs, as an initial state given by the caller is."""
            if not input_name:
                if required:
                    raise ValueError(f"{where} has no {label} input")
                return None
            try:
                value = self.value(scope, input_name, where, label)
            except _NotConstant as exc:
                if required:
                    raise ValueError(f"{where}: {label} ({input_name!r}) is computed from the "
                                     f"graph's input {exc.args[0]!r}; fastlstm needs its value "
                                     f"in the model") from None
                return None
            with np.errstate(invalid="ignore"):  # signalling NaNs: refused by make_layer
                value = np.asarray(value, np.float64)
            if np.any(np.abs(value) > np.finfo(np.float32).max):
                raise ValueError(f"{where}: {label} ({input_name!r}) holds values beyond "
                                 f"float32's range")
            return value

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
        if attrs.get("hidden_size", H) != H or R.shape != (D, 4 * H, H) or \
                W.shape[:2] != (D, 4 * H):
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
            raise ValueError(f"{where}: expected {3 * D} activations for direction "
                             f"{direction!r}, got {acts}")
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
        # All-zero initial states (what torch.onnx.export writes) are fastlstm's default for
        # any batch size: dropping them frees the model from the batch size baked into the graph.
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
            initial = tuple(np.zeros(shape) if s is None else s for s in (h0, c0))
        return _NodeSpec(name, layer, direction, layout, initial, seq_name)

    # chains -----------------------------------------------------------------------------
    def _successor(self, entry):
        """(next LSTM entry, bridge nodes) when this node's Y reaches exactly one LSTM
        node's X through layout-only ops of the same graph, else None."""
        name, node, scope = entry
        if not node.output or not node.output[0]:
            return None
        found, frontier = [], [(node.output[0], [])]
        while frontier:
            tensor, path = frontier.pop()
            for consumer in scope.consumers.get(tensor, []):
                if not consumer.input or consumer.input[0] != tensor:
                    continue
                if _is_op(consumer, ("LSTM",)):
                    found.append((consumer, path))
                elif _is_op(consumer, _LAYOUT_OPS) and consumer.output and \
                        len(path) < _MAX_BRIDGE_NODES:
                    frontier.append((consumer.output[0], path + [consumer]))
        if len(found) != 1:
            return None
        target, bridge = found[0]
        following = next((e for e in self.entries if e[1] is target), None)
        return None if following is None else (following, bridge)

    def _bridge_is_a_stack(self, first, second, bridge, scope):
        """Does the bridge turn ``first``'s Y into exactly the input a stacked layer gets
        (layout 0: Y (T, D, B, H) -> (T, B, D*H); layout 1: Y (B, T, D, H) -> (B, T, D*H))?
        Checked by running it on a tensor of distinct values with onnx's reference evaluator."""
        from onnx import TensorProto, ValueInfoProto, helper, numpy_helper
        from onnx.reference import ReferenceEvaluator

        if first.layout != second.layout or \
                second.layer.input_size != first.directions * first.layer.hidden_size:
            return False
        D, H = first.directions, first.layer.hidden_size
        entry = next(e for e in self.entries if e[0] == first.name)
        dims = scope.static_dims(entry[1].input[0]) or []
        T, B = (dims[:2] if first.layout == 0 else dims[1::-1]) if len(dims) == 3 else (3, 2)
        if not (isinstance(T, int) and isinstance(B, int) and 0 < T * B * D * H <= 1 << 20):
            T, B = 3, 2
        shape = (T, D, B, H) if first.layout == 0 else (B, T, D, H)
        ids = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
        want = ids.transpose(0, 2, 1, 3) if first.layout == 0 else ids
        want = want.reshape(want.shape[0], want.shape[1], D * H)
        if not bridge:
            return False  # a 4-D Y cannot be a 3-D X
        y_name = bridge[0].input[0]
        try:
            inits = []
            for node in bridge:
                for name in node.input[1:]:
                    if name:
                        value = self.value(scope, name, f"the ops after {first.name!r}", name)
                        inits.append(numpy_helper.from_array(np.asarray(value), name))
            graph = helper.make_graph(
                bridge, "bridge",
                [helper.make_tensor_value_info(y_name, TensorProto.FLOAT, list(shape))],
                [ValueInfoProto(name=bridge[-1].output[0])], inits)
            model = helper.make_model(graph, opset_imports=list(self.proto.opset_import),
                                      ir_version=self.proto.ir_version)
            got = ReferenceEvaluator(model).run(None, {y_name: ids})[0]
        except Exception:  # not constant, not evaluable: not a stack we can vouch for
            return False
        return np.shape(got) == want.shape and np.array_equal(got, want)

    def _link(self, entry):
        """The name of the node that takes this node's output as a stacked layer does, or
        None; reads the two nodes' weights only."""
        name = entry[0]
        if name not in self._links:
            self._links[name] = None
            following = self._successor(entry)
            if following is not None:
                second, bridge = following
                try:
                    a, b = self.spec(entry), self.spec(second)
                except ValueError as exc:
                    self._unreadable.setdefault(name, str(exc))
                    return None
                if self._bridge_is_a_stack(a, b, bridge, entry[2]):
                    self._links[name] = b.name
        return self._links[name]

    def links(self):
        """{first node name: second node name} for every pair of nodes that a stack makes."""
        return {e[0]: self._link(e) for e in self.entries if self._link(e) is not None}

    def chains(self):
        """Every maximal chain of two or more linked nodes, as lists of names."""
        links = self.links()
        heads = [n for n in links if n not in links.values()]
        chains = []
        for head in heads:
            chain = [head]
            while chain[-1] in links and len(chain) <= len(links):
                chain.append(links[chain[-1]])
            chains.append(chain)
        return chains

    # choosing ---------------------------------------------------------------------------
    def select(self, node):
        """The node specs ``node=`` picks: one node, or a chain of them."""
        names = self.names
        if not self.entries:
            others = f" (it has {[f'{t} {n!r}' for n, t in self.others]}, which fastlstm " \
                     f"does not run)" if self.others else ""
            raise ValueError(f"the ONNX model has no LSTM node{others}")
        if node is None:
            if len(self.entries) == 1:
                return [self.spec(self.entries[0])]
            chains = self.chains()
            if len(chains) == 1 and len(chains[0]) == len(self.entries):
                return [self.spec(self._entry(n)) for n in chains[0]]
            listed = f" and the chains {chains}" if chains else ""
            for entry in self.entries:  # say what is wrong with the nodes that cannot be read
                try:
                    self.spec(entry)
                except ValueError as exc:
                    self._unreadable.setdefault(entry[0], str(exc))
            unreadable = "".join(f"; {m}" for m in dict.fromkeys(self._unreadable.values()))
            raise ValueError(f"the ONNX model has {len(names)} LSTM nodes {names}{listed} that "
                             f"do not form one chain; choose one with node=... (a name or a "
                             f"list of names){unreadable}")
        if isinstance(node, str):
            return [self.spec(self._entry(node))]
        if not isinstance(node, (list, tuple)) or not node or \
                not all(isinstance(n, str) for n in node):
            raise TypeError(f"node must be a node name, a non-empty list of node names or "
                            f"None, got {node!r}")
        specs = [self.spec(self._entry(n)) for n in node]
        for a, b in zip(node, node[1:]):
            if self._link(self._entry(a)) != b:
                raise ValueError(f"node={list(node)!r}: {b!r} does not take {a!r}'s output Y as a "
                                 f"stacked layer does (through layout-only ops); chains in the "
                                 f"model: {self.chains()}")
        return specs

    def _entry(self, name):
        matches = [e for e in self.entries if e[0] == name]
        if not matches:
            raise ValueError(f"node={name!r} is not an LSTM node of the model; "
                             f"LSTM nodes: {self.names}")
        if len(matches) > 1:
            raise ValueError(f"node={name!r} names {len(matches)} LSTM nodes; the model's "
                             f"LSTM nodes: {self.names}")
        return matches[0]


def _model_proto(source):
    """(ModelProto, folder of its external data or None). A file's external tensors are
    read later, only those of the chosen nodes."""
    import onnx  # the one framework this loader needs

    if isinstance(source, onnx.ModelProto):
        return source, None
    if isinstance(source, (bytes, bytearray)):
        try:
            return onnx.load_from_string(bytes(source)), None
        except Exception as exc:  # DecodeError and others for foreign bytes
            raise ValueError(f"the bytes given are not a readable ONNX model: {exc}") from None
    try:
        model = onnx.load(source, load_external_data=False)
    except FileNotFoundError:
        raise ValueError(f"ONNX file {source!r} does not exist") from None
    except Exception as exc:  # onnx raises DecodeError and others for foreign bytes
        raise ValueError(f"{source!r} is not a readable ONNX model: {exc}") from None
    return model, os.path.dirname(os.path.abspath(os.fspath(source)))


def _combine(specs):
    """One OnnxSpec from the node specs of a chain (or of one node)."""
    names = [s.name for s in specs]
    where = f"ONNX LSTM nodes {names}" if len(specs) > 1 else f"ONNX LSTM node {names[0]!r}"
    for label, values in (("directions", {s.direction for s in specs}),
                          ("layouts", {s.layout for s in specs}),
                          ("sequence_lens inputs", {s.sequence_lens for s in specs})):
        if len(values) > 1:
            raise ValueError(f"{where} have different {label} {sorted(values)}; fastlstm "
                             f"stacks layers that share them")
    first = specs[0]
    initial = None
    held = [s.initial for s in specs if s.initial is not None]
    if held:
        batch = held[0][0].shape[1]
        if any(h.shape[1] != batch for h, _ in held):
            raise ValueError(f"{where}: the initial states in the graph have different batch "
                             f"sizes {[h.shape[1] for h, _ in held]}")
        parts = ([], [])
        for s in specs:
            D, H = s.directions, s.layer.hidden_size
            h0, c0 = s.initial or (np.zeros((D, batch, H)), np.zeros((D, batch, H)))
            parts[0].extend(np.array(h0[d], np.float32) for d in range(D))
            parts[1].extend(np.array(c0[d], np.float32) for d in range(D))
        for part in parts[0] + parts[1]:
            part.flags.writeable = False
        if len({s.layer.hidden_size for s in specs}) == 1:
            initial = tuple(np.stack(p) for p in parts)
            for s in initial:
                s.flags.writeable = False
        else:
            initial = tuple(tuple(p) for p in parts)
    reverse = first.direction == "reverse"
    return OnnxSpec(tuple(names), tuple(replace(s.layer, reverse=reverse) for s in specs),
                    bidirectional=first.direction == "bidirectional",
                    batch_first=first.layout == 1, reverse=reverse, initial_state=initial)


def read(source, node=None):
    """Read the LSTM node(s) ``node`` picks (see ``LSTM.from_onnx``) into an OnnxSpec."""
    model, base_dir = _model_proto(source)
    try:
        index = _Model(model, base_dir)
    except RecursionError:
        raise ValueError("the ONNX model nests its subgraphs too deeply") from None
    return _combine(index.select(node))


def _found(name, specs):
    from .found import Found

    spec = _combine(specs)
    first = spec.layers[0]
    opts = first.options
    options = {}
    if spec.reverse:
        options["direction"] = "reverse"
    if spec.batch_first:
        options["layout"] = 1
    for key in ("gate_clip", "input_forget", "peepholes"):
        if getattr(opts, key) not in (None, False):
            options[key] = getattr(opts, key)
    for key in ("recurrent_activation", "activation", "output_activation"):
        default = "sigmoid" if key == "recurrent_activation" else "tanh"
        if getattr(opts, key)[0] != default:
            options[key] = getattr(opts, key)[0]
    if spec.initial_state is not None:
        options["initial_state"] = "held in the graph"
    if specs[0].sequence_lens:
        options["sequence_lens"] = specs[0].sequence_lens
    return Found("onnx", name, "node", "LSTM" if len(specs) == 1 else "LSTM chain",
                 input_size=first.input_size, hidden_size=spec.layers[-1].hidden_size,
                 num_layers=len(spec.layers), bidirectional=spec.bidirectional,
                 options=options)


def find(source):
    """Every LSTM node of an ONNX model (subgraphs included), each chain of them (its name is
    the list of node names to pass as ``node=``), and the GRU/RNN nodes fastlstm cannot run."""
    from .found import Found

    model, base_dir = _model_proto(source)
    index = _Model(model, base_dir)
    found = []
    in_chain = {n: chain for chain in index.chains() for n in chain}
    for entry in index.entries:
        try:
            item = _found(entry[0], [index.spec(entry)])
        except ValueError as exc:
            found.append(Found("onnx", entry[0], "node", "LSTM", reason=str(exc)))
            continue
        if entry[0] in in_chain:
            chain = in_chain[entry[0]]
            item.options["chain"] = f"layer {chain.index(entry[0])} of {chain}"
        found.append(item)
    for chain in index.chains():
        try:
            found.append(_found(chain, [index.spec(index._entry(n)) for n in chain]))
        except ValueError as exc:
            found.append(Found("onnx", chain, "node", "LSTM chain", reason=str(exc)))
    for name, op_type in index.others:
        found.append(Found("onnx", name, "node", op_type,
                           reason=f"an ONNX {op_type} node; fastlstm runs LSTM nodes only"))
    return found
