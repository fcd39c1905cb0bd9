"""A user's typed code: ``mypy --strict`` must pass on it against the installed package
(py.typed, the public API's annotations and the compiled core's stub, _core.pyi). CI runs it
too, so every line here also has to work."""
from __future__ import annotations

import os
import tempfile

import numpy as np
from numpy.typing import NDArray

import fastlstm


def encode(model: fastlstm.LSTM, batch: NDArray[np.float32],
           lengths: NDArray[np.int64]) -> NDArray[np.float32]:
    last, _ = model(batch, lengths=lengths, return_sequences=False)
    return last


def main() -> None:
    fastlstm.set_num_threads(max(1, fastlstm.get_num_threads()))
    config: dict[str, object] = fastlstm.runtime.config()
    assert config["version"] == fastlstm.__version__

    model = fastlstm.LSTM(8, 16, num_layers=2, bidirectional=True, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 5, 8)).astype(np.float32)
    lengths = np.array([5, 3, 1, 0])
    y, (h_n, c_n) = model(x, lengths=lengths)
    assert y.shape == (4, 5, 32) and h_n.shape == (4, 4, 16) and c_n.shape == (4, 4, 16)
    assert encode(model, x, lengths).shape == (4, 32)
    weights: dict[str, NDArray[np.float32]] = model.weights
    assert weights["weight_ih_l0"].shape == (64, 8)

    cell = fastlstm.LSTMCell(8, 16, proj_size=4, seed=1)
    h, c = cell.zero_state(2)
    out, (h, c) = cell(x[:2, 0], state=(h, c))
    assert out.shape == h.shape == (2, 4) and c.shape == (2, 16)
    stack = fastlstm.LSTM.from_cells([cell, fastlstm.LSTMCell(4, 4, seed=2)])
    assert stack.num_layers == 2 and stack.output_size == 4

    uni = fastlstm.LSTM(8, 16, seed=3)
    stream = uni.stream(batch_size=1)
    steps = [stream.step(x[:1, t]) for t in range(5)]
    assert steps[-1].shape == (1, 16)
    stream.reset()

    pool = fastlstm.StreamPool(uni)
    pool.open("a")
    ys = pool.step({"a": x[0, 0]})
    assert ys["a"].shape[-1] == 16
    h_a, c_a = pool.close("a")
    assert h_a.shape[-1] == c_a.shape[-1] == 16

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.npz")
        uni.save(path)
        loaded = fastlstm.load(path)
        assert isinstance(loaded, fastlstm.LSTM)
        np.testing.assert_array_equal(loaded(x)[0], uni(x)[0])

    small = fastlstm.quantize(uni, "int8")
    precision: str = small.precision
    assert precision == "int8" and isinstance(small, fastlstm.LSTM)
    assert np.abs(small(x)[0] - uni(x)[0]).max() < 0.05
    print("typed usage example ran")


if __name__ == "__main__":
    main()
