"""StreamPool: streams that join, leave and skip steps, stepped as one batch, against the
float64 reference run of each stream alone."""
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastlstm
from fastlstm import reference

from conftest import assert_close

ATOL = RTOL = 2e-5   # float32 kernel vs float64 reference over a few dozen steps


def models():
    return {
        "lstm": fastlstm.LSTM(5, 7, seed=1),
        "stacked-proj-peep": fastlstm.LSTM(6, 9, num_layers=2, proj_size=4, peepholes=True,
                                           cell_clip=3.0, forget_bias=1.0, seed=2),
        "time-major": fastlstm.LSTM(3, 8, batch_first=False, seed=3),
        "cell": fastlstm.LSTMCell(4, 6, proj_size=3, seed=4),
    }


@pytest.fixture(params=sorted(models()))
def model(request):
    return models()[request.param]


def per_direction_state(model, state):
    """A pool state (as open() takes it) as the reference's per-(layer, direction) lists."""
    h, c = state
    if isinstance(model, fastlstm.LSTMCell):
        return [np.asarray(h, np.float64)], [np.asarray(c, np.float64)]
    return [np.asarray(a, np.float64) for a in h], [np.asarray(a, np.float64) for a in c]


def reference_stream(model, xs, state=None):
    """The float64 run of one stream alone: its outputs (T, out) and final per-layer states."""
    x = np.asarray(xs, np.float64)[None]
    init = None if state is None else per_direction_state(model, state)
    y, (h, c) = reference.lstm(model.layers, x, initial_state=init)
    return y[0], h, c


def random_state(model, rng):
    h, c = model.zero_state(1)
    if isinstance(h, np.ndarray):
        return (rng.standard_normal(h.shape).astype(np.float32) * 0.5,
                rng.standard_normal(c.shape).astype(np.float32) * 0.5)
    return (tuple(rng.standard_normal(a.shape).astype(np.float32) for a in h),
            tuple(rng.standard_normal(a.shape).astype(np.float32) for a in c))


def run_schedule(model, pool, rng, steps, keys, check):
    """Drive `pool` through a random schedule of opens, closes and partial steps; call
    check(key, xs, ys, initial_state, final_state) for every stream when it closes."""
    live = {}   # key -> (initial state, inputs, outputs)
    for _ in range(steps):
        for key in keys:
            roll = rng.random()
            if key not in live and roll < 0.3:
                state = random_state(model, rng) if rng.random() < 0.5 else None
                pool.open(key, state=state)
                live[key] = (state, [], [])
            elif key in live and roll < 0.08:
                init, xs, ys = live.pop(key)
                check(key, xs, ys, init, pool.close(key))
        stepping = [k for k in live if rng.random() < 0.7]   # the rest skip this step
        inputs = {k: rng.standard_normal(model.input_size).astype(np.float32) for k in stepping}
        outputs = pool.step(inputs)
        assert list(outputs) == stepping
        for k in stepping:
            live[k][1].append(inputs[k])
            live[k][2].append(outputs[k])
    for key, (init, xs, ys) in live.items():
        check(key, xs, ys, init, pool.close(key))
    assert len(pool) == 0


def check_against_reference(model):
    def check(key, xs, ys, init, final):
        want_y, want_h, want_c = reference_stream(model, np.reshape(xs, (-1, model.input_size)),
                                                  init)
        got_h, got_c = per_direction_state(model, final)
        if xs:
            np.testing.assert_allclose(np.stack(ys), want_y, rtol=RTOL, atol=ATOL,
                                       err_msg=f"outputs of stream {key!r}")
        for got, want in zip(got_h + got_c, want_h + want_c):
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL,
                                       err_msg=f"final state of stream {key!r}")
    return check


def test_streams_join_leave_and_skip_steps_like_running_alone(model):
    rng = np.random.default_rng(0)
    pool = fastlstm.StreamPool(model)
    keys = [0, 1, "user-a", "user-b", ("device", 7), 2.5, None, b"raw", 3, 4, 5, 6]
    run_schedule(model, pool, rng, steps=40, keys=keys, check=check_against_reference(model))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_keys=st.integers(1, 20), steps=st.integers(1, 25),
       hidden=st.integers(1, 12), layers=st.integers(1, 2))
def test_random_schedules_match_reference(seed, n_keys, steps, hidden, layers):
    model = fastlstm.LSTM(3, hidden, num_layers=layers, seed=seed % 1000)
    rng = np.random.default_rng(seed)
    run_schedule(model, fastlstm.StreamPool(model), rng, steps, list(range(n_keys)),
                 check_against_reference(model))


