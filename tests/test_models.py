"""The native path against the float64 reference, option by option and in combination."""
import numpy as np
import pytest

import fastlstm
from fastlstm import _core, reference

from conftest import (assert_close, assert_states_close, random_input, random_state,
                      run_portable)

CELL_OPTIONS = [
    {},
    {"forget_bias": 1.0},
    {"proj_size": 3},
    {"proj_size": 2, "proj_clip": 0.05},
    {"peepholes": True},
    {"peepholes": True, "proj_size": 4},
    {"cell_clip": 0.3},
    {"gate_clip": 0.5},
    {"input_forget": True},
    {"input_forget": True, "peepholes": True},
    {"activation": "relu"},
    {"activation": "softsign", "recurrent_activation": "hard_sigmoid"},
    {"activation": ("scaled_tanh", 1.5, 0.7), "recurrent_activation": ("hard_sigmoid", 0.2, 0.5)},
    {"activation": "elu", "output_activation": "softplus"},
    {"activation": ("leaky_relu", 0.1), "recurrent_activation": "sigmoid", "cell_clip": 2.0},
    {"activation": ("thresholded_relu", 0.2)},
    {"activation": "linear", "cell_clip": 1.0},
    {"activation": ("affine", 0.5, 0.1), "gate_clip": 3.0},
    {"peepholes": True, "cell_clip": 0.5, "gate_clip": 1.0, "proj_size": 5, "proj_clip": 0.2,
     "forget_bias": 1.0},
]

STRUCTURES = [
    {"num_layers": 1},
    {"num_layers": 2},
    {"num_layers": 1, "bidirectional": True},
    {"num_layers": 3, "bidirectional": True},
    {"num_layers": 2, "batch_first": False},
    {"num_layers": 2, "bidirectional": True, "batch_first": False},
]


def check_against_reference(model, x, **kwargs):
    got = model(x, **kwargs)
    want = reference.run(model, x, **kwargs)
    assert got[0].dtype == np.float32
    assert got[0].shape == want[0].shape
    assert_close(got[0], want[0])
    assert_states_close(got[1], want[1])
    return got


