"""fastlstm.LSTM.from_tf1_checkpoint against dynamic_rnn / bidirectional_dynamic_rnn (with
sequence_length) on tf.compat.v1 Saver checkpoints.

TensorFlow builds the graphs once, in a subprocess (tests/_tf1_checkpoints.py; TF1 cells need
TF_USE_LEGACY_KERAS=1 before TensorFlow is imported); the loader reads the checkpoints in this
process with TensorFlow's checkpoint reader.

tf.compat.v1 in TensorFlow 2 has no LSTMBlockCell (it lived in tf.contrib), so no test saves
one; its variables have LSTMCell's names and layout, which these tests cover.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastlstm

TOL = 1e-5
HERE = os.path.dirname(os.path.abspath(__file__))
# case -> {scope: from_tf1_checkpoint options the checkpoint does not record}
LOADS = {
    "multi": {"rnn": dict(forget_bias=0.7, cell_clip=0.8, proj_clip=0.5)},
    "basic": {"encoder/rnn": {}, "decoder/rnn": {}, "custom/rnn": {}},
    "bidirectional": {"bidirectional_rnn": {}},
    "stacked_bidirectional": {"stack_bidirectional_rnn": {}},
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tf1_checkpoints")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "_tf1_checkpoints.py"),
                           str(folder)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(folder / "outputs.npz") as data:
        return folder, {k: data[k] for k in data.files}


def _outputs(results, case, scope):
    prefix = f"{case}/{scope}/"
    return {k[len(prefix):]: v for k, v in results.items() if k.startswith(prefix)}


@pytest.mark.parametrize("case,scope", [(c, s) for c in LOADS for s in LOADS[c]])
def test_matches_dynamic_rnn(saved, case, scope):
    folder, results = saved
    want = _outputs(results, case, scope)
    # the folder, the prefix and the .index file all name the checkpoint
    for source in (folder / case, folder / case / "model-7", folder / case / "model-7.index"):
        model = fastlstm.LSTM.from_tf1_checkpoint(source, scope=scope, **LOADS[case][scope])
        y, (h, c) = model(want["x"], lengths=want["lengths"])
        np.testing.assert_allclose(y, want["y"], atol=TOL, rtol=0)
        n = len([k for k in want if k.startswith("h_")])
        assert len(h) == n == model.num_layers * model.num_directions
        for k in range(n):
            np.testing.assert_allclose(h[k], want[f"h_{k}"], atol=TOL, rtol=0)
            np.testing.assert_allclose(c[k], want[f"c_{k}"], atol=TOL, rtol=0)


def test_model_options(saved):
    folder, _ = saved
    model = fastlstm.LSTM.from_tf1_checkpoint(folder / "multi", forget_bias=0.7, cell_clip=0.8,
                                              proj_clip=0.5)  # one stack: scope not needed
    assert model.num_layers == 2 and model.batch_first and model.proj_size == 2
    opts = model.layer_options
    assert [o.proj_size for o in opts] == [3, 2] and all(o.peepholes for o in opts)
    assert all(o.forget_bias == 0.7 and o.cell_clip == 0.8 for o in opts)
    bi = fastlstm.LSTM.from_tf1_checkpoint(folder / "bidirectional", scope="bidirectional_rnn")
    assert bi.bidirectional and bi.layer_options[0].forget_bias == 1.0
    encoder = fastlstm.LSTM.from_tf1_checkpoint(folder / "basic", scope="encoder")  # the one inside
    assert encoder.hidden_size == 4 and encoder.num_layers == 1
    custom = fastlstm.LSTM.from_tf1_checkpoint(folder / "basic", scope="custom")
    assert custom.hidden_size == 3 and custom.num_layers == 1


def test_choosing_and_errors(saved, tmp_path):
    folder, _ = saved
    with pytest.raises(ValueError, match=r"holds 2 LSTM stacks, scopes \['decoder/rnn', "
                                         r"'encoder/rnn'\]; choose one with scope="):
        fastlstm.LSTM.from_tf1_checkpoint(folder / "basic")
    with pytest.raises(ValueError, match=r"scope='middle' names no LSTM stack .* LSTM stacks: "
                                         r"\['decoder/rnn', 'encoder/rnn'\]"):  # my_cell: not named
        fastlstm.LSTM.from_tf1_checkpoint(folder / "basic", scope="middle")
    with pytest.raises(ValueError, match=r"'nested/bidirectional_rnn' .* cannot be loaded: "
                                         r"bidirectional_dynamic_rnn over MultiRNNCells"):
        fastlstm.LSTM.from_tf1_checkpoint(folder / "bidirectional", scope="nested")
    with pytest.raises(TypeError, match=r"unexpected options \['peepholes'\]"):
        fastlstm.LSTM.from_tf1_checkpoint(folder / "multi", peepholes=True)
    with pytest.raises(TypeError, match=r"cell 'rnn/multi_rnn_cell/cell_0/lstm_cell' .* "
                                        r"forget_bias must be a real number"):
        fastlstm.LSTM.from_tf1_checkpoint(folder / "multi", forget_bias="x")
    with pytest.raises(ValueError, match=r"does not exist"):
        fastlstm.LSTM.from_tf1_checkpoint(tmp_path / "nothing")
    with pytest.raises(ValueError, match=r"without a 'checkpoint' file"):
        fastlstm.LSTM.from_tf1_checkpoint(tmp_path)


def test_inspect_and_load(saved):
    folder, _ = saved
    found = fastlstm.inspect(str(folder / "bidirectional"))
    assert [(f.name, f.num_layers, f.bidirectional, f.supported) for f in found] == [
        ("bidirectional_rnn", 1, True, True), ("nested/bidirectional_rnn", 2, True, False)]
    assert found[0].options == {"peepholes": True} and found[0].hidden_size == 4
    multi, = fastlstm.inspect(str(folder / "multi" / "model-7.index"))
    assert (multi.selector, multi.input_size, multi.proj_size) == ("scope", 3, 2)
    model = fastlstm.inspection.load_source(str(folder / "basic" / "model-7"), "decoder/rnn")
    assert model.num_layers == 3 and model.hidden_size == 2


def test_without_tensorflow(saved, monkeypatch):
    folder, _ = saved
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow now fails
    with pytest.raises(ImportError, match=r"reading a TF1 checkpoint needs TensorFlow"):
        fastlstm.LSTM.from_tf1_checkpoint(folder / "multi")
