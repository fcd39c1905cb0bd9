"""fastlstm.LSTM.from_keras / inspect against Keras 2 (tf_keras): live layers and models,
legacy HDF5 files (model.save and save_weights), SavedModel directories, CuDNNLSTM weights
and time_major layers.

Keras 2 runs once, in a subprocess (tests/_keras2_cases.py): it needs TF_USE_LEGACY_KERAS=1
before TensorFlow is imported, which must not leak into the Keras 3 tests sharing this pytest
process. The subprocess saves the files, the inputs, Keras's outputs and the outputs of the
models fastlstm loaded from the live layers; this process loads the files.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastlstm
from fastlstm.loaders.keras import repeat_last_output

TOL = 1e-5
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NET_LAYERS = ["enc", "bi", "stack"]
# what a weights-only file does not say: the activations (Keras 2 names, Keras 2 meaning)
WEIGHTS_ONLY = {"enc": dict(activation="softsign", recurrent_activation="hard_sigmoid"),
                "bi": dict(recurrent_activation="hard_sigmoid"), "stack": {}}
# Keras repeats the last output at masked steps of an LSTM / RNN, Bidirectional gives zeros
REPEATS = {"enc": True, "bi": False, "stack": True}


@pytest.fixture(scope="module")
def keras2(tmp_path_factory):
    out = tmp_path_factory.mktemp("keras2")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")]
                                                    if p]))
    proc = subprocess.run([sys.executable, os.path.join(HERE, "_keras2_cases.py"), str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out / "results.npz") as data:
        results = {k: data[k] for k in data.files}
    with open(out / "live_find.json") as fh:
        found = json.load(fh)
    return out, results, found


def _case(results, case):
    prefix = f"{case}/"
    return {k[len(prefix):]: v for k, v in results.items() if k.startswith(prefix)}


def _entries(case, key):
    return [case[f"{key}_{k}"] for k in range(len([n for n in case if n.startswith(key + "_")]))]


def _state(case, hkey="h0", ckey="c0"):
    hs, cs = _entries(case, hkey), _entries(case, ckey)
    if len({h.shape for h in hs}) == 1:
        return np.stack(hs), np.stack(cs)
    return hs, cs


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=TOL, rtol=0)


def _check(model, results, name, lengths=True, repeats=False):
    """``model`` gives Keras's outputs, final states and last outputs for case ``name``."""
    case = _case(results, name)
    lengths = results["lengths"] if lengths else None
    y, (h, c) = model(case["x"], initial_state=_state(case), lengths=lengths)
    _close(repeat_last_output(y, lengths) if repeats else y, case["y"])
    for got, want in zip(list(h) + list(c), _entries(case, "h") + _entries(case, "c")):
        _close(got, want)
    if "y_last" in case:
        y_last, _ = model(case["x"], initial_state=_state(case), lengths=lengths,
                          return_sequences=False)
        _close(y_last, case["y_last"])


@pytest.mark.parametrize("name", NET_LAYERS + ["time_major"])
def test_live_layers_and_models(keras2, name):
    """The subprocess loaded each live tf_keras layer (and the model with layer=) into
    fastlstm; its outputs match Keras's."""
    _, results, _ = keras2
    case = _case(results, name)
    for source in ([name, name + "_layer"] if name in NET_LAYERS else [name]):
        live = _case(results, f"live/{source}")
        lengths = results["lengths"] if name != "time_major" else None
        y = repeat_last_output(live["y"], lengths) if REPEATS.get(name) else live["y"]
        _close(y, case["y"])
        for got, want in zip(_entries(live, "h") + _entries(live, "c"),
                             _entries(case, "h") + _entries(case, "c")):
            _close(got, want)


@pytest.mark.parametrize("name", NET_LAYERS)
@pytest.mark.parametrize("kind", ["net.h5", "net_weights.h5", "net_savedmodel"])
def test_saved_files(keras2, kind, name):
    folder, results, _ = keras2
    overrides = WEIGHTS_ONLY[name] if kind == "net_weights.h5" else {}
    model = fastlstm.LSTM.from_keras(folder / kind, layer=name, **overrides)
    assert model.batch_first and model.bidirectional == (name == "bi")
    assert model.num_layers == (2 if name == "stack" else 1)
    _check(model, results, name, repeats=REPEATS[name])