@pytest.mark.parametrize("options", CELL_OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_cell_options_match_reference(options):
    model = fastlstm.LSTM(6, 9, seed=3, **options)
    x = random_input(model, 5, 7, seed=1, scale=1.5)
    check_against_reference(model, x)
    lengths = np.array([7, 0, 3, 1, 7])
    check_against_reference(model, x, lengths=lengths, initial_state=random_state(model, 5))


@pytest.mark.parametrize("structure", STRUCTURES, ids=lambda s: str(s))
@pytest.mark.parametrize("proj_size", [0, 4])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_structures_match_reference(structure, proj_size, with_lengths, return_sequences):
    model = fastlstm.LSTM(5, 8, proj_size=proj_size, seed=7, **structure)
    x = random_input(model, 4, 6, seed=2)
    lengths = np.array([6, 2, 0, 5]) if with_lengths else None
    for state in (None, random_state(model, 4)):
        check_against_reference(model, x, lengths=lengths, initial_state=state,
                                return_sequences=return_sequences)


@pytest.mark.parametrize("batch,steps,inp,hidden", [
    (1, 1, 1, 1), (1, 1, 3, 5), (3, 1, 4, 1), (1, 9, 2, 13), (2, 3, 17, 31), (7, 5, 33, 65),
    (64, 4, 16, 130),
])
def test_edge_and_odd_shapes(batch, steps, inp, hidden):
    for bidirectional in (False, True):
        model = fastlstm.LSTM(inp, hidden, num_layers=2, bidirectional=bidirectional, seed=1)
        x = random_input(model, batch, steps, seed=batch)
        check_against_reference(model, x)
        lengths = np.arange(batch) % (steps + 1)
        check_against_reference(model, x, lengths=lengths)


@pytest.mark.parametrize("batch,steps,inp,hidden,threads", [
    (8, 30, 64, 256, 1),        # small batch: inputs projected up front
    (16, 20, 256, 512, 2),      # batch workload's sizes: inputs projected step by step
    (4, 25, 1024, 1024, 1),     # deepbench, the longest sums (2048 terms a gate)
    (4, 25, 1024, 1024, 2),
])
def test_benchmark_shapes_are_within_benchmark_accuracy(batch, steps, inp, hidden, threads):
    """BENCH.md's accuracy target on its shapes (fewer steps where they are long), PyTorch's
    default init, N(0, 1) inputs: within 3e-7 of float64 (measured 1.9e-7 on deepbench)."""
    fastlstm.set_num_threads(threads)
    model = fastlstm.LSTM(inp, hidden, seed=0)
    x = random_input(model, batch, steps, seed=0)
    y, _ = model(x)
    y_ref, _ = reference.run(model, x)
    assert np.abs(y - y_ref).max() < 3e-7


@pytest.mark.parametrize("threads", [1, 2])
def test_shrinking_batch_gives_each_row_its_bits_alone(threads):
    """With lengths, a batch whose steps are split by hidden blocks cuts its live rows into
    tile groups afresh at every step (17 live rows run as 4,4,4,5). Here every live count from
    20 down to 1 occurs, on one thread and on two (2.8 MiB of weights a step: split by blocks,
    not by rows). A row's sums never depend on the rows beside it, so each row must come out
    with the bits it has when run alone, and match the reference. (On the portable build a
    lone row's inputs are projected by sgemm, whose rounding depends on the rows beside it:
    there the rows agree to float32 round-off.)"""
    fastlstm.set_num_threads(threads)
    model = fastlstm.LSTM(64, 384, seed=4)
    batch, steps = 20, 24
    x = random_input(model, batch, steps, seed=3)
    lengths = np.random.default_rng(5).permutation(batch) + 5      # 5..24, all different
    y, (h, c) = model(x, lengths=lengths)
    same = np.testing.assert_array_equal if not _core.runtime_facts()["blas_used"] else \
        assert_close
    for b in range(batch):
        yb, (hb, cb) = model(x[b:b + 1], lengths=lengths[b:b + 1])
        same(y[b], yb[0])
        same(h[:, b], hb[:, 0])
        same(c[:, b], cb[:, 0])
    y_ref, (h_ref, c_ref) = reference.run(model, x, lengths=lengths)
    assert_close(y, y_ref)
    assert_close(c, c_ref)


def test_empty_batch_and_zero_steps():
    model = fastlstm.LSTM(3, 4, num_layers=2, bidirectional=True, seed=0)
    y, (h, c) = model(np.zeros((0, 5, 3), np.float32))
    assert y.shape == (0, 5, 8) and h.shape == (4, 0, 4) and c.shape == (4, 0, 4)
    x = np.zeros((2, 0, 3), np.float32)
    state = random_state(model, 2)
    y, (h, c) = model(x, initial_state=state)
    assert y.shape == (2, 0, 8)
    np.testing.assert_array_equal(h, state[0])
    np.testing.assert_array_equal(c, state[1])
    y, _ = model(x, return_sequences=False)
    np.testing.assert_array_equal(y, np.zeros((2, 8), np.float32))


def test_lengths_semantics():
    """Outputs past a length are exactly 0; zero-length sequences keep their initial state;
    the final output of each direction is taken as Keras does."""
    model = fastlstm.LSTM(3, 5, bidirectional=True, seed=4)
    x = random_input(model, 3, 6, seed=3)
    lengths = np.array([6, 2, 0])
    state = random_state(model, 3)
    y, (h, c) = model(x, lengths=lengths, initial_state=state)
    assert np.all(y[1, 2:] == 0) and np.all(y[2] == 0)
    np.testing.assert_array_equal(h[:, 2], state[0][:, 2])
    np.testing.assert_array_equal(c[:, 2], state[1][:, 2])
    # a length-2 sequence gives what the same two steps give alone
    y2, (h2, c2) = model(x[1:2, :2], initial_state=(state[0][:, 1:2], state[1][:, 1:2]))
    assert_close(y[1, :2], y2[0])
    assert_close(h[:, 1], h2[:, 0])
    last, _ = model(x, lengths=lengths, initial_state=state, return_sequences=False)
    assert_close(last[0, :5], y[0, 5, :5])
    assert_close(last[0, 5:], y[0, 0, 5:])
    assert_close(last[1, :5], y[1, 1, :5])
    assert np.all(last[2] == 0)


def test_one_model_serves_changing_batch_sizes():
    model = fastlstm.LSTM(4, 6, num_layers=2, seed=2)
    for batch in (1, 3, 64, 3, 1):
        x = random_input(model, batch, 5, seed=batch)
        check_against_reference(model, x)
        h, c = model.zero_state(batch)
        assert h.shape == (2, batch, 6) and c.shape == (2, batch, 6)
        assert h.dtype == np.float32 and not h.any()


def test_reused_scratch_buffers_leave_no_trace():
    """A model keeps its calls' scratch buffers for later calls: whatever ran before (other
    shapes, lengths, by-step and all-steps-first projection, a stack's layer buffers), a call
    gives the bits a fresh model gives, and the model keeps at most two small buffer sets."""
    kw = dict(num_layers=2, bidirectional=True, proj_size=5, seed=4)
    model = fastlstm.LSTM(7, 9, **kw)
    rng = np.random.default_rng(5)
    calls = []
    for batch, steps, with_lengths in [(1, 30, False), (20, 12, True), (3, 2, False),
                                       (20, 12, False), (1, 30, True), (13, 40, True),
                                       (2, 1, False), (1, 30, False)]:
        x = rng.standard_normal((batch, steps, 7)).astype(np.float32)
        lengths = rng.integers(0, steps + 1, batch) if with_lengths else None
        state = random_state(model, batch, seed=batch + steps)
        calls.append((x, lengths, state))
    for x, lengths, state in calls + calls[::-1]:
        for ws in model.engine.kept_workspaces():   # what a kept set holds must not matter
            for buf in (ws.gx, ws.pre, ws.hs, ws.hs2, ws.cs, ws.hfull, ws.buf_a, ws.buf_b, ws.xc):
                buf[:] = np.nan
        y, (h, c) = model(x, state, lengths=lengths)
        y1, (h1, c1) = fastlstm.LSTM(7, 9, **kw)(x, state, lengths=lengths)
        for got, fresh in ((y, y1), (h, h1), (c, c1)):
            np.testing.assert_array_equal(got, fresh)
        assert_close(y, reference.run(model, x, state, lengths=lengths)[0])
    assert 1 <= len(model.engine.kept_workspaces()) <= 2
    # one thread alternating two shapes that do not fit each other's sets keeps and reuses both
    model.engine.drop_kept()
    a, b = random_input(model, 1, 40), random_input(model, 20, 2)
    model(a), model(b)
    kept = [id(ws) for ws in model.engine.kept_workspaces()]
    assert len(kept) == 2
    for _ in range(3):
        model(a), model(b)
    assert sorted(id(ws) for ws in model.engine.kept_workspaces()) == sorted(kept)
    # a set over the size bound serves its call and is not kept; the small one stays
    model.engine.drop_kept()
    model.engine.keep_bytes = 4096          # (the class's bound is 32 MiB)
    model(random_input(model, 1, 1))
    small = model.engine.kept_workspaces()[0]
    assert len(model.engine.kept_workspaces()) == 1 and small.nbytes <= 4096
    model(random_input(model, 30, 30))
    assert model.engine.kept_workspaces() == [small]


def test_zero_state_shapes_with_projection_and_directions():
    model = fastlstm.LSTM(4, 6, num_layers=3, bidirectional=True, proj_size=2)
    h, c = model.zero_state(5)
    assert h.shape == (6, 5, 2) and c.shape == (6, 5, 6)


def test_list_initial_state_and_input_dtypes():
    model = fastlstm.LSTM(3, 4, seed=0)
    x = random_input(model, 2, 3)
    h0, c0 = random_state(model, 2)
    base = model(x, initial_state=(h0, c0))
    for other in (x.astype(np.float64), x.astype(np.float16).astype(np.float32), x.tolist()):
        y, _ = model(other, initial_state=[h0, c0])
        assert y.dtype == np.float32
    y64, (h64, _) = model(x.astype(np.float64), initial_state=[h0.astype(np.float64), c0])
    np.testing.assert_array_equal(y64, base[0])
    np.testing.assert_array_equal(h64, base[1][0])


def test_weights_follow_pytorch_names_and_are_read_only():
    model = fastlstm.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, peepholes=True)
    w = model.weights
    expected = {}
    for k in range(2):
        for sfx in ("", "_reverse"):
            inp = 3 if k == 0 else 4
            expected.update({
                f"weight_ih_l{k}{sfx}": (16, inp), f"weight_hh_l{k}{sfx}": (16, 2),
                f"bias_ih_l{k}{sfx}": (16,), f"bias_hh_l{k}{sfx}": (16,),
                f"weight_hr_l{k}{sfx}": (2, 4), f"peephole_l{k}{sfx}": (3, 4)})
    assert {k: v.shape for k, v in w.items()} == expected
    for arr in w.values():
        assert arr.dtype == np.float32
        with pytest.raises(ValueError):
            arr[...] = 0
    cell = fastlstm.LSTMCell(3, 4)
    assert sorted(cell.weights) == ["bias_hh", "bias_ih", "weight_hh", "weight_ih"]


