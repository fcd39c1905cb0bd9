"""fastlstm.LSTM.from_keras against Keras 3 layers, live and saved (.keras / .weights.h5)."""
import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402

import fastlstm  # noqa: E402
from fastlstm.loaders.keras import repeat_last_output  # noqa: E402

TOL = 1e-5

# Saving a model makes Keras's TensorFlow backend call np.array on a tf.Variable (keras code).
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
I, B, T = 3, 3, 6
LENGTHS = np.array([6, 2, 4])


def _randomise(layer, seed):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.uniform(-0.7, 0.7, w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    return layer


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    mask = np.arange(T)[None, :] < LENGTHS[:, None]
    return x, mask


def _states(rng, sizes):
    return [rng.standard_normal((B, n)).astype(np.float32) for n in sizes]


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=TOL, rtol=0)


@pytest.mark.parametrize("activation,recurrent_activation", [
    ("tanh", "sigmoid"), ("relu", "hard_sigmoid"), ("softsign", "sigmoid"), ("elu", "sigmoid"),
    ("leaky_relu", "hard_sigmoid"), ("linear", "sigmoid"), ("softplus", "sigmoid"),
])
@pytest.mark.parametrize("use_bias", [True, False])
def test_lstm_layer(activation, recurrent_activation, use_bias):
    layer = keras.layers.LSTM(4, activation=activation, recurrent_activation=recurrent_activation,
                              use_bias=use_bias, return_sequences=True, return_state=True)
    x, mask = _inputs()
    layer.build((None, T, I))
    _randomise(layer, 1)
    h0, c0 = _states(np.random.default_rng(2), (4, 4))
    y_k, h_k, c_k = layer(x, mask=mask, initial_state=[h0, c0])
    model = fastlstm.LSTM.from_keras(layer)
    assert model.batch_first
    y, (h, c) = model(x, initial_state=(h0[None], c0[None]), lengths=mask.sum(axis=1))
    _close(repeat_last_output(y, LENGTHS), y_k)
    _close(h[0], h_k)
    _close(c[0], c_k)
    y_last, _ = model(x, initial_state=(h0[None], c0[None]), lengths=LENGTHS,
                      return_sequences=False)
    _close(y_last, h_k)


def test_lstm_layer_without_mask_and_with_masking_layer():
    x, mask = _inputs(3)
    x[~mask] = 0.0
    inp = keras.Input((T, I))
    lstm = keras.layers.LSTM(5, return_sequences=True, name="enc")
    net = keras.Model(inp, lstm(keras.layers.Masking()(inp)))
    _randomise(lstm, 4)
    model = fastlstm.LSTM.from_keras(net)
    y, _ = model(x, lengths=LENGTHS)
    _close(repeat_last_output(y, LENGTHS), net(x))
    _close(model(x)[0], lstm(x))


def test_rnn_lstm_cell():
    layer = keras.layers.RNN(keras.layers.LSTMCell(4, recurrent_activation="hard_sigmoid"),
                             return_sequences=True, return_state=True)
    x, mask = _inputs(5)
    layer.build((None, T, I))
    _randomise(layer, 6)
    h0, c0 = _states(np.random.default_rng(7), (4, 4))
    y_k, h_k, c_k = layer(x, mask=mask, initial_state=[h0, c0])
    y, (h, c) = fastlstm.LSTM.from_keras(layer)(x, initial_state=(h0[None], c0[None]),
                                                lengths=LENGTHS)
    _close(repeat_last_output(y, LENGTHS), y_k)
    _close(h[0], h_k)
    _close(c[0], c_k)


def test_rnn_stacked_cells():
    cells = [keras.layers.LSTMCell(4), keras.layers.LSTMCell(2, activation="relu"),
             keras.layers.LSTMCell(5)]
    layer = keras.layers.RNN(keras.layers.StackedRNNCells(cells), return_sequences=True,
                             return_state=True)
    x, mask = _inputs(8)
    layer.build((None, T, I))
    _randomise(layer, 9)
    rng = np.random.default_rng(10)
    states = [_states(rng, (n, n)) for n in (4, 2, 5)]
    y_k, *finals = layer(x, mask=mask, initial_state=states)
    model = fastlstm.LSTM.from_keras(layer)
    assert model.num_layers == 3
    y, (h, c) = model(x, initial_state=([s[0] for s in states], [s[1] for s in states]),
                      lengths=LENGTHS)
    _close(repeat_last_output(y, LENGTHS), y_k)
    for k, (h_k, c_k) in enumerate(finals):  # one [h, c] per cell
        _close(h[k], h_k)
        _close(c[k], c_k)


@pytest.mark.parametrize("return_sequences", [True, False])
def test_bidirectional(return_sequences):
    layer = keras.layers.Bidirectional(
        keras.layers.LSTM(4, return_sequences=return_sequences, return_state=True,
                          recurrent_activation="hard_sigmoid"))
    x, mask = _inputs(11)
    layer.build((None, T, I))
    _randomise(layer, 12)
    rng = np.random.default_rng(13)
    h_f, c_f, h_b, c_b = _states(rng, (4, 4, 4, 4))
    y_k, hf_k, cf_k, hb_k, cb_k = layer(x, mask=mask, initial_state=[h_f, c_f, h_b, c_b])
    model = fastlstm.LSTM.from_keras(layer)
    assert model.bidirectional
    y, (h, c) = model(x, initial_state=(np.stack([h_f, h_b]), np.stack([c_f, c_b])),
                      lengths=LENGTHS, return_sequences=return_sequences)
    _close(y, y_k)  # Bidirectional zeroes masked steps, as fastlstm does
    _close(h, np.stack([hf_k, hb_k]))
    _close(c, np.stack([cf_k, cb_k]))


