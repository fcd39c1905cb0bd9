"""fastlstm.LSTMCell.from_tf1 against tf.compat.v1 cells under dynamic_rnn.

TensorFlow runs once, in a subprocess (tests/_tf1_cases.py): TF1 cells need
TF_USE_LEGACY_KERAS=1 before TensorFlow is imported, which must not leak into the Keras 3
tests sharing this pytest process. The subprocess saves inputs, variables and outputs.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastlstm

TOL = 1e-5
HERE = os.path.dirname(os.path.abspath(__file__))

# case: per cell, the from_tf1 options the variables do not carry (as built in _tf1_cases.py)
OPTIONS = {
    "basic": [{}],
    "basic_fb_relu": [dict(forget_bias=0.3, activation="relu")],
    "basic_len0": [dict(forget_bias=1.5)],
    "peephole_clip_proj": [dict(cell_clip=0.6, proj_clip=0.35, forget_bias=0.7)],
    "proj_only": [{}],
    "multi": [dict(forget_bias=0.2), {}, dict(cell_clip=0.8)],
    "bidirectional": [{}, {}],
}


@pytest.fixture(scope="module")
def tf1_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("tf1") / "cases.npz"
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "_tf1_cases.py"), str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


def _case(results, case):
    prefix = f"{case}/"
    return {k[len(prefix):]: v for k, v in results.items() if k.startswith(prefix)}


def _cell_scopes(variables):
    """Variable names grouped by cell scope, in TF's creation order."""
    scopes = {}
    for name in variables:
        scope = name.split("/")[:-1]
        if scope[-1] == "projection":
            scope = scope[:-1]
        scopes.setdefault("/".join(scope), {})[name] = variables[name]
    return list(scopes.values())


@pytest.mark.parametrize("case", sorted(OPTIONS))
def test_dynamic_rnn(tf1_results, case):
    data = _case(tf1_results, case)
    variables = {k[len("var/"):]: v for k, v in data.items() if k.startswith("var/")}
    cells = [fastlstm.LSTMCell.from_tf1(v, **opts)
             for v, opts in zip(_cell_scopes(variables), OPTIONS[case])]
    bidirectional = case == "bidirectional"
    model = fastlstm.LSTM.from_cells([tuple(cells)] if bidirectional else cells,
                                     bidirectional=bidirectional)
    n = len(cells)
    initial = None
    if "h0_0" in data:
        initial = ([data[f"h0_{k}"] for k in range(n)], [data[f"c0_{k}"] for k in range(n)])
        if len({a.shape for a in initial[0] + initial[1]}) == 1:  # else: per-layer lists
            initial = tuple(np.stack(s) for s in initial)
    y, (h, c) = model(data["x"], initial_state=initial, lengths=data.get("lengths"))
    np.testing.assert_allclose(y, data["y"], atol=TOL, rtol=0)
    for k in range(n):
        np.testing.assert_allclose(h[k], data[f"h_{k}"], atol=TOL, rtol=0)
        np.testing.assert_allclose(c[k], data[f"c_{k}"], atol=TOL, rtol=0)


def test_short_names_and_single_steps(tf1_results):
    """Short names ("kernel", "w_i_diag") work too; one cell step equals TF's first step."""
    data = _case(tf1_results, "peephole_clip_proj")
    full = {k[len("var/"):]: v for k, v in data.items() if k.startswith("var/")}
    short = {k.split("lstm_cell/")[1][:-2]: v for k, v in full.items()}
    assert set(short) == {"kernel", "bias", "w_i_diag", "w_f_diag", "w_o_diag",
                          "projection/kernel"}
    opts = OPTIONS["peephole_clip_proj"][0]
    cell = fastlstm.LSTMCell.from_tf1(short, **opts)
    assert cell.weights.keys() == fastlstm.LSTMCell.from_tf1(full, **opts).weights.keys()
    y, (h, c) = cell(data["x"][:, 0], (data["h0_0"], data["c0_0"]))
    np.testing.assert_allclose(y, data["y"][:, 0], atol=TOL, rtol=0)


def test_errors(tf1_results):
    data = _case(tf1_results, "multi")
    variables = {k[len("var/"):]: v for k, v in data.items() if k.startswith("var/")}
    with pytest.raises(ValueError, match="several cells.*cell_0.*cell_1"):
        fastlstm.LSTMCell.from_tf1(variables)
    with pytest.raises(ValueError, match="need 'kernel' and 'bias'"):
        fastlstm.LSTMCell.from_tf1({"rnn/lstm_cell/kernel:0": np.zeros((7, 16))})
    with pytest.raises(ValueError, match="'rnn/other' is not a TF1 LSTM cell variable"):
        fastlstm.LSTMCell.from_tf1({"rnn/other": np.zeros(3)})
    with pytest.raises(ValueError, match="w_i_diag, w_f_diag and w_o_diag"):
        fastlstm.LSTMCell.from_tf1({"kernel": np.zeros((7, 16)), "bias": np.zeros(16),
                                    "w_i_diag": np.zeros(4)})