def test_seeded_pytorch_style_init():
    a = fastlstm.LSTM(5, 16, num_layers=2, seed=11).weights
    b = fastlstm.LSTM(5, 16, num_layers=2, seed=11).weights
    c = fastlstm.LSTM(5, 16, num_layers=2, seed=12).weights
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert np.abs(a[name]).max() <= 1 / np.sqrt(16)
    assert any(not np.array_equal(a[n], c[n]) for n in a)
    spread = np.concatenate([v.ravel() for v in a.values()])
    assert spread.std() == pytest.approx(1 / np.sqrt(16) / np.sqrt(3), rel=0.1)


def test_cell_matches_reference_and_one_layer_lstm():
    cell = fastlstm.LSTMCell(4, 6, proj_size=3, peepholes=True, forget_bias=1.0, seed=5)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    state = (rng.standard_normal((3, 3)).astype(np.float32),
             rng.standard_normal((3, 6)).astype(np.float32))
    y, (h, c) = cell(x, state)
    y_ref, (h_ref, c_ref) = reference.run(cell, x, state)
    assert_close(y, y_ref)
    assert_close(h, h_ref)
    assert_close(c, c_ref)
    np.testing.assert_array_equal(y, h)
    y0, (h0, c0) = cell(x)
    z = cell.zero_state(3)
    y1, _ = cell(x, z)
    np.testing.assert_array_equal(y0, y1)


