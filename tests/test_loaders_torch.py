"""fastlstm.LSTM.from_torch / LSTMCell.from_torch against torch itself."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastlstm

TOL = 1e-5

pytestmark = pytest.mark.filterwarnings(
    "ignore:LSTM with projections is not supported with oneDNN:UserWarning")


def _randomise(module, seed):
    """Non-zero biases and weights beyond PyTorch's init range."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand(p.shape, generator=g) * 1.0 - 0.5)
    return module


def _torch_run(module, x, lengths, state):
    """Run the torch module; with lengths through a packed sequence, padded back with zeros."""
    xt = torch.from_numpy(x)
    st = None if state is None else tuple(torch.from_numpy(s) for s in state)
    with torch.no_grad():
        if lengths is None:
            y, (h, c) = module(xt, st)
        else:
            packed = pack_padded_sequence(xt, torch.from_numpy(lengths), enforce_sorted=False,
                                          batch_first=module.batch_first)
            y, (h, c) = module(packed, st)
            y, _ = pad_packed_sequence(y, batch_first=module.batch_first,
                                       total_length=x.shape[1 if module.batch_first else 0])
    return y.numpy(), h.numpy(), c.numpy()


@pytest.mark.parametrize("num_layers,bidirectional,proj_size,batch_first,bias", [
    (1, False, 0, False, True),
    (2, False, 0, True, True),
    (1, True, 0, False, True),
    (2, True, 3, True, True),
    (3, False, 2, False, False),
    (2, True, 0, False, False),
])
@pytest.mark.parametrize("use_lengths", [False, True])
@pytest.mark.parametrize("use_state", [False, True])
def test_lstm_module(num_layers, bidirectional, proj_size, batch_first, bias, use_lengths,
                     use_state):
    rng = np.random.default_rng(0)
    I, H, B, T = 4, 5, 3, 6
    module = _randomise(torch.nn.LSTM(I, H, num_layers, bias=bias, batch_first=batch_first,
                                      bidirectional=bidirectional, proj_size=proj_size), seed=1)
    D, O = (2 if bidirectional else 1), (proj_size or H)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(np.float32)
    lengths = np.array([6, 2, 4]) if use_lengths else None
    state = None
    if use_state:
        state = (rng.standard_normal((num_layers * D, B, O)).astype(np.float32),
                 rng.standard_normal((num_layers * D, B, H)).astype(np.float32))
    y_t, h_t, c_t = _torch_run(module, x, lengths, state)
    model = fastlstm.LSTM.from_torch(module)
    assert (model.num_layers, model.bidirectional, model.proj_size, model.batch_first) == \
        (num_layers, bidirectional, proj_size, batch_first)
    y, (h, c) = model(x, initial_state=state, lengths=lengths)
    np.testing.assert_allclose(y, y_t, atol=TOL, rtol=0)
    np.testing.assert_allclose(h, h_t, atol=TOL, rtol=0)
    np.testing.assert_allclose(c, c_t, atol=TOL, rtol=0)


@pytest.mark.parametrize("as_numpy", [False, True])
def test_lstm_state_dict(as_numpy):
    rng = np.random.default_rng(1)
    module = _randomise(torch.nn.LSTM(3, 4, 2, bidirectional=True, proj_size=2), seed=2)
    sd = module.state_dict()
    if as_numpy:
        sd = {k: v.numpy().astype(np.float64) for k, v in sd.items()}
    model = fastlstm.LSTM.from_torch(sd)  # batch_first defaults to False, as in nn.LSTM
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    y_t, h_t, c_t = _torch_run(module, x, None, None)
    y, (h, c) = model(x)
    np.testing.assert_allclose(y, y_t, atol=TOL, rtol=0)
    np.testing.assert_allclose(h, h_t, atol=TOL, rtol=0)
    np.testing.assert_allclose(c, c_t, atol=TOL, rtol=0)
    assert set(model.weights) == set(sd)


def test_lstm_state_dict_with_prefix_and_config():
    rng = np.random.default_rng(2)
    net = torch.nn.Sequential()
    net.add_module("enc", _randomise(torch.nn.LSTM(3, 4, batch_first=True), seed=3))
    net.add_module("dec", _randomise(torch.nn.LSTM(4, 2, batch_first=True), seed=4))
    sd = net.state_dict()
    with pytest.raises(ValueError, match=r"\['dec\.', 'enc\.'\]"):
        fastlstm.LSTM.from_torch(sd)
    with pytest.raises(ValueError, match="hidden_size=7 was given but the weights say 4"):
        fastlstm.LSTM.from_torch(sd, prefix="enc.", hidden_size=7)
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        fastlstm.LSTM.from_torch(sd, prefix="enc.", dropout=0.5)
    model = fastlstm.LSTM.from_torch(sd, prefix="enc.", batch_first=True, hidden_size=4)
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    y_t, h_t, c_t = _torch_run(net.enc, x, np.array([4, 1]), None)
    y, (h, c) = model(x, lengths=[4, 1])
    np.testing.assert_allclose(y, y_t, atol=TOL, rtol=0)
    np.testing.assert_allclose(h, h_t, atol=TOL, rtol=0)
    np.testing.assert_allclose(c, c_t, atol=TOL, rtol=0)


