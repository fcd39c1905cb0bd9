"""Stateful streams: stepping equals one full call; feed, reset and the batch-size rule."""
import numpy as np
import pytest

import fastlstm

from conftest import assert_close, random_input, random_state


@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 3, "proj_size": 2},
                                    {"num_layers": 2, "batch_first": False, "peepholes": True}])
def test_step_by_step_equals_full_call(kwargs):
    model = fastlstm.LSTM(4, 6, seed=1, **kwargs)
    x = random_input(model, 3, 8)
    state = random_state(model, 3)
    y_full, (h_full, c_full) = model(x, initial_state=state)
    s = model.stream(batch_size=3, state=state)
    steps = [s.step(x[:, t] if model.batch_first else x[t]) for t in range(8)]
    y_steps = np.stack(steps, axis=1 if model.batch_first else 0)
    # with SIMD kernels a step and a full call project the inputs with the same tile kernel:
    # the same bits; the portable build's full call uses sgemm: round-off apart
    if fastlstm.runtime.config()["blas_used"]:
        assert_close(y_steps, y_full, atol=1e-6, rtol=1e-6)
        assert_close(s.state[1], c_full, atol=1e-6, rtol=1e-6)
    else:
        np.testing.assert_array_equal(y_steps, y_full)
        np.testing.assert_array_equal(s.state[0], h_full)
        np.testing.assert_array_equal(s.state[1], c_full)


@pytest.mark.parametrize("batch", [1, 5, 12, 30])
def test_stepped_stream_has_the_bits_of_a_whole_sequence_call(batch):
    """Up-front projection (batch < 12), step-by-step projection (batch >= 12), one stream
    step at a time, on 1 and 2 threads: one arithmetic, the same bits (on the portable build,
    whose whole-sequence calls project with BLAS sgemm, the same to round-off)."""
    same = assert_close if fastlstm.runtime.config()["blas_used"] else np.testing.assert_array_equal
    model = fastlstm.LSTM(70, 40, num_layers=2, seed=4)
    x = random_input(model, batch, 6)
    s = model.stream(batch_size=batch)
    y_steps = np.stack([s.step(x[:, t]) for t in range(6)], axis=1)
    for threads in (1, 2):
        fastlstm.set_num_threads(threads)
        y_full, (h_full, c_full) = model(x)
        same(y_steps, y_full)
        same(s.state[1], c_full)


@pytest.mark.parametrize("inp,hidden", [(33, 65), (128, 256), (5, 1)])
def test_a_streams_rows_do_not_depend_on_the_rest_of_the_batch(inp, hidden):
    """Bitwise: each sequence of a batched stream equals the same sequence streamed alone."""
    model = fastlstm.LSTM(inp, hidden, num_layers=2, seed=0)
    x = random_input(model, 7, 4)
    together = model.stream(batch_size=7)
    ys = np.stack([together.step(x[:, t]) for t in range(4)], axis=1)
    for b in range(7):
        alone = model.stream(batch_size=1)
        y_alone = np.stack([alone.step(x[b:b + 1, t]) for t in range(4)], axis=1)
        np.testing.assert_array_equal(y_alone[0], ys[b])


def test_feed_in_chunks_with_lengths():
    model = fastlstm.LSTM(3, 5, num_layers=2, seed=2)
    x = random_input(model, 2, 9)
    y_full, (h_full, _) = model(x)
    s = model.stream(batch_size=2)
    parts = [s.feed(x[:, :4]), s.feed(x[:, 4:5]), s.feed(x[:, 5:])]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), y_full)
    # with lengths, sequence 1 stops after 2 steps of the chunk and its state stays there
    s.reset()
    y = s.feed(x[:, :4], lengths=[4, 2])
    assert np.all(y[1, 2:] == 0)
    _, (h2, _) = model(x[1:2, :2])
    np.testing.assert_array_equal(s.state[0][:, 1], h2[:, 0])


def test_state_is_a_copy_and_reset_variants():
    model = fastlstm.LSTM(3, 4, seed=3)
    s = model.stream(batch_size=2)
    s.step(np.ones((2, 3), np.float32))
    h, c = s.state
    h[...] = 7
    assert not np.any(s.state[0] == 7)
    s.reset()
    assert not s.state[0].any() and s.batch_size == 2
    s.reset(batch_size=5)
    assert s.state[0].shape == (1, 5, 4)
    custom = random_state(model, 4)
    s.reset(state=custom)
    assert s.batch_size == 4
    np.testing.assert_array_equal(s.state[1], custom[1])
    y = s.step(np.ones((4, 3)))
    y_ref, _ = model(np.ones((4, 1, 3)), initial_state=custom)
    assert_close(y, y_ref[:, 0])


def test_wrong_batch_size_names_both_and_the_way_out():
    model = fastlstm.LSTM(3, 4)
    s = model.stream(batch_size=1)
    with pytest.raises(ValueError, match=r"batch 3 .* batch size 1.*reset\(batch_size=3\).*StreamPool"):
        s.step(np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="x_t"):
        s.step(np.zeros((1, 4), np.float32))


def test_bidirectional_models_cannot_stream():
    with pytest.raises(ValueError, match="unidirectional"):
        fastlstm.LSTM(3, 4, bidirectional=True).stream()


@pytest.mark.parametrize("batch", [1, 13])
def test_results_do_not_depend_on_the_block_order_of_a_call(batch):
    """Every other step, and every other call, takes the hidden blocks in reverse order (to
    reuse the weights left in cache): no result may change with it. Two streams stepped in
    turn meet the same inputs at opposite parities, as do two calls one after the other."""
    model = fastlstm.LSTM(20, 100, seed=3)     # 7 blocks of 16 units: a lone last block
    x = random_input(model, batch, 5)
    for threads in (1, 2):
        fastlstm.set_num_threads(threads)
        first, second = model(x), model(x)
        np.testing.assert_array_equal(first[0], second[0])
        np.testing.assert_array_equal(first[1][1], second[1][1])
        a, b = model.stream(batch_size=batch), model.stream(batch_size=batch)
        for t in range(5):
            np.testing.assert_array_equal(a.step(x[:, t]), b.step(x[:, t]))


def test_a_state_whose_h_and_c_differ_in_batch_names_both():
    model = fastlstm.LSTM(3, 4, seed=0)
    state = (np.zeros((1, 2, 4)), np.zeros((1, 3, 4)))
    for make in (lambda: model.stream(state=state), lambda: model.stream(2).reset(state=state)):
        with pytest.raises(ValueError, match=r"^state c0 has batch 3 but state h0 has batch 2$"):
            make()