def test_from_cells_keeps_weights_and_stacks():
    c1 = fastlstm.LSTMCell(4, 6, seed=1, forget_bias=1.0)
    c2 = fastlstm.LSTMCell(6, 3, seed=2, peepholes=True)
    stack = fastlstm.LSTM.from_cells([c1, c2])
    assert stack.num_layers == 2
    np.testing.assert_array_equal(stack.weights["weight_ih_l1"], c2.weights["weight_ih"])
    x = random_input(stack, 3, 5)
    y, (h, c) = check_against_reference(stack, x, lengths=np.array([5, 1, 3]))
    assert isinstance(h, tuple) and h[0].shape == (3, 6) and h[1].shape == (3, 3)
    # stepping the cells by hand gives the same
    s1, s2 = c1.zero_state(3), c2.zero_state(3)
    for t in range(5):
        o1, s1 = c1(x[:, t], s1)
        o2, s2 = c2(o1, s2)
    y_full, _ = stack(x)
    assert_close(o2, y_full[:, 4])
    bi = fastlstm.LSTM.from_cells([(c1, fastlstm.LSTMCell(4, 6, seed=9, forget_bias=1.0))],
                                  bidirectional=True)
    check_against_reference(bi, x)


def test_models_are_immutable_after_construction():
    model = fastlstm.LSTM(3, 4)
    w = model.weights
    w["weight_ih_l0"] = np.zeros((16, 3), np.float32)
    assert model.weights["weight_ih_l0"].any()


