"""Build Keras 2 (tf_keras) models, save them every way Keras 2 saves, and record what the
tests compare: inputs, Keras's own outputs and the outputs of fastlstm models loaded from the
live layers.

Run as a script (``python _keras2_cases.py OUT_DIR``) in its own process: Keras 2 needs
``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported, which must not leak into the Keras 3
tests of the same pytest session. Writes to OUT_DIR: ``net.h5`` (model.save), ``net_weights.h5``
(save_weights), ``net_savedmodel/`` (SavedModel), ``cudnn.h5`` / ``cudnn_weights.h5``,
``nested.h5`` / ``nested_weights.h5``, ``odd.h5``, ``results.npz`` and ``live_find.json``.

results.npz keys, for each case: ``<case>/x``, ``<case>/h0_<k>``, ``<case>/c0_<k>`` (the
initial state of each layer and direction k), ``<case>/y``, ``<case>/h_<k>``, ``<case>/c_<k>``
(Keras's outputs and final states), ``<case>/y_last`` (Keras with return_sequences=False) and
``live/<case>/...`` the outputs of ``fastlstm.LSTM.from_keras(<live layer or model>)``.
``lengths`` is shared.
"""
import json
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

import fastlstm  # noqa: E402
from fastlstm.inspection import inspect  # noqa: E402

I, B, T = 3, 3, 6
LENGTHS = np.array([6, 2, 4])
L = keras.layers


def randomise(layer, rng):
    layer.set_weights([rng.uniform(-0.7, 0.7, w.shape).astype(np.float32)
                       for w in layer.get_weights()])


def lstm_kwargs():
    """The layers of ``net``, by name: (builder taking return_sequences/return_state, input
    size). Each is built twice: inside the model, and standalone for the reference run."""
    return {
        "enc": (lambda **kw: L.LSTM(4, activation="softsign", recurrent_activation="hard_sigmoid",
                                    unit_forget_bias=False, name="enc", **kw), I),
        "bi": (lambda **kw: L.Bidirectional(L.LSTM(3, recurrent_activation="hard_sigmoid", **kw),
                                            name="bi"), 4),
        "stack": (lambda **kw: L.RNN(L.StackedRNNCells([L.LSTMCell(2), L.LSTMCell(3)]),
                                     name="stack", **kw), 6),
    }


def fastlstm_state(hs, cs):
    """Per-(layer, direction) states in the layout a fastlstm call takes: one stacked array
    each when the sizes agree, else lists of (batch, size) arrays."""
    if len({h.shape for h in hs}) == 1:
        return np.stack(hs), np.stack(cs)
    return list(hs), list(cs)


def states_for(case, rng):
    """Keras initial states, and the same per (layer, direction) for fastlstm."""
    sizes = {"enc": [4], "bi": [3, 3], "stack": [2, 3], "cudnn": [4], "bicudnn": [3, 3],
             "time_major": [3]}[case]
    pairs = [(rng.standard_normal((B, n)).astype(np.float32),
              rng.standard_normal((B, n)).astype(np.float32)) for n in sizes]
    keras_states = [tf.constant(s) for pair in pairs for s in pair]
    if case == "stack":   # a stack has one [h, c] per cell
        keras_states = [[tf.constant(s) for s in p] for p in pairs]
    return keras_states, [p[0] for p in pairs], [p[1] for p in pairs]


def store_states(results, prefix, hs, cs, key_h="h", key_c="c"):
    for k, (h, c) in enumerate(zip(hs, cs)):
        results[f"{prefix}/{key_h}_{k}"] = np.asarray(h)
        results[f"{prefix}/{key_c}_{k}"] = np.asarray(c)


def record(results, case, x, mask, keras_states, h0, c0, reference, reference_last):
    """Run the standalone reference layer (return_state=True) and store everything."""
    y, *states = reference(x, mask=mask, initial_state=keras_states)
    if case == "stack":
        hs, cs = [s[0] for s in states], [s[1] for s in states]
    else:
        hs, cs = states[0::2], states[1::2]
    results[f"{case}/x"] = x
    store_states(results, case, h0, c0, "h0", "c0")
    store_states(results, case, hs, cs)
    results[f"{case}/y"] = np.asarray(y)
    results[f"{case}/y_last"] = np.asarray(reference_last(x, mask=mask,
                                                         initial_state=keras_states)[0])


def live(results, case, source, x, h0, c0, lengths, **kw):
    model = fastlstm.LSTM.from_keras(source, **kw)
    y, (h, c) = model(x, initial_state=fastlstm_state(h0, c0), lengths=lengths)
    results[f"live/{case}/y"] = y
    store_states(results, f"live/{case}", list(h), list(c))


