"""PyTorch (.pt state dicts, .safetensors) and Keras 2 legacy HDF5 (.h5 full model and weights)
files that are empty, truncated, foreign, crafted to mislead or to run code, and a bounded
fuzz of random byte mutations of valid files. Each file either loads into a model that runs
(and agrees with the reference on its own weights) or is refused with a ValueError /
TypeError naming the problem; never another exception, a crash, a hang or code execution.

The valid .h5 files are written by tf_keras in one subprocess (Keras 2 needs
TF_USE_LEGACY_KERAS=1 before TensorFlow is imported); the fuzz is derandomised.
"""
import faulthandler
import json
import os
import struct
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from safetensors.torch import save_file

import fastlstm
from fastlstm import reference

from conftest import assert_close

CLEAN = (ValueError, TypeError)
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
       b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7"
       b"\x35\x81\x84\x00\x00\x00\x00IEND\xaeB`\x82")

_KERAS2_FILES = """
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np, tf_keras as keras
inp = keras.Input((5, 3))
lstm = keras.layers.LSTM(4, return_sequences=True, recurrent_activation="hard_sigmoid",
                         name="lstm")
model = keras.Model(inp, keras.layers.Dense(2, name="dense")(lstm(inp)))
rng = np.random.default_rng(0)
model.set_weights([rng.uniform(-0.5, 0.5, w.shape) for w in model.get_weights()])
model.save(os.path.join(sys.argv[1], "model.h5"))
model.save_weights(os.path.join(sys.argv[1], "weights.h5"))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("valid")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _KERAS2_FILES, str(folder)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch.manual_seed(0)
    net = torch.nn.Sequential()
    net.add_module("rnn", torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2))
    net.add_module("head", torch.nn.Linear(4, 2))
    torch.save(net.state_dict(), folder / "model.pt")
    save_file(net.state_dict(), str(folder / "model.safetensors"))
    return {"pt": folder / "model.pt", "safetensors": folder / "model.safetensors",
            "h5": folder / "model.h5", "weights_h5": folder / "weights.h5"}


LOADERS = {
    "pt": fastlstm.LSTM.from_torch,
    "safetensors": fastlstm.LSTM.from_torch,
    "h5": fastlstm.LSTM.from_keras,
    "weights_h5": fastlstm.LSTM.from_keras,
}
SUFFIX = {"pt": ".pt", "safetensors": ".safetensors", "h5": ".h5", "weights_h5": ".h5"}


def _exercise(model):
    shape = (2, 3, model.input_size) if model.batch_first else (3, 2, model.input_size)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    y, _ = model(x)
    assert_close(y, reference.run(model, x)[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_valid_files_load(files, kind):
    model = LOADERS[kind](files[kind])
    _exercise(model)
    assert fastlstm.inspect(files[kind])[0].supported


# --- empty, truncated, foreign -------------------------------------------------------------

FOREIGN = {
    "empty": lambda valid: b"",
    "png": lambda valid: PNG,
    "text": lambda valid: b"hello, I am not a model\n" * 10,
    "half": lambda valid: valid[:len(valid) // 2],
    "head": lambda valid: valid[:64],
    "tail": lambda valid: valid[len(valid) // 2:],
    "zeros": lambda valid: bytes(len(valid)),
}


@pytest.mark.parametrize("case", sorted(FOREIGN))
@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_foreign_and_truncated_files_are_refused(files, tmp_path, kind, case):
    path = tmp_path / ("bad" + SUFFIX[kind])
    path.write_bytes(FOREIGN[case](files[kind].read_bytes()))
    with pytest.raises(CLEAN, match=r"bad\.|no nn.LSTM|no LSTM"):
        LOADERS[kind](path)
    with pytest.raises(CLEAN):
        fastlstm.inspect(path)


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_missing_file_and_directory(tmp_path, kind):
    with pytest.raises(ValueError, match="does not exist|SavedModel|directory"):
        LOADERS[kind](tmp_path / ("missing" + SUFFIX[kind]))
    with pytest.raises(ValueError):
        LOADERS[kind](tmp_path)


# --- .pt: pickles that would run code, odd contents -----------------------------------------

class _RunsCode:
    """Unpickling this creates a directory: the marker that code from the file ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pt_pickle_that_runs_code_is_refused(tmp_path):
    marker = str(tmp_path / "code_ran")
    torch.save({"weight_ih_l0": torch.zeros(16, 3), "payload": _RunsCode(marker)},
               tmp_path / "evil.pt")
    for call in (lambda: fastlstm.LSTM.from_torch(tmp_path / "evil.pt"),
                 lambda: fastlstm.LSTMCell.from_torch(tmp_path / "evil.pt"),
                 lambda: fastlstm.inspect(tmp_path / "evil.pt")):
        with pytest.raises(ValueError, match=r"evil.pt' holds pickled Python objects.*"
                                             r"trust_pickle=True"):
            call()
    assert not os.path.exists(marker)


