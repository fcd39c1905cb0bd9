"""fastlstm.LSTM.from_onnx on whole graphs: chains of LSTM nodes (what exporters write for
stacks), weights computed from constants, nodes inside If subgraphs, external data; each
checked against onnxruntime running the same model (and torch for torch's exports)."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import fastlstm

from conftest import torch_export_warnings

TOL = 1e-5
OPSET = 14
IR_VERSION = 8
I, H, B, T = 3, 4, 3, 5
GATES_TORCH_TO_ONNX = [0, 3, 1, 2]  # ONNX's i, o, f, c from torch's i, f, g, o blocks


def _session(model):
    data = model if isinstance(model, (str, bytes)) else model.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _x(seed=0, shape=(T, B, I)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _close(got, want):
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


# --- torch.onnx.export of stacked nn.LSTMs ---------------------------------------------------

def _torch_lstm(bidirectional, seed=0):
    import torch

    torch.manual_seed(seed)
    module = torch.nn.LSTM(I, H, 2, bidirectional=bidirectional)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.6, 0.6)
    return module.eval()


def _export(module, args, dynamo, input_names, tmp_path):
    import torch

    path = str(tmp_path / f"{'dynamo' if dynamo else 'legacy'}.onnx")
    kwargs = {} if dynamo else {"opset_version": OPSET}
    torch.onnx.export(module, args, path, dynamo=dynamo, input_names=input_names,
                      output_names=["y", "h", "c"], **kwargs)
    return path


@torch_export_warnings
@pytest.mark.parametrize("dynamo", [False, True])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_torch_export_of_a_stack_loads_as_one_model(tmp_path, dynamo, bidirectional):
    """Both exporters write one LSTM node per layer joined by Transpose/Reshape (or Squeeze);
    node=None finds the chain, and the model gives torch's and onnxruntime's outputs."""
    import torch

    module = _torch_lstm(bidirectional)
    x = _x(1)
    path = _export(module, (torch.from_numpy(x),), dynamo, ["x"], tmp_path)
    model = onnx.load(path)
    nodes = [n.name for n in model.graph.node if n.op_type == "LSTM"]
    assert len(nodes) == 2
    lstm = fastlstm.LSTM.from_onnx(path)
    assert type(lstm) is fastlstm.LSTM and lstm.num_layers == 2
    assert lstm.bidirectional == bidirectional and not lstm.batch_first
    y, (h, c) = lstm(x)
    y_o, h_o, c_o = _session(path).run(["y", "h", "c"], {"x": x})
    for ours, theirs in ((y, y_o), (h, h_o), (c, c_o)):
        _close(ours, theirs)
    with torch.no_grad():
        y_t, (h_t, c_t) = module(torch.from_numpy(x))
    for ours, theirs in ((y, y_t), (h, h_t), (c, c_t)):
        _close(ours, theirs.numpy())
    assert fastlstm.LSTM.from_onnx(model, node=nodes).weights.keys() == lstm.weights.keys()
    found = fastlstm.inspect(path)
    chain = [f for f in found if f.type == "LSTM chain"]
    assert len(chain) == 1 and chain[0].name == nodes and chain[0].num_layers == 2
    assert fastlstm.inspection.load_source(path, chain[0].name).weights.keys() == lstm.weights.keys()


@torch_export_warnings
@pytest.mark.parametrize("dynamo", [False, True])
def test_torch_export_with_initial_states(tmp_path, dynamo):
    """Exported with (h0, c0) as graph inputs, each node slices its layer's part: the
    caller's initial_state is the graph's h0 and c0 as they are."""
    import torch

    module = _torch_lstm(True, seed=5)
    x = _x(4)
    rng = np.random.default_rng(5)
    h0, c0 = (rng.standard_normal((4, B, H)).astype(np.float32) for _ in range(2))
    path = _export(module, (torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0))),
                   dynamo, ["x", "h0", "c0"], tmp_path)
    lstm = fastlstm.LSTM.from_onnx(path)
    assert type(lstm) is fastlstm.LSTM and lstm.num_layers == 2
    y, (h, c) = lstm(x, initial_state=(h0, c0))
    outputs = _session(path).run(["y", "h", "c"], {"x": x, "h0": h0, "c0": c0})
    with torch.no_grad():
        y_t, (h_t, c_t) = module(torch.from_numpy(x), (torch.from_numpy(h0),
                                                       torch.from_numpy(c0)))
    for ours, onnx_out, torch_out in zip((y, h, c), outputs, (y_t, h_t, c_t)):
        _close(ours, onnx_out)
        _close(ours, torch_out.numpy())


def _packed(module):
    """``module`` (an nn.LSTM) over packed sequences, padded back: torch's variable lengths."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    class Packed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = module

        def forward(self, x, lengths):
            y, (h, c) = self.lstm(pack_padded_sequence(x, lengths, enforce_sorted=False))
            y, _ = pad_packed_sequence(y, total_length=x.shape[0])
            return y, h, c

    return Packed().eval()


