"""Save tf.compat.v1 Saver checkpoints of LSTM stacks and dynamic_rnn's outputs on them.

Run as a script in its own process (``python _tf1_checkpoints.py OUT_DIR``): TF1 cells need
``TF_USE_LEGACY_KERAS=1`` set before TensorFlow is imported. For each case it writes the
checkpoint ``OUT_DIR/<case>/model-7`` (a folder with a ``checkpoint`` file) and, in
``OUT_DIR/outputs.npz``, ``<case>/<scope>/x``, ``/lengths``, ``/y``, ``/h_<k>``, ``/c_<k>``
(one final state per layer and direction, in fastlstm's order).

``python _tf1_checkpoints.py --tiny PREFIX`` writes the tiny checkpoint kept in tests/data
for the loader fuzz tests (BasicLSTMCell(4) under dynamic_rnn, input 3, weights uniform in
+-0.5 from numpy seed 0).
"""
import contextlib
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

v1 = tf.compat.v1
rnn_cell = v1.nn.rnn_cell
I, B, T = 3, 4, 6
LENGTHS = np.array([6, 2, 0, 4], np.int32)


def lstm(h, **kw):
    return rnn_cell.LSTMCell(h, **kw)


def basic(h, **kw):
    return rnn_cell.BasicLSTMCell(h, **kw)


def multi(cells):
    return rnn_cell.MultiRNNCell(cells)


def uni(scope, make_cell):
    """dynamic_rnn(cell) under variable scope `scope`: (y, per-layer final states)."""
    def build(x):
        cell = make_cell()
        with (v1.variable_scope(scope) if scope else contextlib.nullcontext()):
            y, final = v1.nn.dynamic_rnn(cell, x, sequence_length=LENGTHS, dtype=tf.float32)
        return y, (list(final) if isinstance(cell, rnn_cell.MultiRNNCell) else [final])
    return build


def bi(scope, make_fw, make_bw):
    def build(x):
        fw, bw = make_fw(), make_bw()
        with (v1.variable_scope(scope) if scope else contextlib.nullcontext()):
            (y_fw, y_bw), (s_fw, s_bw) = v1.nn.bidirectional_dynamic_rnn(
                fw, bw, x, sequence_length=LENGTHS, dtype=tf.float32)
        finals = [s_fw, s_bw]
        if isinstance(fw, rnn_cell.MultiRNNCell):
            finals = list(s_fw) + list(s_bw)
        return tf.concat([y_fw, y_bw], axis=2), finals
    return build


def stacked_bi(scope, make_cells):
    """What contrib's stack_bidirectional_dynamic_rnn did (tf.compat.v1 has no copy of it):
    bidirectional_dynamic_rnn per layer under cell_k, each layer fed the joined outputs."""
    def build(x):
        finals = []
        with v1.variable_scope(scope):
            for k, (fw, bw) in enumerate(make_cells()):
                with v1.variable_scope(f"cell_{k}"):
                    (y_fw, y_bw), (s_fw, s_bw) = v1.nn.bidirectional_dynamic_rnn(
                        fw, bw, x, sequence_length=LENGTHS, dtype=tf.float32)
                x = tf.concat([y_fw, y_bw], axis=2)
                finals += [s_fw, s_bw]
        return x, finals
    return build


# case: the stacks saved together in one checkpoint, by their scope in the checkpoint
CASES = {
    # two LSTMCells with peepholes, projections and clips in a MultiRNNCell (Adam slots too)
    "multi": {"rnn": uni("", lambda: multi([
        lstm(5, use_peepholes=True, num_proj=3, cell_clip=0.8, proj_clip=0.5, forget_bias=0.7),
        lstm(4, use_peepholes=True, num_proj=2, cell_clip=0.8, proj_clip=0.5,
             forget_bias=0.7)]))},
    # BasicLSTMCells: one alone, three in a MultiRNNCell, in two scopes of one checkpoint
    # (and an LSTMCell named by name=, found only when scope= points at it)
    "basic": {"encoder/rnn": uni("encoder", lambda: basic(4)),
              "decoder/rnn": uni("decoder", lambda: multi([basic(3), basic(5), basic(2)])),
              "custom/rnn": uni("custom", lambda: lstm(3, name="my_cell"))},
    # bidirectional_dynamic_rnn of LSTMCells with peepholes; and of MultiRNNCells (refused)
    "bidirectional": {
        "bidirectional_rnn": bi("", lambda: lstm(4, use_peepholes=True),
                                lambda: lstm(4, use_peepholes=True)),
        "nested/bidirectional_rnn": bi("nested", lambda: multi([lstm(3), lstm(3)]),
                                       lambda: multi([lstm(3), lstm(3)]))},
    # two bidirectional layers of BasicLSTMCells, joined after each layer
    "stacked_bidirectional": {"stack_bidirectional_rnn": stacked_bi(
        "stack_bidirectional_rnn", lambda: [(basic(4), basic(4)), (basic(3), basic(3))])},
}


def run_case(name, stacks, folder, out):
    rng = np.random.default_rng(len(name))
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        x = rng.standard_normal((B, T, I)).astype(np.float32)
        results = {scope: build(tf.constant(x)) for scope, build in stacks.items()}
        if name == "multi":  # optimizer slots in the checkpoint, which the loader ignores
            loss = tf.add_n([tf.reduce_sum(y) for y, _ in results.values()])
            v1.train.AdamOptimizer().minimize(loss)
        sess.run(v1.global_variables_initializer())
        for var in v1.trainable_variables():  # random, non-zero biases and diagonals too
            sess.run(var.assign(rng.uniform(-0.7, 0.7, var.shape).astype(np.float32)))
        v1.train.Saver().save(sess, os.path.join(folder, name, "model"), global_step=7)
        for scope, (y, finals) in results.items():
            y_v, finals_v = sess.run([y, finals])
            key = f"{name}/{scope}"
            out[f"{key}/x"], out[f"{key}/lengths"], out[f"{key}/y"] = x, LENGTHS, y_v
            for k, state in enumerate(finals_v):
                out[f"{key}/h_{k}"], out[f"{key}/c_{k}"] = state.h, state.c


def tiny(prefix):
    rng = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        v1.nn.dynamic_rnn(basic(4), tf.zeros((1, 2, I)), dtype=tf.float32)
        sess.run(v1.global_variables_initializer())
        for var in v1.global_variables():
            sess.run(var.assign(rng.uniform(-0.5, 0.5, var.shape).astype(np.float32)))
        v1.train.Saver().save(sess, prefix, write_meta_graph=False, write_state=False)


if __name__ == "__main__":
    if sys.argv[1] == "--tiny":
        tiny(sys.argv[2])
    else:
        outputs = {}
        for case, stacks in CASES.items():
            run_case(case, stacks, sys.argv[1], outputs)
        np.savez(os.path.join(sys.argv[1], "outputs.npz"), **outputs)