def _pt(tmp_path, obj, name="crafted.pt"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def _lstm_sd(**changes):
    torch.manual_seed(1)
    sd = dict(torch.nn.LSTM(3, 4).state_dict())
    for key, value in changes.items():
        if value is None:
            del sd[key]
        else:
            sd[key] = value
    return sd


def _nested(value, depth):
    for k in range(depth):
        value = {f"level{k}": value}
    return value


CRAFTED_PT = {
    "a_tensor": (torch.zeros(3), r"holds a Tensor, not a state dict"),
    "a_list": ([torch.zeros(3)], r"holds a list, not a state dict"),
    "no_lstm": ({"fc.weight": torch.zeros(2, 2)}, r"holds no nn.LSTM"),
    "nan": (_lstm_sd(weight_hh_l0=torch.full((16, 4), float("nan"))), r"NaN or Inf"),
    "wrong_shape": (_lstm_sd(weight_ih_l0=torch.zeros(16, 3, 2)), r"weight_ih_l0"),
    "bias_short": (_lstm_sd(bias_ih_l0=torch.zeros(5)), r"bias_ih_l0 must have shape \(16,\)"),
    "missing_hh": (_lstm_sd(weight_hh_l0=None), r"holds no nn.LSTM|missing weight_hh_l0"),
    "int_weights": (_lstm_sd(weight_ih_l0=torch.zeros(16, 3, dtype=torch.int64)), None),
    "complex": (_lstm_sd(weight_ih_l0=torch.zeros(16, 3, dtype=torch.complex64)), r"."),
    "deep_nesting": (_nested(_lstm_sd(), 10), r"holds no nn.LSTM"),
    "huge_layer_index": (dict(_lstm_sd(), weight_ih_l99999999=torch.zeros(16, 8)),
                         r"missing weight_ih_l1"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED_PT))
def test_crafted_pt(tmp_path, case):
    obj, pattern = CRAFTED_PT[case]
    path = _pt(tmp_path, obj)
    if pattern is None:   # integer weights are real numbers: they load
        _exercise(fastlstm.LSTM.from_torch(path))
        return
    with pytest.raises(CLEAN, match=pattern):
        fastlstm.LSTM.from_torch(path)


# --- .safetensors: crafted headers -----------------------------------------------------------

def _safetensors(header, data=b"", length=None):
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def _entry(dtype, shape, start, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


def _lstm_header(dtype="F32", hh_shape=(16, 4), hh_bytes=None):
    entries, offset = {}, 0
    for name, shape in (("weight_ih_l0", (16, 3)), ("weight_hh_l0", hh_shape),
                        ("bias_ih_l0", (16,)), ("bias_hh_l0", (16,))):
        size = 4 * int(np.prod(shape))
        if name == "weight_hh_l0" and hh_bytes is not None:
            size = hh_bytes
        entries[name] = _entry(dtype, list(shape), offset, offset + size)
        offset += size
    return entries, offset


def _crafted_safetensors(kind):
    header, size = _lstm_header()
    if kind == "header_length_huge":
        return _safetensors(header, bytes(size), length=1 << 62)
    if kind == "header_not_json":
        return _safetensors(b"{not json", bytes(size))
    if kind == "offsets_past_end":
        return _safetensors(header, bytes(size // 2))
    if kind == "huge_declared_shape":
        header, size = _lstm_header(hh_shape=(1 << 30, 1 << 28), hh_bytes=64)
        return _safetensors(header, bytes(size))
    if kind == "bf16":
        header, size = _lstm_header(dtype="BF16")
        return _safetensors(header, bytes(size))
    if kind == "string_dtype":
        header, size = _lstm_header(dtype="STR")
        return _safetensors(header, bytes(size))
    if kind == "header_is_list":
        return _safetensors([1, 2, 3])
    raise KeyError(kind)


@pytest.mark.parametrize("kind", ["header_length_huge", "header_not_json", "offsets_past_end",
                                  "huge_declared_shape", "bf16", "string_dtype",
                                  "header_is_list"])
def test_crafted_safetensors(tmp_path, kind):
    path = tmp_path / "crafted.safetensors"
    path.write_bytes(_crafted_safetensors(kind))
    with pytest.raises(CLEAN, match=r"crafted.safetensors|must have shape|holds no nn.LSTM"):
        fastlstm.LSTM.from_torch(path)


def test_safetensors_float16_loads(tmp_path):
    torch.manual_seed(2)
    lstm = torch.nn.LSTM(3, 4)
    save_file({k: v.half() for k, v in lstm.state_dict().items()},
              str(tmp_path / "half.safetensors"))
    model = fastlstm.LSTM.from_torch(tmp_path / "half.safetensors")
    np.testing.assert_allclose(model.weights["weight_ih_l0"],
                               lstm.weight_ih_l0.detach().half().float().numpy())


# --- legacy .h5: crafted groups and attributes -----------------------------------------------

def _edited_h5(files, tmp_path, edit, source="h5"):
    path = tmp_path / "crafted.h5"
    path.write_bytes(files[source].read_bytes())
    with h5py.File(path, "a") as f:
        edit(f)
    return path


def _lstm_group(f):
    root = f["model_weights"] if "model_weights" in f else f
    return root["lstm"]


def _replace(group, name, **kwargs):
    del group[name]
    group.create_dataset(name, **kwargs)


def _set_config(f, change):
    config = json.loads(f.attrs["model_config"])
    change(next(l for l in config["config"]["layers"] if l["config"]["name"] == "lstm"))
    f.attrs["model_config"] = json.dumps(config)


CRAFTED_H5 = {
    "weight_names_missing_dataset": (lambda f: _lstm_group(f).attrs.__setitem__(
        "weight_names", [b"lstm/lstm_cell/nope:0"]), r"crafted.h5.*nope"),
    "layer_names_missing_group": (lambda f: (f["model_weights"] if "model_weights" in f else f)
                                  .attrs.__setitem__("layer_names", [b"ghost"]),
                                  r"crafted.h5.*ghost"),
    "layer_names_number": (lambda f: (f["model_weights"] if "model_weights" in f else f)
                           .attrs.__setitem__("layer_names", 7), r"crafted.h5"),
    "config_not_json": (lambda f: f.attrs.__setitem__("model_config", "{oops"), r"crafted.h5"),
    "config_nested_bomb": (lambda f: f.attrs.__setitem__("model_config", "[" * 100000),
                           r"crafted.h5"),
    "config_gelu": (lambda f: _set_config(f, lambda l: l["config"].__setitem__(
        "activation", "gelu")), r"'gelu' has no exact fastlstm equivalent"),
    "config_says_gru": (lambda f: _set_config(f, lambda l: l.__setitem__("class_name", "GRU")),
                        r"'lstm' is a GRU, which fastlstm cannot load"),
    "config_no_bias": (lambda f: _set_config(f, lambda l: l["config"].__setitem__(
        "use_bias", False)), r"holds 3 arrays where its config says 2"),
    "config_is_list": (lambda f: f.attrs.__setitem__("model_config", "[1, 2]"),
                       r"layer='lstm' is not an LSTM layer of Keras file .*crafted.h5"),
    "kernel_string": (lambda f: _replace(_lstm_group(f)["lstm/lstm_cell"], "kernel:0",
                                         data=np.array([[b"ab"] * 16] * 3)), r"not real numbers"),
    "kernel_nan": (lambda f: _replace(_lstm_group(f)["lstm/lstm_cell"], "kernel:0",
                                      data=np.full((3, 16), np.nan, np.float32)), r"NaN or Inf"),
    "kernel_wrong_shape": (lambda f: _replace(_lstm_group(f)["lstm/lstm_cell"], "kernel:0",
                                              data=np.zeros((3, 12), np.float32)),
                           r"not an LSTM cell"),
    "huge_declared_kernel": (lambda f: (
        _replace(_lstm_group(f)["lstm/lstm_cell"], "kernel:0", shape=(1 << 24, 1 << 26),
                 dtype="f4", chunks=(1, 1024)),
        _replace(_lstm_group(f)["lstm/lstm_cell"], "recurrent_kernel:0",
                 shape=(1 << 24, 1 << 26), dtype="f4", chunks=(1, 1024)),
        _replace(_lstm_group(f)["lstm/lstm_cell"], "bias:0", shape=(1 << 26,), dtype="f4",
                 chunks=(1024,))), r"GiB|memory"),
    "oversized_declared_input": (lambda f: _replace(
        _lstm_group(f)["lstm/lstm_cell"], "kernel:0", shape=(1 << 30, 16), dtype="f4",
        chunks=(1024, 16)), r"input_size must be <= 16777216"),
}


@pytest.mark.parametrize("case,source", [
    (case, source) for case in sorted(CRAFTED_H5)
    for source in (["h5"] if case.startswith("config_") else ["h5", "weights_h5"])])
def test_crafted_legacy_h5(files, tmp_path, case, source):
    """(a weights file has no model_config: the config cases apply to full models only)"""
    edit, pattern = CRAFTED_H5[case]
    path = _edited_h5(files, tmp_path, edit, source)
    with pytest.raises((ValueError, TypeError, MemoryError), match=pattern):
        fastlstm.LSTM.from_keras(path, layer="lstm") if "layer_names" not in case else \
            fastlstm.LSTM.from_keras(path)


# --- bounded fuzz: random mutations of valid files ---------------------------------------

@pytest.fixture(scope="module", autouse=True)
def _hang_guard():
    faulthandler.dump_traceback_later(180, exit=True)
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


FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_fuzz_file_loaders(files, tmp_path, kind):
    valid = files[kind].read_bytes()
    target = tmp_path / files[kind].name

    @FUZZ
    @given(_mutations())
    def run(m):
        target.write_bytes(_mutate(valid, m))
        try:
            model = LOADERS[kind](target, **({"layer": "lstm"} if "h5" in kind else
                                             {"module": "rnn"}))
        except CLEAN:
            return
        _exercise(model)

    run()