@torch_export_warnings
@pytest.mark.filterwarnings("ignore:The shape inference of prim:UserWarning")
@pytest.mark.parametrize("bidirectional", [True, False])
def test_torch_export_with_packed_sequences(tmp_path, bidirectional):
    """The legacy exporter writes packed sequences as the nodes' sequence_lens (the dynamo
    exporter cannot export pack_padded_sequence): fastlstm's lengths give the same outputs."""
    import torch

    module = _packed(_torch_lstm(bidirectional, seed=3))
    x, lengths = _x(2), np.array([5, 2, 4])
    path = _export(module, (torch.from_numpy(x), torch.from_numpy(lengths)), False,
                   ["x", "lengths"], tmp_path)
    lstm = fastlstm.LSTM.from_onnx(path)
    assert type(lstm) is fastlstm.LSTM and lstm.num_layers == 2
    y, (h, c) = lstm(x, lengths=lengths)
    y_o, h_o, c_o = _session(path).run(None, {"x": x, "lengths": lengths})
    with torch.no_grad():
        y_t, h_t, c_t = module(torch.from_numpy(x), torch.from_numpy(lengths))
    for ours, onnx_out, torch_out in ((y, y_o, y_t), (h, h_o, h_t), (c, c_o, c_t)):
        _close(ours, onnx_out)
        _close(ours, torch_out.numpy())


# --- chains built with onnx.helper -----------------------------------------------------------

def _weights(rng, D, n_in, peepholes=False):
    w = {"W": rng.uniform(-.6, .6, (D, 4 * H, n_in)), "R": rng.uniform(-.6, .6, (D, 4 * H, H)),
         "B": rng.uniform(-.5, .5, (D, 8 * H))}
    if peepholes:
        w["P"] = rng.uniform(-.5, .5, (D, 3 * H))
    return {k: v.astype(np.float32) for k, v in w.items()}


def _chain_model(direction="bidirectional", layers=2, states=False, peepholes=False, seed=0,
                 bridge="transpose_reshape"):
    """LSTM nodes lstm_0, lstm_1, ... joined as exporters join them; X, seq graph inputs."""
    rng = np.random.default_rng(seed)
    D = 2 if direction == "bidirectional" else 1
    nodes, inits, outputs = [], [], []
    x = "X"
    for k in range(layers):
        w = _weights(rng, D, I if k == 0 else D * H, peepholes)
        names = {n: f"{n}_{k}" for n in w}
        inits += [numpy_helper.from_array(v, names[n]) for n, v in w.items()]
        state_in = ["", ""]
        if states:
            for n in ("h0", "c0"):
                inits.append(numpy_helper.from_array(
                    rng.standard_normal((D, B, H)).astype(np.float32), f"{n}_{k}"))
            state_in = [f"h0_{k}", f"c0_{k}"]
        inputs = [x, names["W"], names["R"], names["B"], "seq"] + state_in
        if peepholes:
            inputs.append(names["P"])
        nodes.append(helper.make_node("LSTM", inputs, [f"Y_{k}", f"Yh_{k}", f"Yc_{k}"],
                                      name=f"lstm_{k}", hidden_size=H, direction=direction))
        outputs += [f"Yh_{k}", f"Yc_{k}"]
        if k + 1 < layers:
            if bridge == "transpose_reshape":
                nodes.append(helper.make_node("Transpose", [f"Y_{k}"], [f"Yt_{k}"],
                                              perm=[0, 2, 1, 3]))
                inits.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64),
                                                     f"shape_{k}"))
                nodes.append(helper.make_node("Reshape", [f"Yt_{k}", f"shape_{k}"],
                                              [f"X_{k + 1}"]))
            elif bridge == "squeeze":
                inits.append(numpy_helper.from_array(np.array([1], np.int64), f"axes_{k}"))
                nodes.append(helper.make_node("Squeeze", [f"Y_{k}", f"axes_{k}"],
                                              [f"X_{k + 1}"]))
            elif bridge == "reshape_only":  # wrong for D=2: mixes directions into time
                inits.append(numpy_helper.from_array(np.array([0, -1, D * H], np.int64),
                                                     f"shape_{k}"))
                nodes.append(helper.make_node("Reshape", [f"Y_{k}", f"shape_{k}"],
                                              [f"X_{k + 1}"]))
            x = f"X_{k + 1}"
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I]),
         helper.make_tensor_value_info("seq", TensorProto.INT32, [B])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT,
                                       [None] * (4 if n.startswith("Y_") else 3))
         for n in [f"Y_{layers - 1}"] + outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def _compare_chain(model, lstm, D, lengths=None):
    x = _x(7)
    seq = np.full(B, T, np.int32) if lengths is None else np.asarray(lengths, np.int32)
    Y, *states = _session(model).run(None, {"X": x, "seq": seq})
    y, (h, c) = lstm(x, lengths=lengths)
    _close(y.reshape(T, B, D, H).transpose(0, 2, 1, 3), Y)
    _close(h, np.concatenate(states[0::2]))
    _close(c, np.concatenate(states[1::2]))