@pytest.mark.parametrize("batch_first", [True, False])
def test_reverse_layers_run_each_sequence_backward(batch_first):
    """A reverse layer (an ONNX direction="reverse" node) is a core direction: each sequence's
    valid steps, backward, each output at its own step. It equals the forward layer on each
    sequence's valid part flipped, and the reference."""
    from dataclasses import replace

    fwd = fastlstm.LSTM(5, 7, num_layers=2, batch_first=batch_first, seed=3)
    rev = fastlstm.LSTM.from_layers([replace(l, reverse=True) for l in fwd.layers],
                                    batch_first=batch_first)
    assert all(l.reverse for l in rev.layers) and "reverse=True" in repr(rev)
    x = random_input(fwd, 4, 6, seed=2)
    lengths = np.array([6, 0, 3, 1])
    state = random_state(fwd, 4)
    y, (h, c) = rev(x, state, lengths=lengths)
    y_ref, (h_ref, c_ref) = reference.run(rev, x, state, lengths=lengths)
    assert_close(y, y_ref)
    assert_close(h, h_ref)
    assert_close(c, c_ref)
    xb = x if batch_first else x.transpose(1, 0, 2)
    yb = y if batch_first else y.transpose(1, 0, 2)
    for b, n in enumerate(lengths):
        flipped = xb[b:b + 1, :n][:, ::-1]
        one = flipped if batch_first else flipped.transpose(1, 0, 2)
        y1, (h1, c1) = fwd(np.ascontiguousarray(one), (state[0][:, b:b + 1], state[1][:, b:b + 1]))
        y1 = y1 if batch_first else y1.transpose(1, 0, 2)
        assert_close(yb[b, :n], y1[0, ::-1])
        assert_close(h[:, b], h1[:, 0])
        assert not yb[b, n:].any()
    with pytest.raises(ValueError, match=r"^stream\(\) needs a unidirectional model"):
        rev.stream()
    with pytest.raises(ValueError, match=r"^StreamPool needs a unidirectional model"):
        fastlstm.StreamPool(rev)


def test_held_initial_state_pickles_and_saves(tmp_path):
    import pickle
    from dataclasses import replace

    base = fastlstm.LSTM(3, 4, num_layers=2, seed=1)
    held = random_state(base, 2, seed=9)
    model = fastlstm.LSTM.from_layers([replace(base.layers[0], reverse=True), base.layers[1]],
                                      initial_state=held)
    x = random_input(model, 2, 5)
    y, _ = model(x)
    assert_close(y, reference.run(model, x, held)[0])
    np.testing.assert_array_equal(y, model(x, held)[0])
    model.save(tmp_path / "m.npz")
    for clone in (pickle.loads(pickle.dumps(model)), fastlstm.load(tmp_path / "m.npz")):
        assert [l.reverse for l in clone.layers] == [True, False]
        np.testing.assert_array_equal(clone.initial_state[0], held[0])
        np.testing.assert_array_equal(clone(x)[0], y)
    assert base.initial_state is None


def _reverse_stack(proj_size, batch_first=True):
    """Three layers, the first and last reverse (ONNX direction="reverse" nodes), sized so
    that two threads share a step from a batch of 15 (fl_tuning.h's thresholds)."""
    from dataclasses import replace

    base = fastlstm.LSTM(16, 64, num_layers=3, proj_size=proj_size, batch_first=batch_first,
                         seed=11)
    layers = [replace(l, reverse=k != 1) for k, l in enumerate(base.layers)]
    return fastlstm.LSTM.from_layers(layers, batch_first=batch_first)


STEP_BATCH = _core._kernel_constants_for_test()["FL_STEP_PROJECTION_MIN_BATCH"]


