"""Run tf.compat.v1 LSTM cells under dynamic_rnn and save everything a test needs to an .npz.

Run as a script (``python _tf1_cases.py OUT.npz``) in its own process: TF1 cells need
``TF_USE_LEGACY_KERAS=1`` set before TensorFlow is imported, which must not leak into the
Keras 3 tests of the same pytest session. Keys: ``<case>/x``, ``<case>/lengths``,
``<case>/h0_<k>``, ``<case>/c0_<k>``, ``<case>/y``, ``<case>/h_<k>``, ``<case>/c_<k>`` and
``<case>/var/<full TF variable name>``.
"""
import os
import sys
import zlib

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

v1 = tf.compat.v1
I, B, T = 3, 3, 6


def basic(h, **kw):
    return v1.nn.rnn_cell.BasicLSTMCell(h, **kw)


def full(h, **kw):
    return v1.nn.rnn_cell.LSTMCell(h, **kw)


# case: (cells builder, bidirectional, lengths, custom initial state)
CASES = {
    "basic": (lambda: [basic(4)], False, [6, 2, 4], True),
    "basic_fb_relu": (lambda: [basic(5, forget_bias=0.3, activation=tf.nn.relu)], False,
                      None, False),
    "basic_len0": (lambda: [basic(4, forget_bias=1.5)], False, [0, 6, 3], True),
    "peephole_clip_proj": (lambda: [full(5, use_peepholes=True, cell_clip=0.6, num_proj=3,
                                         proj_clip=0.35, forget_bias=0.7)], False,
                           [5, 6, 1], True),
    "proj_only": (lambda: [full(6, num_proj=2)], False, [3, 6, 6], False),
    "multi": (lambda: [full(4, use_peepholes=True, forget_bias=0.2), basic(3),
                       full(5, num_proj=2, cell_clip=0.8)], False, [6, 4, 2], True),
    "bidirectional": (lambda: [(full(4, use_peepholes=True, num_proj=3),
                                full(4, use_peepholes=True, num_proj=3))], True, [6, 3, 5],
                      True),
}


def state_tuple(cell, rng):
    h = rng.standard_normal((B, cell.output_size)).astype(np.float32)
    c = rng.standard_normal((B, cell.state_size.c)).astype(np.float32)
    return h, c


def run_case(name, builder, bidirectional, lengths, custom_state, out):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        x = rng.standard_normal((B, T, I)).astype(np.float32)
        out[f"{name}/x"] = x
        seq = None if lengths is None else np.array(lengths, np.int32)
        if seq is not None:
            out[f"{name}/lengths"] = seq
        cells = builder()
        states = []
        if bidirectional:
            (fw, bw), = cells
            init = [state_tuple(c, rng) for c in (fw, bw)] if custom_state else None
            tf_init = [v1.nn.rnn_cell.LSTMStateTuple(c=s[1], h=s[0]) for s in init] \
                if init else [None, None]
            (y_fw, y_bw), (s_fw, s_bw) = v1.nn.bidirectional_dynamic_rnn(
                fw, bw, x, sequence_length=seq, initial_state_fw=tf_init[0],
                initial_state_bw=tf_init[1], dtype=tf.float32)
            y = tf.concat([y_fw, y_bw], axis=2)
            finals = [s_fw, s_bw]
        else:
            init = [state_tuple(c, rng) for c in cells] if custom_state else None
            cell = cells[0] if len(cells) == 1 else v1.nn.rnn_cell.MultiRNNCell(cells)
            tf_init = None
            if init:
                tuples = [v1.nn.rnn_cell.LSTMStateTuple(c=s[1], h=s[0]) for s in init]
                tf_init = tuples[0] if len(cells) == 1 else tuple(tuples)
            y, final = v1.nn.dynamic_rnn(cell, x, sequence_length=seq, initial_state=tf_init,
                                         dtype=tf.float32)
            finals = [final] if len(cells) == 1 else list(final)
        sess.run(v1.global_variables_initializer())
        for var in v1.global_variables():  # random, non-zero biases and diagonals too
            sess.run(var.assign(rng.uniform(-0.7, 0.7, var.shape).astype(np.float32)))
            out[f"{name}/var/{var.name}"] = sess.run(var)
        y_v, finals_v = sess.run([y, finals])
        out[f"{name}/y"] = y_v
        for k, st in enumerate(finals_v):
            out[f"{name}/h_{k}"], out[f"{name}/c_{k}"] = st.h, st.c
        for k, st in enumerate(init or []):
            out[f"{name}/h0_{k}"], out[f"{name}/c0_{k}"] = st


if __name__ == "__main__":
    results = {}
    for case, spec in CASES.items():
        run_case(case, *spec, results)
    np.savez(sys.argv[1], **results)
