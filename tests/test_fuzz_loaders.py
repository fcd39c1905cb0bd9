"""Files for ``fastlstm.load`` / ``LSTM.from_onnx`` / ``LSTM.from_keras`` that are missing,
empty, truncated, of the wrong kind or crafted to mislead, and a bounded fuzz: random byte
mutations of valid files. Each file either loads into a model that runs (and agrees with the
reference on its own weights) or is refused with a ValueError / TypeError / OSError naming the
file; never another exception, a crash or a hang.

The fuzz is derandomised (the same cases on every run) and bounded to ~15 s in all; a hang is
caught by faulthandler, which dumps the stacks and exits after 120 s.
"""
import faulthandler
import io
import json
import os
import pathlib
import shutil
import zipfile

import h5py
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

import fastlstm
from fastlstm import reference
from fastlstm.io import CONFIG_KEY

from conftest import assert_close
from test_loaders_onnx_graphs import _chain_model, _folded_weights_model

DATA = pathlib.Path(__file__).parent / "data"
# Saved by Keras 3.x: Model(Input((None, 3)) -> LSTM(4, return_sequences=True, name="lstm")),
# weights uniform in +-0.5 (numpy seed 0); model.save / model.save_weights.
KERAS_FILE = DATA / "tiny_lstm.keras"
H5_FILE = DATA / "tiny_lstm.weights.h5"
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
       b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7"
       b"\x35\x81\x84\x00\x00\x00\x00IEND\xaeB`\x82")
CLEAN = (ValueError, TypeError, OSError)


# --- valid files ---------------------------------------------------------------------------

def _onnx_model(W=None, R=None, B=None, attrs=None, extra_inits=()):
    rng = np.random.default_rng(0)
    W = rng.uniform(-.5, .5, (1, 16, 3)) if W is None else W
    R = rng.uniform(-.5, .5, (1, 16, 4)) if R is None else R
    B = rng.uniform(-.5, .5, (1, 32)) if B is None else B
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in
             (("W", W), ("R", R), ("B", B))] + list(extra_inits)
    attrs = {"hidden_size": 4} if attrs is None else attrs
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], name="lstm", **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [5, 2, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("valid")
    paths = {"npz": folder / "model.npz", "cell_npz": folder / "cell.npz",
             "onnx": folder / "model.onnx", "keras": folder / "model.keras",
             "h5": folder / "model.weights.h5"}
    fastlstm.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, seed=0).save(
        paths["npz"])
    fastlstm.LSTMCell(3, 4, peepholes=True, seed=1).save(paths["cell_npz"])
    onnx.save(_onnx_model(), paths["onnx"])
    shutil.copy(KERAS_FILE, paths["keras"])
    shutil.copy(H5_FILE, paths["h5"])
    return paths


LOADERS = {
    "npz": fastlstm.load,
    "cell_npz": fastlstm.load,
    "onnx": fastlstm.LSTM.from_onnx,
    "keras": fastlstm.LSTM.from_keras,
    "h5": fastlstm.LSTM.from_keras,
}