def _saved_net(tmp_path):
    inp = keras.Input((T, I))
    enc = keras.layers.LSTM(4, return_sequences=True, name="enc",
                            recurrent_activation="hard_sigmoid", activation="softsign")
    bi = keras.layers.Bidirectional(keras.layers.LSTM(3, return_sequences=True), name="bi")
    stack = keras.layers.RNN(keras.layers.StackedRNNCells(
        [keras.layers.LSTMCell(2), keras.layers.LSTMCell(3)]), return_sequences=True,
        name="stack")
    gru = keras.layers.GRU(2, name="gru")
    out = gru(stack(bi(enc(inp))))
    net = keras.Model(inp, out)
    for k, layer in enumerate((enc, bi, stack, gru)):
        _randomise(layer, 20 + k)
    net.save(tmp_path / "net.keras")
    net.save_weights(tmp_path / "net.weights.h5")
    return net, {"enc": enc, "bi": bi, "stack": stack}


def test_saved_files(tmp_path):
    net, layers = _saved_net(tmp_path)
    x, _ = _inputs(14)
    inputs = {"enc": x, "bi": np.asarray(layers["enc"](x))}
    inputs["stack"] = np.asarray(layers["bi"](inputs["bi"]))
    for path in ("net.keras", "net.weights.h5"):
        with pytest.raises(ValueError, match=r"3 LSTM layers \['bi', 'enc', 'stack'\]"):
            fastlstm.LSTM.from_keras(tmp_path / path)
        for name, layer in layers.items():
            overrides = {}
            if path.endswith(".h5") and name == "enc":  # no config in a weights file
                overrides = dict(activation="softsign", recurrent_activation="hard_sigmoid")
            model = fastlstm.LSTM.from_keras(str(tmp_path / path), layer=name, **overrides)
            _close(model(inputs[name])[0], layer(inputs[name]))
    live = fastlstm.LSTM.from_keras(net, layer="stack")
    _close(live(inputs["stack"])[0], layers["stack"](inputs["stack"]))
    with pytest.raises(ValueError, match=r"'gru' is a GRU, which fastlstm cannot load: a GRU"):
        fastlstm.LSTM.from_keras(tmp_path / "net.keras", layer="gru")
    with pytest.raises(ValueError, match=r"layer='nope' is not an LSTM layer .*\['bi', 'enc', "
                                         r"'stack'\]; others: 'gru' \(GRU\)"):
        fastlstm.LSTM.from_keras(tmp_path / "net.keras", layer="nope")


@pytest.mark.parametrize("source", ["live", "net.keras", "net.weights.h5"])
def test_inspect(tmp_path, source):
    net, _ = _saved_net(tmp_path)
    found = {f.name: f for f in fastlstm.inspect(net if source == "live" else
                                                 tmp_path / source)}
    enc, bi, stack = found["enc"], found["bi"], found["stack"]
    assert (enc.kind, enc.selector, enc.input_size, enc.hidden_size, enc.supported) == \
        ("keras", "layer", I, 4, True)
    assert (bi.type, bi.input_size, bi.hidden_size, bi.bidirectional) == \
        ("Bidirectional(LSTM)", 4, 3, True)
    assert (stack.num_layers, stack.input_size, stack.hidden_size) == (2, 6, 2)
    assert stack.type.startswith("RNN(StackedRNNCells")
    if source != "net.weights.h5":   # a weights file has no config: no types, no GRU
        assert enc.options == {"activation": "softsign", "recurrent_activation": "hard_sigmoid"}
        assert (found["gru"].type, found["gru"].hidden_size) == ("GRU", 2)
        assert "a GRU (reset and update gates" in found["gru"].reason


def test_file_reading_imports_no_framework(tmp_path):
    _saved_net(tmp_path)
    code = ("import sys, fastlstm\n"
            f"m = fastlstm.LSTM.from_keras({str(tmp_path / 'net.keras')!r}, layer='bi')\n"
            "assert m.bidirectional\n"
            "bad = [n for n in ('tensorflow', 'keras', 'torch', 'onnx') if n in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=tmp_path)


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="go_backwards=True"):
        layer = keras.layers.LSTM(2, go_backwards=True)
        layer.build((None, T, I))
        fastlstm.LSTM.from_keras(layer)
    layer = keras.layers.Bidirectional(keras.layers.LSTM(2), merge_mode="sum")
    layer.build((None, T, I))
    with pytest.raises(ValueError, match="merge_mode='sum'"):
        fastlstm.LSTM.from_keras(layer)
    layer = keras.layers.LSTM(2, activation="gelu")
    layer.build((None, T, I))
    with pytest.raises(ValueError, match="'gelu' has no exact fastlstm equivalent"):
        fastlstm.LSTM.from_keras(layer)
    with pytest.raises(ValueError, match="not built"):
        fastlstm.LSTM.from_keras(keras.layers.LSTM(2))
    with pytest.raises(ValueError, match="holds no LSTM layer"):
        gru = keras.layers.GRU(2)
        gru.build((None, T, I))
        fastlstm.LSTM.from_keras(gru)
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="junk.keras"):
        fastlstm.LSTM.from_keras(junk)
    with pytest.raises(ValueError, match="does not exist"):
        fastlstm.LSTM.from_keras(tmp_path / "missing.keras")
    with pytest.raises(TypeError, match="Keras 3 layer or model"):
        fastlstm.LSTM.from_keras(object())