@pytest.mark.parametrize("kind", ["cudnn.h5", "cudnn_weights.h5", "live"])
@pytest.mark.parametrize("name", ["cudnn", "bicudnn"])
def test_cudnn_lstm(keras2, kind, name):
    """CuDNNLSTM has no CPU kernel: the reference is the LSTM Keras converts its weights to
    (load_weights of the CuDNNLSTM file into an LSTM model)."""
    folder, results, _ = keras2
    if kind == "live":
        live = _case(results, f"live/{name}")
        _close(live["y"], results[f"{name}/y"])
        for got, want in zip(_entries(live, "h") + _entries(live, "c"),
                             _entries(_case(results, name), "h") +
                             _entries(_case(results, name), "c")):
            _close(got, want)
        return
    model = fastlstm.LSTM.from_keras(folder / kind, layer=name)
    _check(model, results, name, lengths=False)


@pytest.mark.parametrize("kind", ["nested.h5", "nested_weights.h5"])
def test_lstm_inside_a_nested_model(keras2, kind):
    """A nested model's HDF5 group holds its layers' weights; each is found by its name."""
    folder, results, _ = keras2
    found = {f.name: f for f in fastlstm.inspect(folder / kind)}
    assert sorted(found) == ["inner_lstm", "top"]
    assert (found["inner_lstm"].input_size, found["inner_lstm"].hidden_size) == (3, 4)
    overrides = {"recurrent_activation": "hard_sigmoid"} if "weights" in kind else {}
    model = fastlstm.LSTM.from_keras(folder / kind, layer="inner_lstm", **overrides)
    _close(model(results["nested/x"])[0], results["nested/y"])


def test_several_lstms_need_a_name(keras2):
    folder, _, _ = keras2
    with pytest.raises(ValueError, match=r"holds 2 LSTM layers \['bicudnn', 'cudnn'\]"):
        fastlstm.LSTM.from_keras(folder / "cudnn.h5")


def _summary(found):
    return {f["name"] if isinstance(f, dict) else f.name:
            (f["type"], f["input_size"], f["hidden_size"], f["num_layers"], f["bidirectional"],
             bool(f["reason"])) if isinstance(f, dict) else
            (f.type, f.input_size, f.hidden_size, f.num_layers, f.bidirectional, bool(f.reason))
            for f in found}


NET_FOUND = {
    "enc": ("LSTM", 3, 4, 1, False, False),
    "bi": ("Bidirectional(LSTM)", 4, 3, 1, True, False),
    "stack": ("RNN(StackedRNNCells[LSTMCell, LSTMCell])", 6, 2, 2, False, False),
    "simple": ("SimpleRNN", 3, 2, 1, False, True),
    "gru": ("GRU", 2, 2, 1, False, True),
}


@pytest.mark.parametrize("kind", ["live", "net.h5", "net_savedmodel", "net_weights.h5"])
def test_inspect(keras2, kind):
    folder, _, live_found = keras2
    found = live_found["net"] if kind == "live" else fastlstm.inspect(str(folder / kind))
    summary = _summary(found)
    if kind == "net_weights.h5":   # no config: the types come from names and shapes
        assert summary["stack"][0] == "RNN(StackedRNNCells[LSTMCell, LSTMCell])"
        summary = {k: v[1:] for k, v in summary.items()}
        assert summary == {k: v[1:] for k, v in NET_FOUND.items()}
    else:
        assert summary == NET_FOUND
    entries = {f["name"] if isinstance(f, dict) else f.name: f for f in found}
    gru = entries["gru"]
    reason = gru["reason"] if isinstance(gru, dict) else gru.reason
    assert "a GRU (reset and update gates" in reason
    enc = entries["enc"]
    options = enc["options"] if isinstance(enc, dict) else enc.options
    if kind != "net_weights.h5":
        assert options == {"activation": "softsign", "recurrent_activation": "hard_sigmoid",
                           "keras": 2}
    if kind != "live":
        text = repr(fastlstm.inspect(str(folder / kind)))
        assert "layer='enc'" in text and "not supported: a GRU" in text


@pytest.mark.parametrize("kind", ["live", "odd.h5"])
def test_refused_layers(keras2, kind):
    folder, _, live_found = keras2
    found = live_found["odd"] if kind == "live" else fastlstm.inspect(folder / "odd.h5")
    reasons = {(f["name"] if isinstance(f, dict) else f.name):
               (f["reason"] if isinstance(f, dict) else f.reason) for f in found}
    assert "go_backwards=True" in reasons["back"]
    assert "merge_mode='sum'" in reasons["summed"]
    assert "convolutional LSTM" in reasons["convlstm"]
    if kind == "odd.h5":
        with pytest.raises(ValueError, match="go_backwards=True"):
            fastlstm.LSTM.from_keras(folder / "odd.h5", layer="back")
        with pytest.raises(ValueError, match="merge_mode='sum'"):
            fastlstm.LSTM.from_keras(folder / "odd.h5", layer="summed")
        with pytest.raises(ValueError, match=r"'convlstm' is a ConvLSTM2D, which fastlstm "
                                             r"cannot load: a convolutional LSTM"):
            fastlstm.LSTM.from_keras(folder / "odd.h5", layer="convlstm")