def _exercise(model):
    """A loaded model must run and agree with the reference on its own weights."""
    if isinstance(model, fastlstm.LSTMCell):
        x = np.random.default_rng(0).standard_normal((2, model.input_size)).astype(np.float32)
        y, _ = model(x)
        assert_close(y, reference.run(model, x)[0], atol=1e-5, rtol=1e-4)
        return
    batch = 2
    held = model.initial_state  # an ONNX graph's states fix the batch
    if held is not None:
        batch = (held[0][0] if isinstance(held[0], tuple) else held[0]).shape[-2]
    shape = (batch, 3, model.input_size) if model.batch_first else (3, batch, model.input_size)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    y, _ = model(x)
    assert_close(y, reference.run(model, x)[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_valid_files_load(files, kind):
    _exercise(LOADERS[kind](files[kind]))


# --- missing, empty, truncated, foreign ----------------------------------------------------

def _foreign(tmp_path, kind, content, name=None):
    path = tmp_path / (name or f"bad.{ 'weights.h5' if kind == 'h5' else kind.split('_')[-1]}")
    path.write_bytes(content)
    return path


def _zip_of(entries):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


FOREIGN = {
    "empty": lambda valid: b"",
    "png": lambda valid: PNG,
    "text": lambda valid: b"hello, I am not a model\n" * 10,
    "zeros": lambda valid: bytes(4096),
    "truncated_half": lambda valid: valid[:len(valid) // 2],
    "truncated_to_header": lambda valid: valid[:64],
    "truncated_last_byte": lambda valid: valid[:-1],
    "zip_not_a_model": lambda valid: _zip_of({"readme.txt": b"hi", "data.bin": bytes(100)}),
    "empty_zip": lambda valid: _zip_of({}),
    "html_error_page": lambda valid: b"<html><body>404 Not Found</body></html>",
}


@pytest.mark.parametrize("case", sorted(FOREIGN))
@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_foreign_and_damaged_files_are_refused(files, tmp_path, kind, case):
    path = _foreign(tmp_path, kind, FOREIGN[case](files[kind].read_bytes()))
    with pytest.raises(ValueError) as info:
        LOADERS[kind](path)
    assert str(path.name) in str(info.value) or "ONNX" in str(info.value), str(info.value)


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_missing_files_and_directories(tmp_path, kind):
    with pytest.raises(ValueError, match="does not exist|not a file"):
        LOADERS[kind](tmp_path / "missing.file")
    with pytest.raises(CLEAN, match=r"tmp|directory|not a file|Is a directory"):
        LOADERS[kind](tmp_path)


@pytest.mark.parametrize("value,exc", [(None, TypeError), (3, TypeError), (b"\x00", ValueError)])
def test_load_path_of_the_wrong_type(value, exc):
    with pytest.raises(exc, match=r"fastlstm.load"):
        fastlstm.load(value)


# --- fastlstm.load: crafted .npz files --------------------------------------------------------

def _npz(path, arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def _contents(path):
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _with_config(arrays, change):
    config = json.loads(str(arrays[CONFIG_KEY]))
    change(config)
    out = dict(arrays)
    out[CONFIG_KEY] = np.array(json.dumps(config))
    return out


def _set(path, value):
    def change(config):
        target = config
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


CRAFTED_NPZ = {
    "extra_array": (lambda a: dict(a, extra=np.zeros(3, np.float32)),
                    r"not weights of the model: \['extra'\]"),
    "missing_array": (lambda a: {k: v for k, v in a.items() if k != "weight_hh_l1"},
                      r"lacks the weights \['weight_hh_l1'\]"),
    "wrong_shape": (lambda a: dict(a, weight_ih_l0=np.zeros((16, 4), np.float32)),
                    r"weight_ih must have shape \(16, 3\), got \(16, 4\)"),
    "nan_weight": (lambda a: dict(a, bias_hh_l0=np.full(16, np.nan, np.float32)),
                   r"contains NaN or Inf"),
    "object_array": (lambda a: dict(a, bias_hh_l0=np.array([1, "x"], object)),
                     r"damaged or not a fastlstm model|pickle"),
    "config_not_json": (lambda a: dict(a, **{CONFIG_KEY: np.array("{not json")}),
                        r"not valid JSON"),
    "config_deeply_nested": (lambda a: dict(a, **{CONFIG_KEY: np.array("[" * 100000)}),
                             r"not valid JSON"),
    "config_bytes": (lambda a: dict(a, **{CONFIG_KEY: np.array(b"{}")}),
                     r"must be a JSON string"),
    "config_list": (lambda a: dict(a, **{CONFIG_KEY: np.array("[1, 2]")}),
                    r"does not say format 'fastlstm'"),
    "wrong_version": (lambda a: _with_config(a, _set(["version"], 99)), r"format version 99"),
    "kind_unknown": (lambda a: _with_config(a, _set(["kind"], "GRU")), r"kind 'GRU'"),
    "layers_not_list": (lambda a: _with_config(a, _set(["layers"], "2")),
                        r"'layers' must be a list, got '2'"),
    "bidirectional_string": (lambda a: _with_config(a, _set(["bidirectional"], "true")),
                             r"'bidirectional' must be a bool"),
    "input_size_string": (lambda a: _with_config(a, _set(["layers", 0, "input_size"], "3")),
                          r"layer 0 is invalid: input_size must be an integer, got str"),
    "hidden_size_float": (lambda a: _with_config(a, _set(["layers", 0, "hidden_size"], 4.0)),
                          r"layer 0 is invalid: hidden_size must be an integer, got float"),
    "huge_declared_sizes": (lambda a: _with_config(a, _set(["layers", 0, "hidden_size"],
                                                           1 << 24)),
                            r"proj_size|must have shape"),
    "absurd_declared_sizes": (lambda a: _with_config(a, _set(["layers", 0, "input_size"],
                                                             10**12)),
                              r"input_size must be <= 16777216"),
    "negative_size": (lambda a: _with_config(a, _set(["layers", 1, "hidden_size"], -4)),
                      r"hidden_size must be >= 1"),
    "activation_unknown": (lambda a: _with_config(a, _set(["layers", 0, "options",
                                                           "activation"], "evil")),
                           r"activation must be one of"),
    "activation_number": (lambda a: _with_config(a, _set(["layers", 0, "options",
                                                          "activation"], 7)),
                          r"activation must be an activation name"),
    "option_unknown": (lambda a: _with_config(a, _set(["layers", 0, "options", "exec"],
                                                      "import os")),
                       r"invalid.*exec"),
    "clip_negative": (lambda a: _with_config(a, _set(["layers", 0, "options", "cell_clip"],
                                                     -1)),
                      r"cell_clip must be > 0"),
    "layer_entry_list": (lambda a: _with_config(a, _set(["layers", 0], [3, 4])),
                         r"layer 0 is malformed"),
    "digest_mismatch": (lambda a: dict(a, bias_ih_l0=a["bias_ih_l0"] + 1),
                        r"do not match the digest"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED_NPZ))
def test_crafted_npz(files, tmp_path, case):
    make, pattern = CRAFTED_NPZ[case]
    path = _npz(tmp_path / "crafted.npz", make(_contents(files["npz"])))
    with pytest.raises(ValueError, match=pattern) as info:
        fastlstm.load(path)
    assert "crafted.npz" in str(info.value)


def test_npz_member_declaring_a_huge_shape(files, tmp_path):
    """A .npy header can declare any shape; np.load would allocate it before reading."""
    arrays = _contents(files["npz"])
    raw = io.BytesIO()
    np.lib.format.write_array_header_1_0(raw, {"descr": "<f4", "fortran_order": False,
                                               "shape": (1 << 40,)})
    raw.write(b"\0" * 64)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, arr, allow_pickle=False)
            z.writestr(name + ".npy", member.getvalue() if name != "bias_ih_l0" else
                       raw.getvalue())
    path = tmp_path / "huge.npz"
    path.write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match=r"huge.npz.*'bias_ih_l0.npy' declares shape "
                                         r"\(1099511627776,\)"):
        fastlstm.load(path)


def test_npz_with_a_foreign_member(files, tmp_path):
    content = files["npz"].read_bytes()
    path = tmp_path / "foreign_member.npz"
    path.write_bytes(content)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("payload.pkl", b"cos\nsystem\n(S'echo hi'\ntR.")
    with pytest.raises(ValueError, match=r"'payload.pkl', which is not a .npy array"):
        fastlstm.load(path)


# --- from_onnx: crafted models -------------------------------------------------------------

def _bad_external(tmp_path):
    model = _onnx_model()
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../../../../../../etc/passwd"), ("offset", "0"),
                 ("length", "192")):
        entry = tensor.external_data.add()
        entry.key, entry.value = k, v
    return model


CRAFTED_ONNX = {
    "no_lstm_node": (lambda: helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["X"], ["Y"])], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])])), r"has no LSTM node"),
    "W_rank2": (lambda: _onnx_model(W=np.zeros((16, 3))), r"W must be \(directions, 4\*hidden, "
                                                          r"input\)"),
    "W_wrong_gates": (lambda: _onnx_model(W=np.zeros((1, 12, 3))), r"do not agree"),
    "hidden_size_attr_lies": (lambda: _onnx_model(attrs={"hidden_size": 10**9}),
                              r"hidden_size 1000000000.*do not agree"),
    "B_wrong_shape": (lambda: _onnx_model(B=np.zeros((1, 31))), r"B must have shape \(1, 32\)"),
    "nan_weights": (lambda: _onnx_model(R=np.full((1, 16, 4), np.nan)), r"contains NaN or Inf"),
    "direction_unknown": (lambda: _onnx_model(attrs={"hidden_size": 4, "direction": "sideways"}),
                          r"unknown direction 'sideways'"),
    "direction_int": (lambda: _onnx_model(attrs={"hidden_size": 4, "direction": 3}),
                      r"unknown direction 3|malformed"),
    "activations_unknown": (lambda: _onnx_model(attrs={"hidden_size": 4, "activations":
                                                       ["Sigmoid", "Gelu", "Tanh"]}),
                            r"activation 'Gelu' is not supported"),
    "activations_ints": (lambda: _onnx_model(attrs={"hidden_size": 4, "activations": [1, 2, 3]}),
                         r"malformed"),
    "activations_too_few": (lambda: _onnx_model(attrs={"hidden_size": 4, "activations":
                                                       ["Tanh"]}), r"expected 3 activations"),
    "clip_negative": (lambda: _onnx_model(attrs={"hidden_size": 4, "clip": -1.0}),
                      r"gate_clip must be > 0"),
    "layout_2": (lambda: _onnx_model(attrs={"hidden_size": 4, "layout": 2}),
                 r"layout must be 0 or 1, got 2"),
    "string_tensor": (lambda: _onnx_model(extra_inits=()) if False else _string_W(),
                      r"W \('W'\) is not a readable real tensor"),
    "dims_lie": (lambda: _dims_lie(), r"W \('W'\) declares shape \[1, 16, 300000\] but holds "
                                      r"only 192"),
    "external_data_outside": (lambda: _bad_external(None), r"."),
}


