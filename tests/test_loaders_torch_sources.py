"""LSTM.from_torch / LSTMCell.from_torch / inspect on every PyTorch source kind: a model
holding several recurrent modules, its state dict (flat and nested), torch.save files
(.pt/.pth/.bin), safetensors, TorchScript (scripted and traced, live and saved) and a pickled
whole module; each loaded LSTM is compared with the torch module it came from."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastlstm

TOL = 1e-5
I, H, B, T = 3, 4, 3, 5
LENGTHS = np.array([5, 2, 4])

pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:LSTM with projections is not supported with oneDNN:UserWarning"),
    # TorchScript is deprecated in torch 2.13 but still what many deployed models are
    pytest.mark.filterwarnings(r"ignore:`torch.jit.\w+` is deprecated:DeprecationWarning"),
    # tracing nn.LSTM's own shape checks (torch's code, harmless for a fixed input size)
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]


class Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(I, I)
        self.rnn = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2,
                                 batch_first=True)

    def forward(self, x):
        return self.rnn(self.embed(x))[0]


class Net(torch.nn.Module):
    """Two LSTMs, an LSTMCell, a GRU and an RNN: every source needs module= for an LSTM."""

    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.decoder = torch.nn.LSTM(4, 3)            # time-major, as nn.LSTM's default
        self.cell = torch.nn.LSTMCell(3, 2)
        self.gru = torch.nn.GRU(3, 2)
        self.rnn = torch.nn.RNN(2, 2)

    def forward(self, x):
        y = self.encoder(x)
        z, _ = self.decoder(y.transpose(0, 1))
        h, c = self.cell(z[0])
        g, _ = self.gru(z)
        r, _ = self.rnn(g)
        return h + c + r[-1]


def _randomised(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand(p.shape, generator=g) - 0.5)
    return module.eval()


@pytest.fixture(scope="module")
def net():
    return _randomised(Net(), 0)


@pytest.fixture(scope="module")
def files(net, tmp_path_factory):
    folder = tmp_path_factory.mktemp("torch")
    sd = net.state_dict()
    paths = {"pt": folder / "net.pt", "pth": folder / "checkpoint.pth",
             "bin": folder / "pytorch_model.bin", "safetensors": folder / "net.safetensors",
             "script": folder / "scripted.pt", "trace": folder / "traced.pt",
             "pickle": folder / "whole.pt"}
    torch.save(sd, paths["pt"])
    torch.save({"epoch": 3, "model": sd}, paths["pth"])   # a training checkpoint, nested
    torch.save(sd, paths["bin"])
    save_file(sd, str(paths["safetensors"]))
    torch.jit.script(net).save(str(paths["script"]))
    x = torch.zeros(B, T, I)
    torch.jit.trace(net, x).save(str(paths["trace"]))
    torch.save(net, paths["pickle"])
    return paths


def _torch_run(module, x, lengths, state, batch_first):
    xt = torch.from_numpy(x)
    st = None if state is None else tuple(torch.from_numpy(s) for s in state)
    with torch.no_grad():
        packed = pack_padded_sequence(xt, torch.from_numpy(lengths), enforce_sorted=False,
                                      batch_first=batch_first)
        y, (h, c) = module(packed, st)
        y, _ = pad_packed_sequence(y, batch_first=batch_first,
                                   total_length=x.shape[1 if batch_first else 0])
    return y.numpy(), h.numpy(), c.numpy()


def _check_lstm(model, module, batch_first, seed=0):
    """``model`` gives ``module``'s outputs and states with lengths and an initial state."""
    assert model.batch_first == batch_first
    rng = np.random.default_rng(seed)
    D = 2 if module.bidirectional else 1
    O = module.proj_size or module.hidden_size
    shape = (B, T, module.input_size) if batch_first else (T, B, module.input_size)
    x = rng.standard_normal(shape).astype(np.float32)
    state = (rng.standard_normal((module.num_layers * D, B, O)).astype(np.float32),
             rng.standard_normal((module.num_layers * D, B, module.hidden_size)).astype(
                 np.float32))
    y_t, h_t, c_t = _torch_run(module, x, LENGTHS, state, batch_first)
    y, (h, c) = model(x, initial_state=state, lengths=LENGTHS)
    np.testing.assert_allclose(y, y_t, atol=TOL, rtol=0)
    np.testing.assert_allclose(h, h_t, atol=TOL, rtol=0)
    np.testing.assert_allclose(c, c_t, atol=TOL, rtol=0)