@pytest.mark.parametrize("proj_size", [0, 20])
@pytest.mark.parametrize("batch", [3, STEP_BATCH + 3, 24])
def test_reverse_layers_on_batches_threads_and_projections(batch, proj_size):
    """Reverse layers against the reference below and past the batch from which the inputs
    are projected step by step, with a projection, on one thread and on two (cutting a step
    by hidden blocks at 15 rows, by rows at 24), which give the same bits."""
    model = _reverse_stack(proj_size)
    rng = np.random.default_rng(batch)
    x = random_input(model, batch, 7, seed=batch)
    lengths = rng.integers(0, 8, batch)
    lengths[:2] = [7, 0]
    state = random_state(model, batch)
    runs = {}
    for threads in (1, 2):
        fastlstm.set_num_threads(threads)
        plan = model.engine.plan(batch, 7, lengths=True)
        simd = not _core.runtime_facts()["blas_used"]
        assert all(r["by_step"] == (simd and batch >= STEP_BATCH) for r in plan.decisions)
        if threads == 2 and batch > STEP_BATCH:
            assert max(r["threads"] for r in plan.decisions) == 2
        runs[threads] = [model(x, state, lengths=lengths),
                         model(x, state, lengths=lengths, return_sequences=False),
                         model(x)]
    for got in (runs[1], runs[2]):
        for (y, (h, c)), kwargs in zip(got, [dict(initial_state=state, lengths=lengths),
                                             dict(initial_state=state, lengths=lengths,
                                                  return_sequences=False), {}]):
            y_ref, (h_ref, c_ref) = reference.run(model, x, **kwargs)
            assert_close(y, y_ref)
            assert_close(h, h_ref)
            assert_close(c, c_ref)
    for (y1, (h1, c1)), (y2, (h2, c2)) in zip(runs[1], runs[2]):
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(h1, h2)
        np.testing.assert_array_equal(c1, c2)


def test_reverse_layers_on_the_portable_kernels(tmp_path):
    """The same under FASTLSTM_SIMD=portable (plain C, sgemm projections), in a fresh
    process: the kernel table is chosen once per process."""
    code = """
        import numpy as np
        import fastlstm
        from fastlstm import reference
        from conftest import assert_close, random_input, random_state
        from test_models import _reverse_stack
        assert fastlstm.runtime.config()["simd"].startswith("portable")
        for proj_size, batch_first, threads in ((0, True, 1), (20, False, 2)):
            fastlstm.set_num_threads(threads)
            model = _reverse_stack(proj_size, batch_first)
            x = random_input(model, 15, 7, seed=proj_size)
            lengths = np.array([7, 0] + [1, 3, 6, 7, 2] * 2 + [5, 4, 7])
            state = random_state(model, 15)
            for kwargs in (dict(initial_state=state, lengths=lengths), {},
                           dict(lengths=lengths, return_sequences=False)):
                y, (h, c) = model(x, **kwargs)
                y_ref, (h_ref, c_ref) = reference.run(model, x, **kwargs)
                assert_close(y, y_ref)
                assert_close(h, h_ref)
                assert_close(c, c_ref)
        print("portable reverse ok")
    """
    assert "portable reverse ok" in run_portable(code, tmp_path)


@pytest.mark.parametrize("batch_first", [True, False])
def test_a_held_state_with_empty_sequences_and_last_outputs(batch_first):
    """A model holding an initial state (with a reverse layer), called without one on
    sequences of length 0, and on time 0, for the last output only: zeros for those
    sequences, their final state the held one, as the reference says."""
    from dataclasses import replace

    base = fastlstm.LSTM(3, 4, num_layers=2, batch_first=batch_first, seed=4)
    held = random_state(base, 3, seed=5)
    model = fastlstm.LSTM.from_layers([replace(base.layers[0], reverse=True), base.layers[1]],
                                      batch_first=batch_first, initial_state=held)
    for steps, lengths in ((5, np.array([5, 0, 2])), (0, None), (0, np.zeros(3, int))):
        x = random_input(model, 3, steps)
        y, (h, c) = model(x, lengths=lengths, return_sequences=False)
        y_ref, (h_ref, c_ref) = reference.run(model, x, lengths=lengths,
                                              return_sequences=False)
        assert y.shape == (3, 4)
        assert_close(y, y_ref)
        assert_close(h, h_ref)
        assert_close(c, c_ref)
        empty = (np.full(3, steps) if lengths is None else lengths) == 0
        assert not y[empty].any()
        np.testing.assert_array_equal(h[:, empty], held[0][:, empty])
        np.testing.assert_array_equal(c[:, empty], held[1][:, empty])