def _string_W():
    model = _onnx_model()
    model.graph.initializer[0].CopyFrom(helper.make_tensor("W", TensorProto.STRING, [1],
                                                           [b"evil"]))
    return model


def _dims_lie():
    model = _onnx_model()
    del model.graph.initializer[0].dims[:]
    model.graph.initializer[0].dims.extend([1, 16, 300000])
    return model


@pytest.mark.parametrize("case", sorted(CRAFTED_ONNX))
@pytest.mark.parametrize("as_file", [False, True])
def test_crafted_onnx(tmp_path, case, as_file):
    make, pattern = CRAFTED_ONNX[case]
    model = make()
    if as_file:
        path = tmp_path / "crafted.onnx"
        path.write_bytes(model.SerializeToString())
        model = path
    with pytest.raises(ValueError, match=pattern):
        fastlstm.LSTM.from_onnx(model)


def test_onnx_bytes_and_wrong_types():
    with pytest.raises(ValueError, match=r"not a readable ONNX model|has no LSTM node"):
        fastlstm.LSTM.from_onnx(PNG)
    with pytest.raises(ValueError, match=r"not a readable ONNX model|does not exist"):
        fastlstm.LSTM.from_onnx(12)
    with pytest.raises(ValueError, match=r"node='nope' is not an LSTM node"):
        fastlstm.LSTM.from_onnx(_onnx_model(), node="nope")