@pytest.mark.parametrize("direction,bridge", [("bidirectional", "transpose_reshape"),
                                              ("forward", "squeeze"),
                                              ("forward", "transpose_reshape"),
                                              ("reverse", "squeeze")])
@pytest.mark.parametrize("states", [False, True])
def test_helper_chains(direction, bridge, states):
    """Three nodes with peepholes; initial states held per node stack into the model's held
    state, reverse nodes into reverse layers."""
    D = 2 if direction == "bidirectional" else 1
    model = _chain_model(direction, layers=3, states=states, peepholes=True, seed=4,
                         bridge=bridge)
    lstm = fastlstm.LSTM.from_onnx(model)
    assert lstm.num_layers == 3
    assert all(l.reverse == (direction == "reverse") for l in lstm.layers)
    assert (lstm.initial_state is not None) == states
    if states:
        assert lstm.initial_state[0].shape == (3 * D, B, H)
    _compare_chain(model, lstm, D, lengths=np.array([5, 2, 4]))
    _compare_chain(model, lstm, D)


def test_chain_choices_and_errors():
    model = _chain_model("bidirectional", layers=3, seed=5)
    first_two = fastlstm.LSTM.from_onnx(model, node=["lstm_0", "lstm_1"])
    assert first_two.num_layers == 2
    x = _x(3)
    full = fastlstm.LSTM.from_onnx(model)
    last = fastlstm.LSTM.from_onnx(model, node="lstm_2")
    _close(last(first_two(x)[0])[0], full(x)[0])
    with pytest.raises(ValueError, match=r"'lstm_0' does not take 'lstm_1''s output Y.*"
                                         r"\[\['lstm_0', 'lstm_1', 'lstm_2'\]\]"):
        fastlstm.LSTM.from_onnx(model, node=["lstm_1", "lstm_0"])
    with pytest.raises(ValueError, match=r"'lstm_2' does not take 'lstm_0''s output"):
        fastlstm.LSTM.from_onnx(model, node=["lstm_0", "lstm_2"])
    with pytest.raises(ValueError, match=r"node='lstm_9' is not an LSTM node.*"
                                         r"\['lstm_0', 'lstm_1', 'lstm_2'\]"):
        fastlstm.LSTM.from_onnx(model, node=["lstm_0", "lstm_9"])
    with pytest.raises(TypeError, match=r"node must be a node name, a non-empty list"):
        fastlstm.LSTM.from_onnx(model, node=[])
    # Reshape to (T, B, D*H) straight from (T, D, B, H) interleaves the directions: not a stack
    wrong = _chain_model("bidirectional", layers=2, seed=5, bridge="reshape_only")
    with pytest.raises(ValueError, match=r"2 LSTM nodes \['lstm_0', 'lstm_1'\] that do not "
                                         r"form one chain; choose one with node="):
        fastlstm.LSTM.from_onnx(wrong)
    with pytest.raises(ValueError, match=r"'lstm_1' does not take 'lstm_0''s output Y"):
        fastlstm.LSTM.from_onnx(wrong, node=["lstm_0", "lstm_1"])
    assert not [f for f in fastlstm.inspect(wrong) if f.type == "LSTM chain"]


# --- weights computed from constants ---------------------------------------------------------

def _const(name, value):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value))


def _gate_reordered(src, dst, axis, nodes):
    """dst = Concat of src's four gate blocks along `axis` in ONNX order (Slice per block),
    the way older exporters reorder torch's weights."""
    parts = []
    for g in GATES_TORCH_TO_ONNX:
        out = f"{dst}_g{g}"
        nodes.append(helper.make_node("Slice", [src, f"start_{g}", f"end_{g}", f"axis_{axis}"],
                                      [out]))
        parts.append(out)
    nodes.append(helper.make_node("Concat", parts, [dst], axis=axis))


