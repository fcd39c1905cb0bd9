"""save / fastlstm.load: round trips, and clear errors for every kind of bad file."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import fastlstm
from fastlstm.io import CONFIG_KEY

MODELS = {
    "plain": lambda: fastlstm.LSTM(3, 4, seed=1),
    "deep_bidirectional_time_major": lambda: fastlstm.LSTM(3, 5, 3, bidirectional=True,
                                                           batch_first=False, seed=2),
    "projection_peepholes_clips": lambda: fastlstm.LSTM(
        2, 6, 2, proj_size=3, peepholes=True, cell_clip=0.5, gate_clip=2.0, proj_clip=0.4,
        forget_bias=1.0, seed=3),
    "activations": lambda: fastlstm.LSTM(
        3, 4, activation=("scaled_tanh", 0.7, 1.3), recurrent_activation=("hard_sigmoid", 0.2,
                                                                          0.5),
        output_activation="softsign", input_forget=True, seed=4),
    "cell": lambda: fastlstm.LSTMCell(3, 5, proj_size=2, peepholes=True, seed=5),
    "mixed_layers": lambda: fastlstm.LSTM.from_cells(
        [fastlstm.LSTMCell(3, 4, forget_bias=1.0, seed=8),
         fastlstm.LSTMCell(4, 6, proj_size=2, peepholes=True, activation="relu", seed=9)]),
}


def _run(model, x):
    if isinstance(model, fastlstm.LSTMCell):
        return model(x[:, 0])
    if not model.batch_first:
        x = x.transpose(1, 0, 2)
    return model(x, lengths=None)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_round_trip(tmp_path, kind):
    model = MODELS[kind]()
    path = tmp_path / "model.bin"  # written exactly there: no suffix is added
    model.save(path)
    assert os.listdir(tmp_path) == ["model.bin"]
    loaded = fastlstm.load(path)
    assert type(loaded) is type(model)
    assert repr(loaded) == repr(model)
    assert loaded.weights.keys() == model.weights.keys()
    for name, arr in model.weights.items():
        assert np.array_equal(loaded.weights[name], arr)
    x = np.random.default_rng(0).standard_normal((2, 4, model.input_size)).astype(np.float32)
    y0, states0 = _run(model, x)
    y1, states1 = _run(loaded, x)
    assert np.array_equal(y0, y1)
    for s0, s1 in zip(states0, states1):  # h, c: arrays, or per-layer tuples when sizes differ
        assert all(np.array_equal(a, b) for a, b in zip(s0, s1))
    if isinstance(model, fastlstm.LSTM):
        assert loaded.layer_options == model.layer_options
    with np.load(path, allow_pickle=False) as npz:  # the documented layout
        config = json.loads(str(npz[CONFIG_KEY]))
        assert set(npz.files) == set(model.weights) | {CONFIG_KEY}
    assert config["format"] == "fastlstm" and config["version"] == 1


def test_loaded_from_torch_state_dict_names(tmp_path):
    """The weights in the file are PyTorch names: a state dict that from_torch reads."""
    model = fastlstm.LSTM(3, 4, 2, bidirectional=True, proj_size=2, seed=6, batch_first=False)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as npz:
        sd = {k: npz[k] for k in npz.files if k != CONFIG_KEY}
    again = fastlstm.LSTM.from_torch(sd)
    x = np.ones((5, 2, 3), np.float32)
    assert np.array_equal(again(x)[0], model(x)[0])


def _rewrite(src, dst, change):
    """Copy an .npz, letting ``change(files)`` edit the dict of arrays first."""
    with np.load(src, allow_pickle=False) as npz:
        files = {k: npz[k] for k in npz.files}
    change(files)
    with open(dst, "wb") as fh:
        np.savez(fh, **files)


def _config_edit(edit):
    def change(files):
        config = json.loads(str(files[CONFIG_KEY]))
        edit(config)
        files[CONFIG_KEY] = np.array(json.dumps(config))
    return change


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "good.npz"
    fastlstm.LSTM(3, 4, 2, proj_size=2, seed=7).save(path)
    return path


def _delete(name):
    def change(files):
        del files[name]
    return change


def _scale_weight(files):
    files["weight_hh_l1"] = files["weight_hh_l1"] * 1.0001


def _nan_weight(files):
    files["bias_ih_l0"] = np.full_like(files["bias_ih_l0"], np.nan)


def _extra(files):
    files["surprise"] = np.zeros(3, np.float32)


def _hidden(config):
    config["layers"][0]["hidden_size"] = 5


BAD_EDITS = {
    "missing weight": (_delete("weight_hr_l1"), r"lacks the weights \['weight_hr_l1'\]"),
    "no config": (_delete(CONFIG_KEY), "not a fastlstm model"),
    "weight altered": (_scale_weight, "do not match the digest"),
    "extra array": (_extra, r"not weights of the model: \['surprise'\]"),
    "NaN weight": (_nan_weight, "NaN"),
    "future version": (_config_edit(lambda c: c.update(version=3)), "format version 3"),
    "version 2, no precision": (_config_edit(lambda c: c.update(version=2)),
                                "version 2 goes with precision"),
    "precision, version 1": (_config_edit(lambda c: c.update(precision="int8")),
                             "version 2 goes with precision"),
    "foreign format": (_config_edit(lambda c: c.update(format="other")), "format 'fastlstm'"),
    "bad kind": (_config_edit(lambda c: c.update(kind="GRU")), "kind 'GRU'"),
    "wrong size": (_config_edit(_hidden), "must have shape"),
    "bad option": (_config_edit(lambda c: c["layers"][0]["options"].update(gate_clip=-1.0)),
                   "gate_clip must be > 0"),
    "unknown option": (_config_edit(lambda c: c["layers"][0]["options"].update(dropout=0.1)),
                       "dropout"),
    "bool as str": (_config_edit(lambda c: c.update(batch_first="yes")), "'batch_first'"),
}


@pytest.mark.parametrize("case", sorted(BAD_EDITS))
def test_tampered_files(saved, tmp_path, case):
    change, message = BAD_EDITS[case]
    bad = tmp_path / "bad.npz"
    _rewrite(saved, bad, change)
    with pytest.raises(ValueError, match=message) as info:
        fastlstm.load(bad)
    assert "bad.npz" in str(info.value)


def test_damaged_and_foreign_files(saved, tmp_path):
    data = saved.read_bytes()
    cases = {
        "missing.npz": None,
        "empty.npz": b"",
        "truncated.npz": data[: len(data) // 2],
        "flipped.npz": data[:400] + bytes([data[400] ^ 0xFF]) + data[401:],
        "text.npz": b"hello, I am not a model\n",
        "npy.npz": None,
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
    np.save(tmp_path / "npy.npz", np.zeros(3))  # np.save appends .npy
    os.replace(tmp_path / "npy.npz.npy", tmp_path / "npy.npz")
    with zipfile.ZipFile(tmp_path / "foreign.npz", "w") as z:
        z.writestr("readme.txt", "a zip, not an npz")
    np.savez(tmp_path / "other.npz", a=np.arange(3))
    for name in list(cases) + ["foreign.npz", "other.npz"]:
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            fastlstm.load(tmp_path / name)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_payload_is_never_executed(saved, tmp_path):
    marker = tmp_path / "executed"
    bad = tmp_path / "pickle.npz"

    def change(files):
        files["weight_ih_l0"] = np.array([_Payload(str(marker))], dtype=object)

    _rewrite(saved, bad, change)
    with pytest.raises(ValueError, match="pickle.npz"):
        fastlstm.load(bad)
    assert not marker.exists()


def test_save_errors(tmp_path):
    with pytest.raises(TypeError, match="LSTM or LSTMCell"):
        fastlstm.io.save(object(), tmp_path / "x.npz")
    with pytest.raises(OSError):
        fastlstm.LSTM(2, 2).save(tmp_path / "no" / "such" / "dir.npz")
    assert os.listdir(tmp_path) == []


def test_importing_fastlstm_and_its_loaders_imports_no_framework(tmp_path):
    code = (
        "import sys\n"
        "import fastlstm, fastlstm.io\n"
        "import fastlstm.loaders.torch, fastlstm.loaders.keras, fastlstm.loaders.tf1\n"
        "import fastlstm.loaders.onnx\n"
        f"fastlstm.LSTM(2, 3).save({str(tmp_path / 'm.npz')!r})\n"
        f"fastlstm.load({str(tmp_path / 'm.npz')!r})\n"
        "import numpy as np\n"
        "sd = {'weight_ih_l0': np.zeros((8, 1)), 'weight_hh_l0': np.zeros((8, 2))}\n"
        "fastlstm.LSTM.from_torch(sd)\n"
        "fastlstm.LSTMCell.from_tf1({'kernel': np.zeros((3, 8)), 'bias': np.zeros(8)})\n"
        "bad = [m for m in ('torch', 'tensorflow', 'keras', 'tf_keras', 'onnx', 'onnxruntime',\n"
        "                   'h5py') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=tmp_path)
