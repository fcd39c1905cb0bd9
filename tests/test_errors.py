"""Bad arguments get a ValueError/TypeError that names the argument, the expected and the given."""
import numpy as np
import pytest

import fastlstm


@pytest.fixture(scope="module")
def model():
    return fastlstm.LSTM(3, 4, num_layers=2, seed=0)


@pytest.mark.parametrize("kwargs,exc,pattern", [
    ({"input_size": 0}, ValueError, r"input_size must be >= 1, got 0"),
    ({"hidden_size": -2}, ValueError, r"hidden_size must be >= 1, got -2"),
    ({"hidden_size": 4.0}, TypeError, r"hidden_size must be an integer, got float"),
    ({"num_layers": 0}, ValueError, r"num_layers must be >= 1"),
    ({"proj_size": 4}, ValueError, r"proj_size must be smaller than hidden_size \(4\), got 4"),
    ({"proj_size": -1}, ValueError, r"proj_size must be >= 0"),
    ({"activation": "swish"}, ValueError, r"activation must be one of .*got 'swish'"),
    ({"recurrent_activation": 3}, TypeError, r"recurrent_activation must be an activation name"),
    ({"cell_clip": -1.0}, ValueError, r"cell_clip must be > 0, got -1.0"),
    ({"gate_clip": float("nan")}, ValueError, r"gate_clip must be finite"),
    ({"proj_clip": 1.0}, ValueError, r"proj_clip needs a projection"),
    ({"forget_bias": "1"}, TypeError, r"forget_bias must be a real number"),
    ({"peepholes": 1}, TypeError, r"peepholes must be True or False"),
    ({"bidirectional": "yes"}, TypeError, r"bidirectional must be True or False"),
])
def test_constructor_arguments(kwargs, exc, pattern):
    args = dict(input_size=3, hidden_size=4)
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        fastlstm.LSTM(**args)


@pytest.mark.parametrize("x,exc,pattern", [
    (np.zeros((2, 5, 4), np.float32), ValueError, r"x must have shape .*got \(2, 5, 4\)"),
    (np.zeros((2, 5), np.float32), ValueError, r"x must have 3 dimensions"),
    (np.zeros((2, 5, 3), np.int64), TypeError, r"x must have a real floating dtype.*int64"),
    (np.zeros((2, 5, 3), np.complex64), TypeError, r"x must have a real floating dtype"),
    (np.zeros((2, 5, 3), bool), TypeError, r"x must have a real floating dtype.*bool"),
    ("abc", TypeError, r"x must be a real floating array"),
])
def test_bad_inputs(model, x, exc, pattern):
    with pytest.raises(exc, match=pattern):
        model(x)


def test_bad_initial_state_messages(model):
    x = np.zeros((64, 2, 3), np.float32)
    h, c = model.zero_state(32)
    with pytest.raises(ValueError, match=r"initial_state h0 has batch 32 but x has batch 64"):
        model(x, initial_state=(h, c))
    h, c = model.zero_state(64)
    with pytest.raises(ValueError, match=r"initial_state h0 has 1 layers\*directions but the "
                                         r"model has 2"):
        model(x, initial_state=(h[:1], c))
    with pytest.raises(ValueError, match=r"initial_state c0 has width 5 .* cell size is 4"):
        model(x, initial_state=(h, np.zeros((2, 64, 5))))
    with pytest.raises(TypeError, match=r"initial_state must be a pair"):
        model(x, initial_state=h)


@pytest.mark.parametrize("lengths,exc,pattern", [
    ([1, 2], ValueError, r"lengths must have shape \(3,\)"),
    ([1, 2, 6], ValueError, r"lengths must lie in \[0, 5\].*got 6"),
    ([1, -1, 2], ValueError, r"lengths must lie in \[0, 5\].*got -1"),
    ([1.0, 2.0, 3.0], TypeError, r"lengths must have an integer dtype, got float64"),
    ("123", TypeError, r"lengths must be an integer array"),
])
def test_bad_lengths(model, lengths, exc, pattern):
    with pytest.raises(exc, match=pattern):
        model(np.zeros((3, 5, 3), np.float32), lengths=lengths)


def test_from_cells_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match=r"input_size 5 does not match the previous layer's "
                                         r"output 4"):
        fastlstm.LSTM.from_cells([fastlstm.LSTMCell(3, 4), fastlstm.LSTMCell(5, 4)])
    with pytest.raises(TypeError, match=r"cells\[0\] must be an LSTMCell"):
        fastlstm.LSTM.from_cells(["cell"])


@pytest.mark.parametrize("bidirectional", [True, False])
def test_from_layers_rejects_directions_that_do_not_match_the_model(bidirectional):
    """Each layer has two directions in a bidirectional model and one otherwise; a mismatch
    is refused when the model is built, naming the layer, not at its first call."""
    other = fastlstm.LSTM(3, 4, num_layers=2, bidirectional=not bidirectional, seed=0)
    given, needed = (1, 2) if bidirectional else (2, 1)
    with pytest.raises(ValueError, match=rf"^layer 0 has {given} directions but a "
                                         rf"{'bi' if bidirectional else 'uni'}directional model "
                                         rf"needs {needed}$"):
        fastlstm.LSTM.from_layers(other.layers, bidirectional=bidirectional)
    # one bad layer among good ones is named
    same = fastlstm.LSTM(3, 4, num_layers=2, bidirectional=bidirectional, seed=0)
    with pytest.raises(ValueError, match=rf"^layer 1 has {given} directions"):
        fastlstm.LSTM.from_layers([same.layers[0], other.layers[1]],
                                  bidirectional=bidirectional)


@pytest.mark.parametrize("initial_state,exc,pattern", [
    ("hc", TypeError, r"^initial_state must be a pair \(h0, c0\), got str"),
    ((np.zeros((1, 2, 4)),), TypeError, r"^initial_state must be a pair \(h0, c0\), got tuple "
                                        r"of length 1"),
    ((np.zeros((1, 2, 4)), np.zeros((1, 3, 4))), ValueError,
     r"^initial_state c0 has batch 3 but initial_state h0 has batch 2$"),
    ((np.zeros(4), np.zeros(4)), ValueError, r"^initial_state h0 must have 3 dimensions"),
])
def test_a_held_initial_state_is_checked_like_a_calls(initial_state, exc, pattern):
    """The state a model holds (from_layers, the ONNX loader) takes its batch from its h0 and
    is checked as a call's initial_state is, with the same messages."""
    layers = fastlstm.LSTM(3, 4, seed=0).layers
    with pytest.raises(exc, match=pattern):
        fastlstm.LSTM.from_layers(layers, initial_state=initial_state)