def _folded_weights_model(bidirectional, seed=6):
    """torch-layout weights as initializers; W, R, B built from them by Slice (gate blocks),
    Concat (ONNX gate order; input then recurrent bias; directions) and Unsqueeze."""
    rng = np.random.default_rng(seed)
    D = 2 if bidirectional else 1
    nodes, inits = [], []
    for g in range(4):
        inits += [numpy_helper.from_array(np.array([g * H], np.int64), f"start_{g}"),
                  numpy_helper.from_array(np.array([(g + 1) * H], np.int64), f"end_{g}")]
    nodes += [_const("axis_0", np.array([0], np.int64)),
              helper.make_node("Constant", [], ["axes_0"], value_ints=[0])]
    torch_weights = []
    per_dir = {"W": [], "R": [], "B": []}
    for d in range(D):
        sd = {"w_ih": rng.uniform(-.6, .6, (4 * H, I)), "w_hh": rng.uniform(-.6, .6, (4 * H, H)),
              "b_ih": rng.uniform(-.5, .5, 4 * H), "b_hh": rng.uniform(-.5, .5, 4 * H)}
        sd = {k: v.astype(np.float32) for k, v in sd.items()}
        torch_weights.append(sd)
        inits += [numpy_helper.from_array(v, f"{k}_{d}") for k, v in sd.items()]
        for key in sd:
            _gate_reordered(f"{key}_{d}", f"{key}_{d}_onnx", 0, nodes)
        nodes.append(helper.make_node("Concat", [f"b_ih_{d}_onnx", f"b_hh_{d}_onnx"],
                                      [f"b_{d}"], axis=0))
        for name, src in (("W", f"w_ih_{d}_onnx"), ("R", f"w_hh_{d}_onnx"), ("B", f"b_{d}")):
            nodes.append(helper.make_node("Unsqueeze", [src, "axes_0"], [f"{name}_{d}"]))
            per_dir[name].append(f"{name}_{d}")
    for name, parts in per_dir.items():
        nodes.append(helper.make_node("Concat", parts, [name], axis=0))
    nodes.append(helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y", "Y_h", "Y_c"],
                                  name="lstm", hidden_size=H,
                                  direction="bidirectional" if bidirectional else "forward"))
    graph = helper.make_graph(
        nodes, "folded", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None] * (4 if n == "Y" else 3))
         for n in ("Y", "Y_h", "Y_c")],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model, torch_weights


@pytest.mark.parametrize("bidirectional", [False, True])
def test_weights_folded_from_constants(bidirectional):
    model, torch_weights = _folded_weights_model(bidirectional)
    lstm = fastlstm.LSTM.from_onnx(model)
    D = 2 if bidirectional else 1
    for d, sd in enumerate(torch_weights):  # the folded gates are torch's again
        suffix = "_reverse" if d else ""
        np.testing.assert_array_equal(lstm.weights[f"weight_ih_l0{suffix}"], sd["w_ih"])
        np.testing.assert_array_equal(lstm.weights[f"bias_hh_l0{suffix}"], sd["b_hh"])
    x = _x(8)
    Y, Y_h, Y_c = _session(model).run(None, {"X": x})
    y, (h, c) = lstm(x)
    _close(y.reshape(T, B, D, H).transpose(0, 2, 1, 3), Y)
    _close(h, Y_h)
    _close(c, Y_c)


def test_weights_that_cannot_be_folded():
    model, _ = _folded_weights_model(False)
    graph = model.graph
    # W from a graph input: the caller's, not the model's
    graph.input.append(helper.make_tensor_value_info("W_in", TensorProto.FLOAT, [1, 16, 3]))
    lstm_node = graph.node[-1]
    lstm_node.input[1] = "W_in"
    with pytest.raises(ValueError, match=r"W \('W_in'\) is computed from the graph's input "
                                         r"'W_in'; fastlstm needs its value"):
        fastlstm.LSTM.from_onnx(model)
    # W from constants through an op that is not folded (Tile could make it any size)
    graph.initializer.append(numpy_helper.from_array(np.array([1, 1, 1], np.int64), "reps"))
    graph.node.insert(len(graph.node) - 1, helper.make_node("Tile", ["W", "reps"], ["W_tiled"]))
    lstm_node = graph.node[-1]
    lstm_node.input[1] = "W_tiled"
    with pytest.raises(ValueError, match=r"W \('W_tiled'\) is computed from constants by "
                                         r"\['Tile'\], which fastlstm does not fold"):
        fastlstm.LSTM.from_onnx(model)