# --- from_onnx: chains, folded weights, subgraphs, external data ----------------------------

def _folded(edit):
    """The folded-weights model of test_loaders_onnx_graphs, edited."""
    model, _ = _folded_weights_model(False)
    edit(model.graph)
    return model


def _lstm_input(graph, index, name):
    graph.node[-1].input[index] = name


def _insert(graph, *nodes, inits=()):
    for node in reversed(nodes):
        graph.node.insert(len(graph.node) - 1, node)
    graph.initializer.extend(inits)


def _int64(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _broadcast_bomb(graph):
    # (1, 2**20) + (2**20, 1) would be 2**40 floats: refused before the evaluator runs
    _insert(graph, helper.make_node("Add", ["row", "col"], ["bomb"]),
            inits=[numpy_helper.from_array(np.zeros((1, 1 << 20), np.float32), "row"),
                   numpy_helper.from_array(np.zeros((1 << 20, 1), np.float32), "col")])
    _lstm_input(graph, 1, "bomb")


def _cycle(graph):
    _insert(graph, helper.make_node("Identity", ["loop_b"], ["loop_a"]),
            helper.make_node("Identity", ["loop_a"], ["loop_b"]))
    _lstm_input(graph, 1, "loop_a")


def _long_cone(graph):
    names = ["W"] + [f"W_id{k}" for k in range(600)]
    _insert(graph, *[helper.make_node("Identity", [a], [b]) for a, b in zip(names, names[1:])])
    _lstm_input(graph, 1, names[-1])


def _string_cone(graph):
    _insert(graph, helper.make_node("Cast", ["W"], ["W_text"], to=TensorProto.STRING))
    _lstm_input(graph, 1, "W_text")


def _bad_gather(graph):
    _insert(graph, helper.make_node("Gather", ["W", "far"], ["W_far"], axis=0),
            inits=[_int64("far", [5])])
    _lstm_input(graph, 1, "W_far")


def _reshape_lies(graph):
    _insert(graph, helper.make_node("Reshape", ["W", "lie"], ["W_lie"]),
            inits=[_int64("lie", [1 << 40, 16, 3])])
    _lstm_input(graph, 1, "W_lie")


def _nested_ifs(depth):
    """If nodes nested `depth` deep in their then branches (else: a leaf), no LSTM."""
    leaf = helper.make_graph([helper.make_node("Constant", [], ["out"], value_floats=[1.0])],
                             "leaf", [], [helper.make_tensor_value_info(
                                 "out", TensorProto.FLOAT, [1])])
    graph = leaf
    for k in range(depth):
        node = helper.make_node("If", ["cond"], ["out"], name=f"If_{k}", then_branch=graph,
                                else_branch=leaf)
        graph = helper.make_graph([node], f"g{k}", [], [helper.make_tensor_value_info(
            "out", TensorProto.FLOAT, [1])])
    graph.input.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, []))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