def test_more_streams_than_the_initial_capacity():
    model = fastlstm.LSTM(4, 5, seed=0)
    pool = fastlstm.StreamPool(model)
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((100, 3, 4)).astype(np.float32)
    for k in range(50):
        pool.open(k)
    ys = [pool.step({k: xs[k, 0] for k in range(50)})]
    for k in range(50, 100):
        pool.open(k)   # the slabs grow while 50 streams are half-way
    ys.append(pool.step({k: xs[k, 1 if k < 50 else 0] for k in range(100)}))
    ys.append(pool.step({k: xs[k, 2] for k in range(50)}))
    early, _ = reference.lstm(model.layers, xs[:50])
    got = [[ys[t][k] for t in range(3)] for k in range(50)]
    np.testing.assert_allclose(got, early, rtol=RTOL, atol=ATOL)
    late, _ = reference.lstm(model.layers, xs[50:, :1])
    np.testing.assert_allclose([[ys[1][k]] for k in range(50, 100)], late, rtol=RTOL, atol=ATOL)


def test_close_then_reopen_with_the_state_continues_the_stream():
    model = fastlstm.LSTM(4, 6, num_layers=2, seed=3)
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((6, 4)).astype(np.float32)
    whole, interrupted = fastlstm.StreamPool(model), fastlstm.StreamPool(model)
    whole.open("k")
    interrupted.open("k")
    for t in range(6):
        if t == 3:
            state = interrupted.close("k")
            assert state[0].shape == (2, 1, 6) and state[1].shape == (2, 1, 6)
            interrupted.open("k", state=state)
        a = whole.step({"k": xs[t]})["k"]
        b = interrupted.step({"k": xs[t]})["k"]
        np.testing.assert_array_equal(a, b)
    for a, b in zip(whole.state("k"), interrupted.close("k")):
        np.testing.assert_array_equal(a, b)


def test_state_and_close_return_copies_in_the_models_shapes():
    lstm = fastlstm.LSTM(3, 5, num_layers=3, seed=0)
    pool = fastlstm.StreamPool(lstm)
    pool.open("a")
    h, c = pool.state("a")
    h[:] = 9.0
    assert not pool.state("a")[0].any()
    assert [a.shape for a in pool.close("a")] == [(3, 1, 5), (3, 1, 5)]
    cell = fastlstm.LSTMCell(3, 5, proj_size=2, seed=0)
    cell_pool = fastlstm.StreamPool(cell)
    cell_pool.open("a", state=cell.zero_state(1))
    assert [a.shape for a in cell_pool.close("a")] == [(1, 2), (1, 5)]


def test_input_shapes_and_dtypes():
    model = fastlstm.LSTM(3, 4, seed=0)
    pool = fastlstm.StreamPool(model)
    for k in "abcd":
        pool.open(k)
    x = np.array([0.5, -1.0, 2.0])
    ys = pool.step({"a": x.astype(np.float32), "b": x.astype(np.float16),
                    "c": x[None, :], "d": x.tolist()})
    assert ys["a"].shape == ys["b"].shape == ys["d"].shape == (4,)
    assert ys["c"].shape == (1, 4)
    assert all(y.dtype == np.float32 for y in ys.values())
    np.testing.assert_array_equal(ys["a"], ys["c"][0])
    np.testing.assert_array_equal(ys["a"], ys["d"])
    assert pool.step({}) == {}


@pytest.mark.parametrize("input_size, hidden_size", [(4, 8), (16, 32), (33, 64)])
def test_a_stream_does_not_depend_on_its_companions(input_size, hidden_size):
    """One stream stepped alone, then with 1..63 others: bitwise the same outputs."""
    model = fastlstm.LSTM(input_size, hidden_size, num_layers=2, seed=5)
    rng = np.random.default_rng(3)
    steps = 12
    xs = rng.standard_normal((64, steps, input_size)).astype(np.float32)
    alone = fastlstm.StreamPool(model)
    alone.open("me")
    want = np.stack([alone.step({"me": xs[0, t]})["me"] for t in range(steps)])
    for companions in (1, 2, 7, 8, 9, 31, 63):
        pool = fastlstm.StreamPool(model)
        for k in range(companions):
            pool.open(k)
        pool.open("me")
        got = []
        for t in range(steps):
            inputs = {k: xs[1 + k, t] for k in range(companions) if (k + t) % 3}
            inputs["me"] = xs[0, t]
            got.append(pool.step(inputs)["me"])
        np.testing.assert_array_equal(np.stack(got), want,
                                      err_msg=f"with {companions} companions")


