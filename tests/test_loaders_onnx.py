"""fastlstm.LSTM.from_onnx against onnxruntime running the same ONNX LSTM node."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import fastlstm

from conftest import torch_export_warnings

TOL = 1e-5
OPSET = 14  # the first opset with the LSTM `layout` attribute
IR_VERSION = 8  # well inside what onnxruntime 1.x accepts
I, H, B, T = 3, 4, 3, 5


def _node_model(direction="forward", layout=0, peepholes=False, clip=None, input_forget=0,
                activations=None, alpha=None, beta=None, init_state="input", seed=0,
                extra_nodes=(), name="lstm"):
    """A graph with one LSTM node: X, sequence_lens (and initial_h/c) are graph inputs,
    W/R/B/P initializers. Returns (model bytes, weights dict)."""
    rng = np.random.default_rng(seed)
    D = 2 if direction == "bidirectional" else 1
    w = {"W": rng.uniform(-.6, .6, (D, 4 * H, I)), "R": rng.uniform(-.6, .6, (D, 4 * H, H)),
         "B": rng.uniform(-.5, .5, (D, 8 * H))}
    if peepholes:
        w["P"] = rng.uniform(-.5, .5, (D, 3 * H))
    state_shape = [D, B, H] if layout == 0 else [B, D, H]
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in w.items()]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                            [T, B, I] if layout == 0 else [B, T, I]),
              helper.make_tensor_value_info("seq", TensorProto.INT32, [B])]
    if init_state == "input":
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, state_shape)
                   for n in ("h0", "c0")]
    elif init_state == "initializer":
        for n in ("h0", "c0"):
            w[n] = rng.standard_normal(state_shape)
            inits.append(numpy_helper.from_array(w[n].astype(np.float32), n))
    attrs = {"hidden_size": H, "direction": direction, "layout": layout}
    if clip is not None:
        attrs["clip"] = clip
    if input_forget:
        attrs["input_forget"] = input_forget
    if activations is not None:
        attrs["activations"] = activations
    if alpha is not None:
        attrs["activation_alpha"] = alpha
    if beta is not None:
        attrs["activation_beta"] = beta
    state_in = ["h0", "c0"] if init_state else ["", ""]
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "seq"] + state_in
                            + (["P"] if peepholes else []), ["Y", "Y_h", "Y_c"], name=name,
                            **attrs)
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None] * (4 if n == "Y" else 3))
               for n in ("Y", "Y_h", "Y_c")]
    graph = helper.make_graph([node, *extra_nodes], "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model, w


def _ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["Y", "Y_h", "Y_c"], feeds)


def _compare(model, lstm, layout, lengths, state, D):
    """Run ORT and fastlstm on the same inputs and compare via the documented mapping.

    onnxruntime refuses ``layout=1`` ("Batchwise recurrent operations are not supported"), so
    for a layout-1 node ORT runs its layout-0 twin (same weights, X and states transposed) and
    its outputs are transposed to layout 1, which is how the ONNX spec defines the layout."""
    rng = np.random.default_rng(42)
    x = rng.standard_normal((T, B, I) if layout == 0 else (B, T, I)).astype(np.float32)
    seq = np.full(B, T, np.int32) if lengths is None else lengths.astype(np.int32)
    ours_state = None
    if layout == 0:
        feeds = {"X": x, "seq": seq}
        if state is not None:
            feeds["h0"], feeds["c0"] = ours_state = state
    else:
        twin = onnx.ModelProto()
        twin.CopyFrom(model)
        for attr in twin.graph.node[-1].attribute:
            if attr.name == "layout":
                attr.i = 0
        for init in twin.graph.initializer:
            if init.name in ("h0", "c0"):
                init.CopyFrom(numpy_helper.from_array(
                    numpy_helper.to_array(init).transpose(1, 0, 2).copy(), init.name))
        for value in twin.graph.input:
            if value.name in ("X", "h0", "c0"):
                dims = value.type.tensor_type.shape.dim
                dims[0].dim_value, dims[1].dim_value = dims[1].dim_value, dims[0].dim_value
        model = twin
        feeds = {"X": x.transpose(1, 0, 2).copy(), "seq": seq}
        if state is not None:  # given as (D, B, H): the layout-0 twin and fastlstm take that
            feeds["h0"], feeds["c0"] = ours_state = state
    Y, Y_h, Y_c = _ort(model, feeds)
    if layout == 1:
        Y = Y.transpose(2, 0, 1, 3)  # (T, D, B, H) -> (B, T, D, H)
        Y_h, Y_c = Y_h.transpose(1, 0, 2), Y_c.transpose(1, 0, 2)
    y, (h, c) = lstm(x, initial_state=ours_state, lengths=lengths)
    if layout == 0:
        y = y.reshape(T, B, D, H).transpose(0, 2, 1, 3)
    else:
        y = y.reshape(B, T, D, H)
        h, c = h.transpose(1, 0, 2), c.transpose(1, 0, 2)
    np.testing.assert_allclose(y, Y, atol=TOL, rtol=0)
    np.testing.assert_allclose(h, Y_h, atol=TOL, rtol=0)
    np.testing.assert_allclose(c, Y_c, atol=TOL, rtol=0)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("use_lengths", [False, True])
@pytest.mark.parametrize("peepholes", [False, True])
def test_directions_layouts_lengths(direction, layout, use_lengths, peepholes):
    D = 2 if direction == "bidirectional" else 1
    model, _ = _node_model(direction, layout, peepholes=peepholes, seed=1)
    lstm = fastlstm.LSTM.from_onnx(model)
    assert lstm.batch_first == (layout == 1)
    rng = np.random.default_rng(3)
    state = tuple(rng.standard_normal((D, B, H)).astype(np.float32) for _ in range(2))
    # length 0 is left out: onnxruntime gives Y_h = Y_c = 0 there, fastlstm the initial state
    lengths = np.array([5, 2, 1]) if use_lengths else None
    _compare(model, lstm, layout, lengths, state, D)


@pytest.mark.parametrize("options", [
    dict(clip=0.7),
    dict(input_forget=1),
    dict(clip=0.5, peepholes=True, input_forget=1),
    dict(activations=["HardSigmoid", "Tanh", "Tanh"]),
    dict(activations=["HardSigmoid", "LeakyRelu", "ScaledTanh"], alpha=[0.3, 0.1, 0.8],
         beta=[0.4, 1.3]),
    dict(activations=["Sigmoid", "Affine", "Elu"], alpha=[0.9, 0.7], beta=[0.05]),
    dict(activations=["Sigmoid", "Softsign", "Softplus"]),
    dict(activations=["Sigmoid", "Relu", "ThresholdedRelu"], alpha=[0.2]),
    dict(activations=["HardSigmoid", "Tanh", "Tanh"] * 2, direction="bidirectional"),
])
def test_attributes(options):
    direction = options.pop("direction", "forward")
    D = 2 if direction == "bidirectional" else 1
    model, _ = _node_model(direction, 0, seed=2, **options)
    lstm = fastlstm.LSTM.from_onnx(model)
    rng = np.random.default_rng(4)
    state = tuple(rng.standard_normal((D, B, H)).astype(np.float32) for _ in range(2))
    _compare(model, lstm, 0, np.array([5, 4, 1]), state, D)


def test_activation_defaults_are_onnx_defaults():
    model, _ = _node_model(activations=["HardSigmoid", "LeakyRelu", "Tanh"])
    opts = fastlstm.LSTM.from_onnx(model).layer_options[0]
    assert opts.recurrent_activation == ("hard_sigmoid", 0.2, 0.5)
    assert opts.activation == ("leaky_relu", 0.01, 0.0)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
def test_initial_state_initializers(direction, layout, tmp_path):
    D = 2 if direction == "bidirectional" else 1
    model, w = _node_model(direction, layout, init_state="initializer", seed=5)
    lstm = fastlstm.LSTM.from_onnx(model)
    assert type(lstm) is fastlstm.LSTM
    assert [l.reverse for l in lstm.layers] == [direction == "reverse"]
    want = w["h0"] if layout == 0 else w["h0"].transpose(1, 0, 2)
    np.testing.assert_allclose(lstm.initial_state[0], want, atol=1e-6)
    _compare(model, lstm, layout, np.array([5, 1, 3]), None, D)
    # the held state and reverse layers are part of the model: a saved copy gives the bits
    path = tmp_path / "held.npz"
    lstm.save(path)
    loaded = fastlstm.load(path)
    np.testing.assert_array_equal(loaded.initial_state[0], lstm.initial_state[0])
    x = np.random.default_rng(2).standard_normal((B, T, I) if layout else (T, B, I))
    x = x.astype(np.float32)
    for a, b in zip(lstm(x)[0], loaded(x)[0]):
        np.testing.assert_array_equal(a, b)
    # another batch needs a state of its own
    with pytest.raises(ValueError, match=r"^x has batch 7 but the model's initial state"):
        lstm(np.zeros((7, T, I) if layout else (T, 7, I), np.float32))


def test_no_initial_state_and_no_bias_from_file(tmp_path):
    model, _ = _node_model(init_state=None, seed=6)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    lstm = fastlstm.LSTM.from_onnx(str(path))
    assert type(lstm) is fastlstm.LSTM
    _compare(model, lstm, 0, None, None, 1)


def test_constant_weights_and_several_nodes():
    """Weights from Constant nodes; two LSTM nodes must be chosen by name."""
    first, _ = _node_model(init_state=None, seed=7, name="enc")
    graph = first.graph
    for init in list(graph.initializer):
        graph.node.insert(0, helper.make_node("Constant", [], [init.name], value=init))
    del graph.initializer[:]
    second = helper.make_node("LSTM", ["X", "W", "R"], ["Y2"], name="dec", hidden_size=H)
    graph.node.append(second)
    with pytest.raises(ValueError, match=r"2 LSTM nodes \['enc', 'dec'\]"):
        fastlstm.LSTM.from_onnx(first)
    with pytest.raises(ValueError, match=r"node='nope' .* \['enc', 'dec'\]"):
        fastlstm.LSTM.from_onnx(first, node="nope")
    lstm = fastlstm.LSTM.from_onnx(first, node="enc")
    single, _ = _node_model(init_state=None, seed=7, name="enc")
    _compare(single, lstm, 0, np.array([1, 5, 2]), None, 1)
    dec = fastlstm.LSTM.from_onnx(first, node="dec")
    assert np.all(dec.weights["bias_ih_l0"] == 0)


def test_errors(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf at all \xff\xfe")
    with pytest.raises(ValueError, match="bad.onnx"):
        fastlstm.LSTM.from_onnx(str(bad))
    with pytest.raises(ValueError, match="does not exist"):
        fastlstm.LSTM.from_onnx(str(tmp_path / "missing.onnx"))
    model, _ = _node_model(activations=["Sigmoid", "Tanh", "Tanh", "Sigmoid", "Relu", "Tanh"],
                           direction="bidirectional")
    with pytest.raises(ValueError, match="different activations"):
        fastlstm.LSTM.from_onnx(model)
    empty = helper.make_model(helper.make_graph([], "g", [], []), ir_version=IR_VERSION)
    with pytest.raises(ValueError, match="no LSTM node"):
        fastlstm.LSTM.from_onnx(empty)


@torch_export_warnings
def test_torch_exported_model():
    """A real exporter's graph: torch.onnx.export of a 2-layer bidirectional nn.LSTM (one LSTM
    node per layer, zero initial states as initializers) loads node by node and matches ORT."""
    import io

    import torch

    module = torch.nn.LSTM(I, H, 2, bidirectional=True)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.6, 0.6)
    buf = io.BytesIO()
    x = np.random.default_rng(9).standard_normal((T, B, I)).astype(np.float32)
    torch.onnx.export(module, (torch.from_numpy(x),), buf, dynamo=False, input_names=["x"],
                      output_names=["y", "h", "c"], opset_version=OPSET)
    model = onnx.load_from_string(buf.getvalue())
    names = [n.name for n in model.graph.node if n.op_type == "LSTM"]
    assert len(names) == 2
    first, second = (fastlstm.LSTM.from_onnx(model, node=n) for n in names)
    assert type(first) is fastlstm.LSTM  # zero initial states are dropped
    y1, (h1, c1) = first(x)
    y2, (h2, c2) = second(y1)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y_o, h_o, c_o = sess.run(None, {"x": x})
    np.testing.assert_allclose(y2, y_o, atol=TOL, rtol=0)
    np.testing.assert_allclose(np.concatenate([h1, h2]), h_o, atol=TOL, rtol=0)
    np.testing.assert_allclose(np.concatenate([c1, c2]), c_o, atol=TOL, rtol=0)
    assert first(x[:, :1])[0].shape == (T, 1, 2 * H)  # any batch size, unlike the graph