CRAFTED_ONNX_GRAPHS = {
    "broadcast_bomb": (lambda: _folded(_broadcast_bomb), r"cannot be folded: .*elements"),
    "cone_cycle": (lambda: _folded(_cycle), r"W \('loop_a'\) is computed from constants but "
                                            r"cannot be folded"),
    "cone_too_long": (lambda: _folded(_long_cone), r"computed by more than 512 nodes"),
    "cone_folds_to_strings": (lambda: _folded(_string_cone), r"cannot be folded|not a real"),
    "cone_gather_out_of_range": (lambda: _folded(_bad_gather), r"cannot be folded"),
    "cone_reshape_lies": (lambda: _folded(_reshape_lies), r"cannot be folded"),
    "deeply_nested_ifs": (lambda: _nested_ifs(20), r"no LSTM node"),  # protobuf caps nesting
    "chain_bridge_not_layout": (lambda: _chain_with(lambda g: g.node[1].CopyFrom(
        helper.make_node("Relu", ["Y_0"], ["Yt_0"]))), r"do not form one chain"),
    "chain_bridge_shape_lies": (lambda: _chain_with(lambda g: g.initializer.append(
        _int64("shape_0", [1 << 40, -1, 8]))), r"do not form one chain"),
    "chain_bridge_loops": (lambda: _chain_with(lambda g: g.node[1].input.__setitem__(
        0, "X_1")), r"do not form one chain"),
}


def _chain_with(edit):
    model = _chain_model("bidirectional", layers=2, seed=1)
    graph = model.graph
    names = {init.name for init in graph.initializer}
    edit(graph)
    seen = set()
    unique = []
    for init in reversed(list(graph.initializer)):  # a replaced initializer: the last wins
        if init.name not in seen:
            seen.add(init.name)
            unique.append(init)
    del graph.initializer[:]
    graph.initializer.extend(reversed(unique))
    assert names <= seen
    return model


@pytest.mark.parametrize("case", sorted(CRAFTED_ONNX_GRAPHS))
def test_crafted_onnx_graphs(case):
    make, pattern = CRAFTED_ONNX_GRAPHS[case]
    with pytest.raises(ValueError, match=pattern):
        fastlstm.LSTM.from_onnx(make())


def _external_model(tmp_path, edit=None):
    model = _chain_model("bidirectional", layers=2, seed=2)
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.data", size_threshold=64)
    if edit is not None:
        model = onnx.load(str(path), load_external_data=False)
        tensor = next(t for t in model.graph.initializer if t.name == "W_0")
        entries = {e.key: e for e in tensor.external_data}
        edit(tensor, entries)
        path.write_bytes(model.SerializeToString())
    return path


def _set_entry(key, value):
    def edit(tensor, entries):
        if key in entries:
            entries[key].value = value
        else:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return edit