def test_lstm_state_dict_errors():
    sd = {k: v.numpy() for k, v in torch.nn.LSTM(3, 4, 2).state_dict().items()}
    del sd["weight_hh_l1"]
    with pytest.raises(ValueError, match="missing weight_hh_l1"):
        fastlstm.LSTM.from_torch(sd)
    with pytest.raises(ValueError, match="no LSTM parameters"):
        fastlstm.LSTM.from_torch({"foo": np.zeros(3)})
    with pytest.raises(ValueError, match="nn.GRU.*cannot load: a GRU"):
        fastlstm.LSTM.from_torch(torch.nn.GRU(3, 4))
    with pytest.raises(ValueError, match="batch_first=True was given"):
        fastlstm.LSTM.from_torch(torch.nn.LSTM(3, 4), batch_first=True)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("source", ["module", "state_dict"])
def test_lstm_cell(bias, source):
    rng = np.random.default_rng(3)
    module = _randomise(torch.nn.LSTMCell(4, 6, bias=bias), seed=5)
    cell = fastlstm.LSTMCell.from_torch(module if source == "module" else module.state_dict())
    x = rng.standard_normal((3, 4)).astype(np.float32)
    h0 = rng.standard_normal((3, 6)).astype(np.float32)
    c0 = rng.standard_normal((3, 6)).astype(np.float32)
    with torch.no_grad():
        h_t, c_t = module(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
        h_z, c_z = module(torch.from_numpy(x))
    y, (h, c) = cell(x, (h0, c0))
    np.testing.assert_allclose(y, h_t.numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(h, h_t.numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(c, c_t.numpy(), atol=TOL, rtol=0)
    y, (h, c) = cell(x)
    np.testing.assert_allclose(h, h_z.numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(c, c_z.numpy(), atol=TOL, rtol=0)


def test_cells_stacked_like_a_loop():
    """Two torch LSTMCells run step by step equal LSTM.from_cells of the loaded cells."""
    rng = np.random.default_rng(4)
    cells_t = [_randomise(torch.nn.LSTMCell(3, 4), 6), _randomise(torch.nn.LSTMCell(4, 4), 7)]
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    with torch.no_grad():
        states = [None, None]
        outs = []
        for t in range(5):
            inp = torch.from_numpy(x[:, t])
            for k, cell in enumerate(cells_t):
                states[k] = cell(inp, states[k])
                inp = states[k][0]
            outs.append(inp.numpy())
    model = fastlstm.LSTM.from_cells([fastlstm.LSTMCell.from_torch(c) for c in cells_t])
    y, (h, c) = model(x)
    np.testing.assert_allclose(y, np.stack(outs, axis=1), atol=TOL, rtol=0)
    np.testing.assert_allclose(c[1], states[1][1].numpy(), atol=TOL, rtol=0)


@settings(max_examples=25, deadline=None)
@given(num_layers=st.integers(1, 3), bidirectional=st.booleans(), hidden=st.integers(1, 6),
       proj=st.integers(0, 5), batch_first=st.booleans(), batch=st.integers(1, 4),
       time=st.integers(1, 6), data=st.data())
def test_random_configurations(num_layers, bidirectional, hidden, proj, batch_first, batch,
                               time, data):
    proj = proj if proj < hidden else 0
    module = _randomise(torch.nn.LSTM(2, hidden, num_layers, batch_first=batch_first,
                                      bidirectional=bidirectional, proj_size=proj),
                        seed=num_layers * 7 + hidden)
    lengths = np.array(data.draw(st.lists(st.integers(1, time), min_size=batch,
                                          max_size=batch)))
    rng = np.random.default_rng(time)
    x = rng.standard_normal((batch, time, 2) if batch_first else (time, batch, 2))
    x = x.astype(np.float32)
    y_t, h_t, c_t = _torch_run(module, x, lengths, None)
    y, (h, c) = fastlstm.LSTM.from_torch(module)(x, lengths=lengths)
    np.testing.assert_allclose(y, y_t, atol=TOL, rtol=0)
    np.testing.assert_allclose(h, h_t, atol=TOL, rtol=0)
    np.testing.assert_allclose(c, c_t, atol=TOL, rtol=0)