# --- nodes inside subgraphs --------------------------------------------------------------------

def _if_model(seed=9):
    """An If node whose branches each hold an LSTM node reading the outer X and initializers."""
    rng = np.random.default_rng(seed)
    inits = []
    branches = {}
    for branch, k in (("then_branch", 1), ("else_branch", 2)):
        w = _weights(rng, 1, I)
        inits += [numpy_helper.from_array(v, f"{n}_{k}") for n, v in w.items()]
        node = helper.make_node("LSTM", ["X", f"W_{k}", f"R_{k}", f"B_{k}"],
                                [f"Y_{k}"], name=f"LSTM_{k}", hidden_size=H)
        branches[branch] = helper.make_graph(
            [node], branch, [], [helper.make_tensor_value_info(f"Y_{k}", TensorProto.FLOAT,
                                                               [T, 1, B, H])])
    if_node = helper.make_node("If", ["cond"], ["Y"], name="If_0", **branches)
    graph = helper.make_graph(
        [if_node], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [T, 1, B, H])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def test_nodes_inside_an_if():
    model = _if_model()
    names = ["If_0/else_branch/LSTM_2", "If_0/then_branch/LSTM_1"]  # the attributes' order
    with pytest.raises(ValueError, match=r"2 LSTM nodes \['If_0/else_branch/LSTM_2', "
                                         r"'If_0/then_branch/LSTM_1'\]"):
        fastlstm.LSTM.from_onnx(model)
    assert [f.name for f in fastlstm.inspect(model)] == names
    x = _x(10)
    session = _session(model)
    for name, cond in zip(names, (False, True)):
        lstm = fastlstm.LSTM.from_onnx(model, node=name)
        Y, = session.run(None, {"X": x, "cond": np.array(cond)})
        _close(lstm(x)[0][:, None], Y)


# --- external data ------------------------------------------------------------------------------

def test_external_data(tmp_path):
    model = _chain_model("bidirectional", layers=2, states=True, seed=11)
    path = tmp_path / "external.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="external.data", size_threshold=64)  # onnxruntime wants shapes inline
    assert (tmp_path / "external.data").stat().st_size > 0
    external = [init.name for init in onnx.load(str(path), load_external_data=False).graph.
                initializer if init.data_location == TensorProto.EXTERNAL]
    assert {"W_0", "R_1", "h0_1"} <= set(external)
    lstm = fastlstm.LSTM.from_onnx(str(path))
    _compare_chain(str(path), lstm, 2, lengths=np.array([1, 5, 3]))
    loaded = fastlstm.LSTM.from_onnx(onnx.load(str(path)))  # data read by onnx.load
    _close(loaded(_x(1))[0], lstm(_x(1))[0])
    not_loaded = onnx.load(str(path), load_external_data=False)
    with pytest.raises(ValueError, match=r"refers to external data that is not loaded"):
        fastlstm.LSTM.from_onnx(not_loaded)
    (tmp_path / "external.data").unlink()
    with pytest.raises(ValueError, match=r"external data cannot be read"):
        fastlstm.LSTM.from_onnx(str(path))


# --- inspect ---------------------------------------------------------------------------------

def test_inspect_lists_nodes_chains_and_other_rnns(tmp_path):
    model = _chain_model("forward", layers=2, bridge="squeeze", seed=12)
    graph = model.graph
    rng = np.random.default_rng(0)
    graph.initializer.extend([
        numpy_helper.from_array(rng.standard_normal((1, 3 * H, I)).astype(np.float32), "GW"),
        numpy_helper.from_array(rng.standard_normal((1, 3 * H, H)).astype(np.float32), "GR")])
    graph.node.append(helper.make_node("GRU", ["X", "GW", "GR"], ["GY"], name="gru",
                                       hidden_size=H))
    path = tmp_path / "mixed.onnx"
    onnx.save(model, str(path))
    found = fastlstm.inspect(str(path))
    assert [(f.name, f.type, f.num_layers, f.supported) for f in found] == [
        ("lstm_0", "LSTM", 1, True), ("lstm_1", "LSTM", 1, True),
        (["lstm_0", "lstm_1"], "LSTM chain", 2, True), ("gru", "GRU", 1, False)]
    assert found[1].input_size == H and found[1].options["chain"].startswith("layer 1 of")
    assert "runs LSTM nodes only" in found[3].reason
    assert "node=['lstm_0', 'lstm_1']" in repr(found)
    # node=None: only LSTM nodes count, and they form one chain
    assert fastlstm.LSTM.from_onnx(str(path)).num_layers == 2