EXTERNAL = {
    "length_past_the_file": _set_entry("length", str(1 << 30)),
    "offset_past_the_file": _set_entry("offset", str(1 << 30)),
    "offset_not_a_number": _set_entry("offset", "twelve"),
    "location_outside": _set_entry("location", "../../../../../../etc/passwd"),
    "location_absolute": _set_entry("location", "/etc/passwd"),
    "location_missing": _set_entry("location", "no_such.data"),
    "dims_larger_than_data": lambda tensor, entries: tensor.dims.__setitem__(2, 1 << 20),
}


@pytest.mark.parametrize("case", sorted(EXTERNAL))
def test_crafted_external_data(tmp_path, case):
    path = _external_model(tmp_path, EXTERNAL[case])
    with pytest.raises(ValueError, match=r"external data cannot be read|declares shape|"
                                         r"do not agree|not a readable"):
        fastlstm.LSTM.from_onnx(str(path), node=["lstm_0", "lstm_1"])


def test_fuzz_onnx_graphs(tmp_path):
    """Structured fuzz of the new ONNX paths: a chain (bridge ops, their constants), a folded
    cone and an external-data file, with one node input, integer constant or data byte range
    replaced at random."""
    ext_path = _external_model(tmp_path)
    ext_data = (tmp_path / "ext.data").read_bytes()

    @FUZZ
    @given(st.data())
    def run(data):
        which = data.draw(st.sampled_from(["chain", "folded", "external"]))
        if which == "external":
            (tmp_path / "ext.data").write_bytes(_mutate(ext_data, data.draw(_mutations())))
            source = str(ext_path)
        else:
            source = _chain_model("bidirectional", layers=2, seed=1) if which == "chain" \
                else _folded_weights_model(True)[0]
            graph = source.graph
            if data.draw(st.booleans()):
                ints = [t for t in graph.initializer if t.data_type == TensorProto.INT64]
                ints += [a.t for n in graph.node if n.op_type == "Constant"
                         for a in n.attribute if a.name == "value"]
                target = data.draw(st.sampled_from(ints))
                values = data.draw(st.lists(st.integers(-2**40, 2**40), min_size=0,
                                            max_size=4))
                target.CopyFrom(numpy_helper.from_array(np.array(values, np.int64),
                                                        target.name))
            else:
                node = data.draw(st.sampled_from(list(graph.node)))
                names = sorted({n for x in graph.node for n in x.output} |
                               {t.name for t in graph.initializer} | {"X", ""})
                if node.input:
                    k = data.draw(st.integers(0, len(node.input) - 1))
                    node.input[k] = data.draw(st.sampled_from(names))
        try:
            loaded = fastlstm.LSTM.from_onnx(source)
        except CLEAN:
            return
        _exercise(loaded)

    run()


# --- from_tf1_checkpoint: damaged checkpoints ---------------------------------------------------

TF1_PREFIX = DATA / "tiny_lstm.ckpt"
TF1_PARTS = {"index": ".index", "data": ".data-00000-of-00001"}


def _tf1_copy(tmp_path, part=None, content=None):
    prefix = tmp_path / "model.ckpt"
    for name, suffix in TF1_PARTS.items():
        source = pathlib.Path(str(TF1_PREFIX) + suffix).read_bytes()
        pathlib.Path(str(prefix) + suffix).write_bytes(content if name == part else source)
    return prefix


def test_tf1_checkpoint_valid_and_missing_parts(tmp_path):
    prefix = _tf1_copy(tmp_path)
    _exercise(fastlstm.LSTM.from_tf1_checkpoint(prefix))
    _exercise(fastlstm.inspection.load_source(str(prefix)))
    pathlib.Path(str(prefix) + TF1_PARTS["data"]).unlink()
    with pytest.raises(ValueError, match=r"model.ckpt"):
        fastlstm.LSTM.from_tf1_checkpoint(prefix)
    pathlib.Path(str(prefix) + TF1_PARTS["index"]).unlink()
    with pytest.raises(ValueError, match=r"model.ckpt.* does not exist"):
        fastlstm.LSTM.from_tf1_checkpoint(prefix)


@pytest.mark.parametrize("case", sorted(FOREIGN))
@pytest.mark.parametrize("part", sorted(TF1_PARTS))
def test_tf1_checkpoint_damaged(tmp_path, part, case):
    valid = pathlib.Path(str(TF1_PREFIX) + TF1_PARTS[part]).read_bytes()
    prefix = _tf1_copy(tmp_path, part, FOREIGN[case](valid))
    with pytest.raises(ValueError, match=r"model.ckpt"):
        fastlstm.LSTM.from_tf1_checkpoint(prefix)