def _check_cell(cell, module):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((B, module.input_size)).astype(np.float32)
    h0 = rng.standard_normal((B, module.hidden_size)).astype(np.float32)
    c0 = rng.standard_normal((B, module.hidden_size)).astype(np.float32)
    with torch.no_grad():
        h_t, c_t = module(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
    y, (h, c) = cell(x, (h0, c0))
    np.testing.assert_allclose(h, h_t.numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(c, c_t.numpy(), atol=TOL, rtol=0)


@pytest.fixture(scope="module")
def sources(net, files):
    """source kind -> (source, dotted-name prefix, keeps batch_first, extra kwargs)."""
    return {
        "module": (net, "", True, {}),
        "state_dict": (net.state_dict(), "", False, {}),
        "numpy_state_dict": ({k: v.numpy() for k, v in net.state_dict().items()}, "", False,
                             {}),
        "pt": (files["pt"], "", False, {}),
        "pth_nested": (str(files["pth"]), "model.", False, {}),
        "bin": (files["bin"], "", False, {}),
        "safetensors": (files["safetensors"], "", False, {}),
        "script_live": (torch.jit.script(net), "", True, {}),
        "script_file": (files["script"], "", True, {}),
        "trace_live": (torch.jit.trace(net, torch.zeros(B, T, I)), "", True, {}),
        "trace_file": (files["trace"], "", True, {}),
        "pickled_module": (files["pickle"], "", True, {"trust_pickle": True}),
    }


SOURCES = ["module", "state_dict", "numpy_state_dict", "pt", "pth_nested", "bin", "safetensors",
           "script_live", "script_file", "trace_live", "trace_file", "pickled_module"]


@pytest.mark.parametrize("kind", SOURCES)
def test_every_source_kind(net, sources, kind):
    source, prefix, keeps, extra = sources[kind]
    enc = fastlstm.LSTM.from_torch(source, module=prefix + "encoder.rnn", **extra,
                                   **({} if keeps else {"batch_first": True}))
    _check_lstm(enc, net.encoder.rnn, batch_first=True)
    assert (enc.num_layers, enc.bidirectional, enc.proj_size) == (2, True, 2)
    dec = fastlstm.LSTM.from_torch(source, module=prefix + "decoder", **extra)
    _check_lstm(dec, net.decoder, batch_first=False, seed=1)
    cell = fastlstm.LSTMCell.from_torch(source, module=prefix + "cell", **extra)
    _check_cell(cell, net.cell)
    if not keeps:  # a state dict has no batch_first: nn.LSTM's default, False
        assert not fastlstm.LSTM.from_torch(source, module=prefix + "encoder.rnn",
                                            **extra).batch_first


@pytest.mark.parametrize("kind", SOURCES)
def test_errors_list_what_exists(net, sources, kind):
    source, prefix, _, extra = sources[kind]
    with pytest.raises(ValueError, match=r"2 nn.LSTM modules \['(model\.)?decoder', "
                                         r"'(model\.)?encoder.rnn'\] .*; choose one with "
                                         r"module="):
        fastlstm.LSTM.from_torch(source, **extra)
    with pytest.raises(ValueError, match=r"module='nope' names no recurrent module.*"
                                         r"encoder.rnn' \(LSTM\).*gru' \(GRU\)"):
        fastlstm.LSTM.from_torch(source, module="nope", **extra)
    with pytest.raises(ValueError, match=r"is an nn.GRU, which fastlstm.LSTM cannot load: "
                                         r"a GRU \(reset and update gates"):
        fastlstm.LSTM.from_torch(source, module=prefix + "gru", **extra)
    with pytest.raises(ValueError, match=r"is an nn.RNN, .*an Elman RNN"):
        fastlstm.LSTM.from_torch(source, module=prefix + "rnn", **extra)
    with pytest.raises(ValueError, match=r"is an nn.LSTMCell.*LSTMCell.from_torch"):
        fastlstm.LSTM.from_torch(source, module=prefix + "cell", **extra)
    # the one LSTMCell needs no name
    _check_cell(fastlstm.LSTMCell.from_torch(source, **extra), net.cell)


@pytest.mark.parametrize("kind", SOURCES)
def test_inspect(net, sources, kind):
    source, prefix, keeps, extra = sources[kind]
    if extra:   # inspect never unpickles: a pickled module is refused
        with pytest.raises(ValueError, match="trust_pickle=True"):
            fastlstm.inspect(source)
        return
    found = {f.name: f for f in fastlstm.inspect(source)}
    assert set(found) == {prefix + n for n in ("encoder.rnn", "decoder", "cell", "gru", "rnn")}
    enc = found[prefix + "encoder.rnn"]
    assert (enc.kind, enc.selector, enc.type, enc.input_size, enc.hidden_size, enc.num_layers,
            enc.bidirectional, enc.proj_size, enc.supported) == \
        ("torch", "module", "nn.LSTM", I, H, 2, True, 2, True)
    assert enc.options == ({"batch_first": True} if keeps else {})
    assert (found[prefix + "decoder"].input_size, found[prefix + "decoder"].hidden_size) == (4, 3)
    assert (found[prefix + "cell"].type, found[prefix + "cell"].hidden_size) == \
        ("nn.LSTMCell", 2)
    assert found[prefix + "gru"].type == "nn.GRU" and "GRU" in found[prefix + "gru"].reason
    assert found[prefix + "rnn"].type == "nn.RNN" and not found[prefix + "rnn"].supported
    assert "encoder.rnn" in repr(fastlstm.inspect(source))
    # fastlstm.load-style dispatch with the listed name
    model = fastlstm.inspection.load_source(source, prefix + "decoder")
    _check_lstm(model, net.decoder, batch_first=False, seed=2)


def test_one_lstm_needs_no_name(tmp_path):
    enc = _randomised(Encoder(), 3)
    _check_lstm(fastlstm.LSTM.from_torch(enc), enc.rnn, batch_first=True)
    save_file(enc.state_dict(), str(tmp_path / "enc.safetensors"))
    model = fastlstm.LSTM.from_torch(tmp_path / "enc.safetensors", batch_first=True)
    _check_lstm(model, enc.rnn, batch_first=True, seed=4)
    # prefix= (the raw key prefix) still works, and so do checked sizes
    model = fastlstm.LSTM.from_torch(enc.state_dict(), prefix="rnn.", batch_first=True,
                                     hidden_size=H, num_layers=2)
    _check_lstm(model, enc.rnn, batch_first=True, seed=5)
    with pytest.raises(ValueError, match="batch_first=False was given but the module has "
                                         "batch_first=True"):
        fastlstm.LSTM.from_torch(torch.jit.script(enc), batch_first=False)


def test_pickled_module_is_refused_without_trust(files):
    with pytest.raises(ValueError, match=r"whole.pt' holds pickled Python objects.*"
                                         r"trust_pickle=True"):
        fastlstm.LSTM.from_torch(files["pickle"], module="decoder")
    with pytest.raises(TypeError, match="trust_pickle must be"):
        fastlstm.LSTM.from_torch(files["pickle"], module="decoder", trust_pickle="yes")


def test_safetensors_needs_no_torch(files):
    code = ("import sys, fastlstm\n"
            f"m = fastlstm.LSTM.from_torch({str(files['safetensors'])!r}, module='decoder')\n"
            "assert (m.input_size, m.hidden_size, m.batch_first) == (4, 3, False)\n"
            f"assert len(fastlstm.inspect({str(files['safetensors'])!r})) == 5\n"
            "assert 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_only_the_chosen_tensors_are_read(files, monkeypatch):
    from safetensors import safe_open

    reads = []
    original = type(safe_open(str(files["safetensors"]), framework="numpy")).get_tensor

    class Spy:
        def __init__(self, path, framework):
            self._f = safe_open(path, framework=framework)

        def keys(self):
            return self._f.keys()

        def get_slice(self, key):
            return self._f.get_slice(key)

        def get_tensor(self, key):
            reads.append(key)
            return original(self._f, key)

    import safetensors
    monkeypatch.setattr(safetensors, "safe_open", Spy)
    fastlstm.LSTM.from_torch(files["safetensors"], module="decoder")
    assert sorted(reads) == [f"decoder.{k}" for k in ("bias_hh_l0", "bias_ih_l0", "weight_hh_l0",
                                                      "weight_ih_l0")]
    reads.clear()
    fastlstm.inspect(files["safetensors"])
    assert reads == []