def main(out):
    rng = np.random.default_rng(0)
    results = {"lengths": LENGTHS}
    mask = np.arange(T)[None, :] < LENGTHS[:, None]

    # --- net: LSTM, Bidirectional, stacked cells, SimpleRNN, GRU; saved three ways -------
    builders = lstm_kwargs()
    inp = keras.Input((T, I))
    h = L.Masking()(inp)
    layers = {}
    for name, (build, _) in builders.items():
        layers[name] = build(return_sequences=True)
        h = layers[name](h)
    h = L.SimpleRNN(2, return_sequences=True, name="simple")(h)
    net = keras.Model(inp, L.GRU(2, name="gru")(h))
    for layer in net.layers:
        if layer.weights:
            randomise(layer, rng)
    for name, (build, size) in builders.items():
        reference = build(return_sequences=True, return_state=True)
        reference_last = build(return_sequences=False, return_state=True)
        for ref in (reference, reference_last):
            ref.build((None, T, size))
            ref.set_weights(layers[name].get_weights())
        x = rng.standard_normal((B, T, size)).astype(np.float32)
        keras_states, h0, c0 = states_for(name, rng)
        record(results, name, x, mask, keras_states, h0, c0, reference, reference_last)
        live(results, name, net, x, h0, c0, LENGTHS, layer=name)
        live(results, name + "_layer", layers[name], x, h0, c0, LENGTHS)
    net.save(os.path.join(out, "net.h5"))
    net.save_weights(os.path.join(out, "net_weights.h5"))
    net.save(os.path.join(out, "net_savedmodel"), save_format="tf")
    found = [f.__dict__ for f in inspect(net)]

    # --- CuDNNLSTM: no CPU kernel, so Keras's own conversion to LSTM is the reference -----
    cudnn_layers = {"cudnn": tf.compat.v1.keras.layers.CuDNNLSTM(4, return_sequences=True,
                                                                 name="cudnn"),
                    "bicudnn": L.Bidirectional(tf.compat.v1.keras.layers.CuDNNLSTM(
                        3, return_sequences=True), name="bicudnn")}
    inp = keras.Input((T, I))
    cudnn = keras.Model(inp, cudnn_layers["bicudnn"](cudnn_layers["cudnn"](inp)))
    for layer in cudnn_layers.values():
        randomise(layer, rng)
    cudnn.save(os.path.join(out, "cudnn.h5"))
    cudnn.save_weights(os.path.join(out, "cudnn_weights.h5"))
    inp = keras.Input((T, I))
    plain = {"cudnn": L.LSTM(4, return_sequences=True, name="cudnn"),
             "bicudnn": L.Bidirectional(L.LSTM(3, return_sequences=True), name="bicudnn")}
    converted = keras.Model(inp, plain["bicudnn"](plain["cudnn"](inp)))
    converted.load_weights(os.path.join(out, "cudnn_weights.h5"))   # Keras converts
    for name, size in (("cudnn", I), ("bicudnn", 4)):
        reference = L.Bidirectional(L.LSTM(3, return_sequences=True, return_state=True)) \
            if name == "bicudnn" else L.LSTM(4, return_sequences=True, return_state=True)
        reference_last = L.Bidirectional(L.LSTM(3, return_state=True)) \
            if name == "bicudnn" else L.LSTM(4, return_state=True)
        for ref in (reference, reference_last):
            ref.build((None, T, size))
            ref.set_weights(plain[name].get_weights())
        x = rng.standard_normal((B, T, size)).astype(np.float32)
        keras_states, h0, c0 = states_for(name, rng)
        full = np.ones((B, T), bool)   # cuDNN has no masks
        record(results, name, x, full, keras_states, h0, c0, reference, reference_last)
        live(results, name, cudnn, x, h0, c0, None, layer=name)

    # --- time_major: the loaded model is time-major too -----------------------------------
    tm = L.LSTM(3, time_major=True, return_sequences=True, return_state=True)
    tm.build((T, None, I))
    randomise(tm, rng)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    keras_states, h0, c0 = states_for("time_major", rng)
    y, hk, ck = tm(x, initial_state=keras_states)
    results.update({"time_major/x": x, "time_major/y": np.asarray(y)})
    store_states(results, "time_major", h0, c0, "h0", "c0")
    store_states(results, "time_major", [hk], [ck])
    live(results, "time_major", tm, x, h0, c0, None)

    # --- nested: an LSTM inside a Sequential inside the model ------------------------------
    inner = L.LSTM(4, return_sequences=True, recurrent_activation="hard_sigmoid",
                   name="inner_lstm")
    inp = keras.Input((T, I))
    nested = keras.Model(inp, L.LSTM(2, name="top")(keras.Sequential([inner],
                                                                     name="encoder")(inp)))
    for layer in (inner, nested.get_layer("top")):
        randomise(layer, rng)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    results.update({"nested/x": x, "nested/y": np.asarray(inner(x))})
    nested.save(os.path.join(out, "nested.h5"))
    nested.save_weights(os.path.join(out, "nested_weights.h5"))

    # --- odd: what fastlstm refuses, and a ConvLSTM2D --------------------------------------
    seq = keras.Input((T, I))
    grid = keras.Input((T, 4, 4, 1))
    back = L.LSTM(2, go_backwards=True, return_sequences=True, name="back")(seq)
    summed = L.Bidirectional(L.LSTM(2), merge_mode="sum", name="summed")(back)
    conv = L.ConvLSTM2D(2, 3, name="convlstm")(grid)
    odd = keras.Model([seq, grid], [summed, conv])
    odd.save(os.path.join(out, "odd.h5"))
    found_odd = [f.__dict__ for f in inspect(odd)]

    np.savez(os.path.join(out, "results.npz"), **results)
    with open(os.path.join(out, "live_find.json"), "w") as fh:
        json.dump({"net": found, "odd": found_odd}, fh)


if __name__ == "__main__":
    main(sys.argv[1])