@pytest.mark.parametrize("part", sorted(TF1_PARTS))
def test_fuzz_tf1_checkpoint(tmp_path, part):
    valid = pathlib.Path(str(TF1_PREFIX) + TF1_PARTS[part]).read_bytes()

    @FUZZ
    @given(_mutations())
    def run(m):
        prefix = _tf1_copy(tmp_path, part, _mutate(valid, m))
        try:
            model = fastlstm.LSTM.from_tf1_checkpoint(prefix)
        except CLEAN:
            return
        _exercise(model)

    run()


# --- from_keras: crafted files -------------------------------------------------------------

def _keras_with(tmp_path, config=None, weights=None, name="crafted.keras"):
    with zipfile.ZipFile(KERAS_FILE) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    if config is not None:
        entries["config.json"] = config if isinstance(config, bytes) else json.dumps(config)
    if weights is not None:
        entries["model.weights.h5"] = weights
    path = tmp_path / name
    path.write_bytes(_zip_of(entries))
    return path


def _h5_bytes(edit):
    with zipfile.ZipFile(KERAS_FILE) as z:
        blob = io.BytesIO(z.read("model.weights.h5"))
    with h5py.File(blob, "a") as f:
        edit(f)
    return blob.getvalue()


def _lstm_vars(f):
    found = []
    f.visititems(lambda name, obj: found.append(name) if name.endswith("cell/vars") else None)
    return f[found[0]]


def _replace(f, key, data=None, **kwargs):
    group = _lstm_vars(f)
    del group[key]
    group.create_dataset(key, data=data, **kwargs)


def _keras_config():
    with zipfile.ZipFile(KERAS_FILE) as z:
        return json.loads(z.read("config.json"))


def _layer_config(config):
    return config["config"]["layers"][1]["config"]


def _edited_config(edit):
    config = _keras_config()
    edit(config)
    return config


CRAFTED_KERAS = {
    "config_not_json": (dict(config=b"{oops"), r"crafted.keras"),
    "config_nested_bomb": (dict(config=b"[" * 100000), r"crafted.keras"),
    "config_layers_number": (dict(config=_edited_config(
        lambda c: c["config"].__setitem__("layers", 5))), r"crafted.keras"),
    "activation_unknown": (dict(config=_edited_config(
        lambda c: _layer_config(c).__setitem__("activation", "gelu"))),
        r"'gelu' has no exact fastlstm equivalent"),
    "activation_number": (dict(config=_edited_config(
        lambda c: _layer_config(c).__setitem__("activation", 3))), r"activation 3 has no exact"),
    "config_is_list": (dict(config=_edited_config(
        lambda c: c["config"]["layers"].__setitem__(1, [1, 2]))), r"crafted.keras"),
    "layer_config_renamed": (dict(config=_edited_config(
        lambda c: _layer_config(c).__setitem__("name", "other"))),
        r"crafted.keras.*no layer named 'lstm' in the config"),
    "go_backwards": (dict(config=_edited_config(
        lambda c: _layer_config(c).__setitem__("go_backwards", True))), r"go_backwards=True"),
    "no_weights_entry": (dict(weights=b""), r"crafted.keras"),
    "weights_png": (dict(weights=PNG), r"crafted.keras"),
    "kernel_wrong_shape": (dict(weights=_h5_bytes(lambda f: _replace(
        f, "0", np.zeros((3, 15), np.float32)))), r"holds no LSTM layer"),
    "bias_wrong_shape": (dict(weights=_h5_bytes(lambda f: _replace(
        f, "2", np.zeros(17, np.float32)))), r"holds no LSTM layer"),
    "nan_kernel": (dict(weights=_h5_bytes(lambda f: _replace(
        f, "1", np.full((4, 16), np.nan, np.float32)))), r"contains NaN or Inf"),
    "string_kernel": (dict(weights=_h5_bytes(lambda f: _replace(
        f, "0", np.array([[b"ab"] * 16] * 3)))), r"crafted.keras"),
    "huge_declared_kernel": (dict(weights=_h5_bytes(lambda f: (
        _replace(f, "0", shape=(1 << 24, 1 << 26), dtype="f4", chunks=(1, 1024)),
        _replace(f, "1", shape=(1 << 24, 1 << 26), dtype="f4", chunks=(1, 1024)),
        _replace(f, "2", shape=(1 << 26,), dtype="f4", chunks=(1024,))))),
        r"GiB|memory"),
    "oversized_declared_kernel": (dict(weights=_h5_bytes(lambda f: (
        _replace(f, "0", shape=(1 << 30, 16), dtype="f4", chunks=(1024, 16)),))),
        r"input_size must be <= 16777216"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED_KERAS))