@pytest.mark.parametrize("kind", ["net.h5", "net_weights.h5", "net_savedmodel"])
def test_errors_list_what_exists(keras2, kind):
    folder, _, _ = keras2
    with pytest.raises(ValueError, match=r"holds 3 LSTM layers \['bi', 'enc', 'stack'\]"):
        fastlstm.LSTM.from_keras(folder / kind)
    with pytest.raises(ValueError, match=r"layer='nope' is not an LSTM layer .*\['bi', 'enc', "
                                         r"'stack'\]; others: 'simple' \(SimpleRNN\), 'gru'"):
        fastlstm.LSTM.from_keras(folder / kind, layer="nope")
    with pytest.raises(ValueError, match=r"'gru' is a GRU, which fastlstm cannot load"):
        fastlstm.LSTM.from_keras(folder / kind, layer="gru")


def test_saved_model_without_keras_metadata(keras2, tmp_path):
    folder, _, _ = keras2
    bare = tmp_path / "bare"
    shutil.copytree(folder / "net_savedmodel", bare)
    os.remove(bare / "keras_metadata.pb")
    with pytest.raises(ValueError, match="no keras_metadata.pb"):
        fastlstm.LSTM.from_keras(bare)
    (bare / "keras_metadata.pb").write_bytes(b"\x0a\xff\xff\xff\x7f")   # truncated
    with pytest.raises(ValueError, match="SavedModel .*bare"):
        fastlstm.LSTM.from_keras(bare)
    shutil.copy(folder / "net_savedmodel" / "keras_metadata.pb", bare)
    os.remove(bare / "variables" / "variables.index")
    with pytest.raises(ValueError, match="cannot read SavedModel"):
        fastlstm.LSTM.from_keras(bare, layer="enc")


def test_h5_reading_imports_no_framework_and_saved_model_says_it_needs_tensorflow(keras2):
    folder, _, _ = keras2
    code = ("import sys\n"
            "sys.modules['tensorflow'] = None  # as if TensorFlow were not installed\n"
            "import fastlstm\n"
            f"m = fastlstm.LSTM.from_keras({str(folder / 'net.h5')!r}, layer='bi')\n"
            "assert m.bidirectional\n"
            f"assert len(fastlstm.inspect({str(folder / 'net_weights.h5')!r})) == 5\n"
            "bad = [n for n in ('keras', 'tf_keras', 'torch') if n in sys.modules]\n"
            "assert not bad, bad\n"
            "try:\n"
            f"    fastlstm.LSTM.from_keras({str(folder / 'net_savedmodel')!r}, layer='enc')\n"
            "except ValueError as exc:\n"
            "    assert 'needs TensorFlow' in str(exc), exc\n"
            "else:\n"
            "    raise AssertionError('no error')\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                   env=dict(os.environ, PYTHONPATH=ROOT))


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file:UserWarning")
@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_keras3_legacy_h5_keeps_keras3_hard_sigmoid(tmp_path):
    """Keras 3 writes the legacy format too (model.save("m.h5")); its keras_version says
    hard_sigmoid means relu6(x + 3) / 6 there."""
    import keras

    inp = keras.Input((6, 3))
    lstm = keras.layers.LSTM(4, return_sequences=True, recurrent_activation="hard_sigmoid",
                             name="enc")
    net = keras.Model(inp, lstm(inp))
    rng = np.random.default_rng(7)
    net.set_weights([rng.uniform(-0.9, 0.9, w.shape) for w in net.get_weights()])
    net.save(tmp_path / "k3.h5")
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    model = fastlstm.LSTM.from_keras(tmp_path / "k3.h5")
    _close(model(x)[0], lstm(x))
    assert model.layer_options[0].recurrent_activation[1] == pytest.approx(1 / 6)
    assert "keras" not in fastlstm.inspect(tmp_path / "k3.h5")[0].options


@pytest.mark.parametrize("kind", ["net.h5", "net_weights.h5", "net_savedmodel"])
def test_only_the_chosen_layer_is_read(keras2, kind, monkeypatch):
    from fastlstm.loaders import keras as loader

    folder, _, _ = keras2
    reads = []
    original = loader._Lazy.read
    monkeypatch.setattr(loader._Lazy, "read", lambda self: reads.append(self.shape) or
                        original(self))
    fastlstm.inspect(folder / kind)
    assert reads == []
    fastlstm.LSTM.from_keras(folder / kind, layer="stack")
    assert reads == [(6, 8), (2, 8), (8,), (2, 12), (3, 12), (12,)]