@pytest.mark.parametrize("input_size, hidden_size", [(4, 8), (16, 32), (7, 50), (128, 256),
                                                     (33, 64)])
def test_batch_size_does_not_change_results(input_size, hidden_size):
    """Kernel contract behind StreamPool: a streamed sequence's result is bitwise the same
    whatever batch it runs in. Streaming steps project their inputs with fastlstm's own tile
    kernel, not with BLAS sgemm, whose path (gemv for one column, small-matrix kernels)
    changes with the batch size and rounds differently."""
    model = fastlstm.LSTM(input_size, hidden_size, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3, input_size)).astype(np.float32)

    def streamed(batch):
        s = model.stream(batch_size=batch)
        return np.stack([s.step(x[:batch, t]) for t in range(3)], axis=1)

    y_full = streamed(40)
    gaps = {n: np.abs(streamed(n) - y_full[:n]).max() for n in range(1, 40)}
    differ = {n: float(gap) for n, gap in gaps.items() if gap}
    assert not differ, (f"batch sizes {sorted(differ)} give results that are not bitwise "
                        f"those of the same rows in a batch of 40 (largest gap "
                        f"{max(differ.values()):.3g})")


def test_errors_name_the_key_and_the_argument():
    model = fastlstm.LSTM(3, 4, num_layers=2, seed=0)
    pool = fastlstm.StreamPool(model)
    pool.open("a")
    with pytest.raises(ValueError, match=r"open: stream 'a' is already open"):
        pool.open("a")
    with pytest.raises(TypeError, match=r"open: key must be hashable, got list"):
        pool.open(["a"])
    for call in (lambda: pool.close("zz"), lambda: pool.state("zz"),
                 lambda: pool.step({"a": np.zeros(3), "zz": np.zeros(3)})):
        with pytest.raises(ValueError, match=r"stream 'zz' is not open \(call open\('zz'\)"):
            call()
    with pytest.raises(ValueError, match=r"x_t for stream 'a' must have shape \(input_size,\) "
                                         r"= \(3,\) or \(1, 3\), got \(4,\)"):
        pool.step({"a": np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match=r"x_t for stream 'a' .* got \(2, 3\)"):
        pool.step({"a": np.zeros((2, 3))})
    with pytest.raises(TypeError, match=r"x_t for stream 'a' must have a real floating dtype "
                                        r".*got int64"):
        pool.step({"a": np.zeros(3, np.int64)})
    with pytest.raises(TypeError, match=r"x_t for stream 'a'"):
        pool.step({"a": "abc"})
    with pytest.raises(TypeError, match=r"inputs must be a mapping \{key: x_t\}, got list"):
        pool.step([np.zeros(3)])
    with pytest.raises(ValueError, match=r"open\('b'\): state h0 has batch 2 but a StreamPool "
                                         r"stream has batch 1"):
        pool.open("b", state=model.zero_state(2))
    with pytest.raises(ValueError, match=r"open\('b'\): state c0 has width 3 but the model's "
                                         r"cell size is 4"):
        pool.open("b", state=(np.zeros((2, 1, 4)), np.zeros((2, 1, 3))))
    with pytest.raises(TypeError, match=r"open\('b'\): state must be a pair"):
        pool.open("b", state=np.zeros((2, 1, 4)))
    cell_pool = fastlstm.StreamPool(fastlstm.LSTMCell(3, 4))
    with pytest.raises(ValueError, match=r"open\('c'\): state h must have shape \(batch, "
                                         r"output_size\) = \(1, 4\), got \(2, 4\)"):
        cell_pool.open("c", state=(np.zeros((2, 4)), np.zeros((1, 4))))
    with pytest.raises(TypeError, match=r"^open\('c'\): state must be a pair \(h, c\)"):
        cell_pool.open("c", state=np.zeros((2, 1, 4)))
    assert "b" not in pool and "c" not in cell_pool
    with pytest.raises(ValueError, match="unidirectional"):
        fastlstm.StreamPool(fastlstm.LSTM(3, 4, bidirectional=True))
    with pytest.raises(TypeError, match="StreamPool needs a fastlstm.LSTM or LSTMCell"):
        fastlstm.StreamPool("model")


def test_a_failed_step_moves_no_stream():
    model = fastlstm.LSTM(3, 4, seed=0)
    pool = fastlstm.StreamPool(model)
    pool.open("a")
    pool.open("b")
    pool.step({"a": np.ones(3), "b": np.ones(3)})
    before = [pool.state(k) for k in "ab"]
    with pytest.raises(ValueError):
        pool.step({"a": np.ones(3), "b": np.ones(5)})
    with pytest.raises(ValueError):
        pool.step({"a": np.ones(3), "nope": np.ones(3)})
    for k, (h, c) in zip("ab", before):
        np.testing.assert_array_equal(pool.state(k)[0], h)
        np.testing.assert_array_equal(pool.state(k)[1], c)


def test_a_refused_row_step_leaves_no_rows_behind():
    """The core's row step (what a pool step calls) checks every row and every state slab
    before it sets anything: after a bad row index or a bad slab, the slabs are as they were,
    a plain run of the same runner reads sequence b's state from row b, and a good row step
    gives the reference's numbers."""
    model = fastlstm.LSTM(3, 5, num_layers=2, seed=2)
    engine = model.engine
    B, capacity = 2, 4
    plan = engine.plan(B, 1, stepwise=True)
    runner = engine.runner(plan, engine.workspace(plan))
    rng = np.random.default_rng(0)
    h = [rng.standard_normal((capacity, 5)).astype(np.float32) for _ in range(2)]
    c = [rng.standard_normal((capacity, 5)).astype(np.float32) for _ in range(2)]
    before = [a.copy() for a in h + c]
    x = rng.standard_normal((B, 1, 3)).astype(np.float32)
    y = np.empty((B, 1, 5), np.float32)
    rows = np.array([1, 0], np.int32)
    with pytest.raises(ValueError, match=r"^rows\[1\] = 7 is not a row of slabs of 4"):
        runner.step_rows(x, y, h, c, np.array([0, 7], np.int32))
    with pytest.raises(ValueError, match=r"^state entry 1 must be"):   # after entry 0's check
        runner.step_rows(x, y, [h[0], h[1][:, :4]], c, rows)
    for got, want in zip(h + c, before):
        np.testing.assert_array_equal(got, want)

    h0, c0 = np.stack([a[:B] for a in h]), np.stack([a[:B] for a in c])
    hn, cn = engine.zero_state(B)
    runner.run(x, y, h0, c0, hn, cn, None)
    y_ref, (h_ref, c_ref) = reference.run(model, x, (h0, c0))
    assert_close(y, y_ref)
    assert_close(hn, h_ref)
    assert_close(cn, c_ref)

    runner.step_rows(x, y, h, c, rows)
    y_ref, (h_ref, c_ref) = reference.run(model, x, (np.stack([a[rows] for a in before[:2]]),
                                                     np.stack([a[rows] for a in before[2:]])))
    assert_close(y, y_ref)
    assert_close(np.stack([a[rows] for a in h]), h_ref)
    assert_close(np.stack([a[rows] for a in c]), c_ref)
    for got, want in zip(h + c, before):   # the rows no sequence named are untouched
        np.testing.assert_array_equal(got[2:], want[2:])


def test_one_pool_shared_by_threads():
    """Threads open, step and close their own streams on one pool at the same time."""
    model = fastlstm.LSTM(8, 24, num_layers=2, seed=7)
    pool = fastlstm.StreamPool(model)
    n_threads, per_thread, steps = 6, 5, 30
    rng = np.random.default_rng(4)
    xs = rng.standard_normal((n_threads, per_thread, steps, 8)).astype(np.float32)
    outputs = np.zeros((n_threads, per_thread, steps, 24), np.float32)
    errors = []
    start = threading.Barrier(n_threads)

    def serve(t):
        try:
            keys = [(t, s) for s in range(per_thread)]
            start.wait()
            for key in keys:
                pool.open(key)
            for step in range(steps):
                ys = pool.step({key: xs[t, key[1], step] for key in keys})
                for key in keys:
                    outputs[t, key[1], step] = ys[key]
            for key in keys:
                pool.close(key)
        except Exception as exc:   # reported below, in the test's own thread
            errors.append(exc)

    threads = [threading.Thread(target=serve, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(pool) == 0
    want, _ = reference.lstm(model.layers, xs.reshape(-1, steps, 8))
    np.testing.assert_allclose(outputs.reshape(-1, steps, 24), want, rtol=RTOL, atol=ATOL)


def test_a_step_is_one_native_call_over_the_batch():
    model = fastlstm.LSTM(3, 4, num_layers=2, seed=0)
    pool = fastlstm.StreamPool(model)
    for k in range(20):
        pool.open(k)
    calls = []
    for inputs in ({k: np.zeros(3) for k in range(0, 20, 2)}, {5: np.zeros(3)}):
        before = fastlstm._core.executions()
        pool.step(inputs)
        calls.append(fastlstm._core.executions() - before)
    assert calls == [1, 1]