def test_crafted_keras(tmp_path, case):
    kwargs, pattern = CRAFTED_KERAS[case]
    path = _keras_with(tmp_path, **kwargs)
    with pytest.raises((ValueError, MemoryError), match=pattern):
        fastlstm.LSTM.from_keras(path)


def test_keras_config_without_activations_means_keras_defaults(tmp_path):
    """A config entry that omits the activations gets Keras's defaults, as Keras does."""
    config = _edited_config(lambda c: c["config"]["layers"][1].__setitem__(
        "config", {"name": "lstm", "cell": 7}))
    model = fastlstm.LSTM.from_keras(_keras_with(tmp_path, config=config))
    assert model.layer_options[0].activation[0] == "tanh"
    _exercise(model)


def test_keras_wrong_argument_types():
    with pytest.raises(TypeError, match=r"expected a Keras 3 layer or model, or the path"):
        fastlstm.LSTM.from_keras(12)
    with pytest.raises(TypeError, match=r"expected a Keras 3 layer or model"):
        fastlstm.LSTM.from_keras(None)


# --- bounded fuzz: random mutations of valid files ---------------------------------------

@pytest.fixture(scope="module", autouse=True)
def _hang_guard():
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _mutations():
    edit = st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255))
    return st.fixed_dictionaries({
        "edits": st.lists(edit, min_size=0, max_size=8),
        "cut": st.one_of(st.none(), st.floats(0, 1)),
        "insert": st.one_of(st.none(), st.tuples(st.floats(0, 1), st.binary(min_size=1,
                                                                             max_size=16))),
    })


def _mutate(data, m):
    data = bytearray(data)
    for where, value in m["edits"]:
        data[int(where * len(data))] = value
    if m["insert"] is not None:
        where, blob = m["insert"]
        at = int(where * len(data))
        data[at:at] = blob
    if m["cut"] is not None:
        data = data[:int(m["cut"] * len(data))]
    return bytes(data)


def _fuzz_one(loader, path, content):
    path.write_bytes(content)
    try:
        model = loader(path)
    except CLEAN:
        return
    _exercise(model)


FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_fuzz_file_loaders(files, tmp_path, kind):
    valid = files[kind].read_bytes()
    target = tmp_path / files[kind].name

    @FUZZ
    @given(_mutations())
    def run(m):
        _fuzz_one(LOADERS[kind], target, _mutate(valid, m))

    run()


def test_fuzz_onnx_tensors_and_attributes():
    """Structured fuzz of a valid ONNX node: every field of W and the attributes replaced."""
    @FUZZ
    @given(st.data())
    def run(data):
        model = _onnx_model()
        w = model.graph.initializer[0]
        field = data.draw(st.sampled_from(["dims", "data_type", "raw_data", "attr", "name"]))
        if field == "dims":
            del w.dims[:]
            w.dims.extend(data.draw(st.lists(st.integers(-3, 2**40), max_size=5)))
        elif field == "data_type":
            w.data_type = data.draw(st.integers(0, 25))
        elif field == "raw_data":
            w.raw_data = data.draw(st.binary(max_size=400))
        elif field == "name":
            w.name = data.draw(st.text(max_size=3))
        else:
            node = model.graph.node[0]
            attr = data.draw(st.sampled_from(["hidden_size", "direction", "activations",
                                              "clip", "layout", "input_forget",
                                              "activation_alpha"]))
            value = data.draw(st.one_of(st.integers(-2**40, 2**40), st.floats(),
                                        st.text(max_size=8), st.lists(st.text(max_size=8),
                                                                      max_size=7),
                                        st.lists(st.floats(), max_size=4, min_size=1)))
            if isinstance(value, list) and not value:
                value = [""]
            node.attribute.append(helper.make_attribute(attr, value))
        try:
            loaded = fastlstm.LSTM.from_onnx(model)
        except CLEAN:
            return
        _exercise(loaded)

    run()
