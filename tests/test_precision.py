"""fastlstm.quantize: int8 and bfloat16 models against the float64 reference of the float32
model they came from, held to the bounds the README states (BOUNDS); and everything a float32
model does (options, lengths, states, streams, pools, threads, pickle, save/load) giving the
same bits however it is reached."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import fastlstm
from fastlstm import _core, reference
from fastlstm.bench.workloads import trained_like

# Stated bounds (docs/precision.md): max and mean |error| against float64, for
# PyTorch's init and for the trained-like one (weights x3, forget bias + 1).
BOUNDS = {
    ("int8", "pytorch"): (2.5e-3, 2.5e-4),
    ("bfloat16", "pytorch"): (2.5e-3, 2.5e-4),
    ("int8", "trained-like"): (3e-2, 1.5e-3),
    ("bfloat16", "trained-like"): (1.6e-2, 8e-4),
}
PRECISIONS = ("int8", "bfloat16")


def inputs(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def errors(y, ref):
    e = np.abs(np.asarray(y, np.float64) - ref)
    return e.max(), e.mean()


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("init", ["pytorch", "trained-like"])
@pytest.mark.parametrize("shape", [(1, 100, 128, 256), (8, 30, 64, 96), (13, 12, 33, 50),
                                   (4, 6, 300, 320)])
def test_error_within_stated_bound(precision, init, shape):
    B, T, I, H = shape
    model = fastlstm.LSTM(I, H, seed=1)
    if init == "trained-like":
        model = trained_like(model)
    x = inputs((B, T, I))
    ref, (h_ref, c_ref) = reference.run(model, x)
    y, (h, c) = fastlstm.quantize(model, precision)(x)
    worst, mean = errors(y, ref)
    bound_max, bound_mean = BOUNDS[precision, init]
    assert worst <= bound_max and mean <= bound_mean, (worst, mean)
    assert errors(h, h_ref)[0] <= bound_max
    assert errors(c, c_ref)[0] <= 4 * bound_max   # c is not bounded by 1


@pytest.mark.parametrize("precision", PRECISIONS)
def test_long_sequence_error(precision):
    """T = 1000: the error does not grow with the sequence (the cell state forgets it)."""
    model = fastlstm.LSTM(64, 128, seed=2)
    x = inputs((1, 1000, 64), seed=3)
    ref = reference.run(model, x)[0]
    y = fastlstm.quantize(model, precision)(x)[0]
    worst, mean = errors(y, ref)
    bound_max, bound_mean = BOUNDS[precision, "pytorch"]
    assert worst <= bound_max and mean <= bound_mean, (worst, mean)
    assert errors(y[:, -100:], ref[:, -100:])[0] <= bound_max


OPTIONS = {
    "stack bidirectional": dict(num_layers=2, bidirectional=True),
    "projection": dict(proj_size=24, num_layers=2),
    "peepholes and clips": dict(peepholes=True, cell_clip=1.5, proj_size=20, proj_clip=0.7),
    "keras cell": dict(recurrent_activation="hard_sigmoid", activation="relu", forget_bias=1.0),
    "coupled gates": dict(input_forget=True, gate_clip=3.0),
}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", OPTIONS)
def test_options_lengths_and_states(precision, name):
    model = fastlstm.LSTM(40, 48, seed=4, **OPTIONS[name])
    q = fastlstm.quantize(model, precision)
    assert type(q) is fastlstm.LSTM and q.precision == precision and model.precision == "float32"
    x = inputs((6, 9, 40), seed=5)
    lengths = np.array([9, 0, 3, 9, 1, 5])
    h0, c0 = (0.5 * inputs(a.shape, seed=6 + i) for i, a in enumerate(model.zero_state(6)))
    for kwargs in (dict(), dict(lengths=lengths), dict(initial_state=(h0, c0)),
                   dict(lengths=lengths, initial_state=(h0, c0), return_sequences=False)):
        ref, (h_ref, c_ref) = reference.run(model, x, **kwargs)
        y, (h, c) = q(x, **kwargs)
        bound = BOUNDS[precision, "pytorch"][0]
        assert errors(y, ref)[0] <= bound and errors(h, h_ref)[0] <= bound, kwargs
        assert errors(c, c_ref)[0] <= 4 * bound, kwargs
        if "lengths" in kwargs and kwargs.get("return_sequences", True):
            assert np.all(y[1] == 0) and np.all(y[2, 3:] == 0)   # padding stays zero


@pytest.mark.parametrize("precision", PRECISIONS)
def test_cell(precision):
    cell = fastlstm.LSTMCell(30, 20, seed=7, proj_size=10)
    q = fastlstm.quantize(cell, precision)
    assert type(q) is fastlstm.LSTMCell and q.precision == precision
    x = inputs((5, 30), seed=8)
    state = (0.3 * inputs((5, 10), seed=9), 0.3 * inputs((5, 20), seed=10))
    ref, (h_ref, c_ref) = reference.run(cell, x, state)
    y, (h, c) = q(x, state)
    assert errors(h, h_ref)[0] <= BOUNDS[precision, "pytorch"][0]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_same_bits_for_any_threads_batch_and_door(precision):
    """A row's result depends on that row alone: 1 or 2 threads, alone or in a batch of any
    size, through a model call, a stream or a pool."""
    q = fastlstm.quantize(fastlstm.LSTM(64, 128, num_layers=2, seed=11), precision)
    x = inputs((40, 7, 64), seed=12)
    before = fastlstm.get_num_threads()
    try:
        fastlstm.set_num_threads(1)
        one, (h1, c1) = q(x)
        fastlstm.set_num_threads(2)
        two, (h2, c2) = q(x)
        alone = np.concatenate([q(x[b:b + 1])[0] for b in (0, 17, 39)])
    finally:
        fastlstm.set_num_threads(before)
    assert np.array_equal(one, two) and np.array_equal(h1, h2) and np.array_equal(c1, c2)
    assert np.array_equal(alone, one[[0, 17, 39]])
    for n in (1, 5, 13):
        assert np.array_equal(q(x[:n])[0], one[:n])
    stream = q.stream(batch_size=3)
    steps = np.stack([stream.step(x[:3, t]) for t in range(7)], axis=1)
    assert np.array_equal(steps, one[:3])
    pool = fastlstm.StreamPool(q)
    for key in ("a", "b"):
        pool.open(key)
    for t in range(7):
        out = pool.step({"a": x[5, t], "b": x[6, t]})
        assert np.array_equal(out["a"], one[5, t]) and np.array_equal(out["b"], one[6, t])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_projection_rows_owned_by_threads(precision):
    """With a projection, 2 threads cut by rows (a batch of 16 rows or more): each thread
    quantizes its rows of hfull while the other still reads its rows of h. Repeated calls give
    the bits of one thread every time (a shared buffer for both once raced here)."""
    q = fastlstm.quantize(fastlstm.LSTM(40, 70, proj_size=30, seed=23), precision)
    x = inputs((20, 5, 40), seed=24)
    before = fastlstm.get_num_threads()
    try:
        fastlstm.set_num_threads(1)
        one = q(x)[0]
        fastlstm.set_num_threads(2)
        runs = [q(x)[0] for _ in range(12)]
    finally:
        fastlstm.set_num_threads(before)
    assert all(np.array_equal(y, one) for y in runs)
    ref = reference.run(fastlstm.LSTM(40, 70, proj_size=30, seed=23), x)[0]
    assert errors(one, ref)[0] <= BOUNDS[precision, "pytorch"][0]


def test_projection_on_more_threads_than_the_loop():
    """One int8 sequence: the loop keeps one thread (a step is too short to share), the inputs'
    projection before it takes both; the bits are those of one thread."""
    q = fastlstm.quantize(fastlstm.LSTM(128, 256, seed=25), "int8")
    x = inputs((1, 100, 128), seed=26)
    before = fastlstm.get_num_threads()
    try:
        fastlstm.set_num_threads(1)
        one = q(x)[0]
        fastlstm.set_num_threads(2)
        run = q.engine.plan(1, 100).decisions[0]
        two = q(x)[0]
    finally:
        fastlstm.set_num_threads(before)
    assert run["threads"] == 1 and run["projection_threads"] == 2
    assert np.array_equal(one, two)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_pickle_save_load_same_bits(precision, tmp_path):
    model = fastlstm.LSTM(20, 30, num_layers=2, bidirectional=True, proj_size=12, seed=13)
    q = fastlstm.quantize(model, precision)
    x = inputs((3, 5, 20), seed=14)
    y = q(x)[0]
    back = pickle.loads(pickle.dumps(q))
    assert back.precision == precision and np.array_equal(back(x)[0], y)
    path = tmp_path / "q.npz"
    q.save(path)
    loaded = fastlstm.load(path)
    assert loaded.precision == precision and np.array_equal(loaded(x)[0], y)
    with np.load(path, allow_pickle=False) as files:
        codes = files["weight_hh_l1_reverse"]
        assert codes.dtype == (np.int8 if precision == "int8" else np.uint16)
        assert codes.shape == (120, 12)
        assert ("weight_hh_l1_reverse_scale" in files.files) == (precision == "int8")
        assert files["bias_ih_l0"].dtype == np.float32
    # float32 files stay version 1, which older versions read
    model.save(tmp_path / "f.npz")
    assert fastlstm.load(tmp_path / "f.npz").precision == "float32"


def test_quantize_copies_and_converts():
    model = fastlstm.LSTM(16, 24, seed=15)
    x = inputs((2, 4, 16), seed=16)
    q = fastlstm.quantize(model, "int8")
    again = fastlstm.quantize(q, "int8")
    assert again is not q and np.array_equal(again(x)[0], q(x)[0])
    back = fastlstm.quantize(q, "float32")
    assert back.precision == "float32"
    # the float32 copy computes with the values the codes stand for, exactly
    assert np.array_equal(back.weights["weight_hh_l0"], q.weights["weight_hh_l0"])
    copy = fastlstm.quantize(model, "float32")
    assert copy is not model and np.array_equal(copy(x)[0], model(x)[0])
    assert "precision='int8'" in repr(q) and "precision" not in repr(model)


def test_held_state_kept():
    model = fastlstm.LSTM(8, 6, seed=17)
    h0, c0 = (0.2 * inputs(a.shape, seed=18 + i) for i, a in enumerate(model.zero_state(2)))
    held = fastlstm.LSTM.from_layers(model.layers, initial_state=(h0, c0))
    q = fastlstm.quantize(held, "bfloat16")
    assert np.array_equal(q.initial_state[0], h0)
    x = inputs((2, 3, 8), seed=20)
    ref = reference.run(held, x)[0]
    assert errors(q(x)[0], ref)[0] <= BOUNDS["bfloat16", "pytorch"][0]


def test_bad_arguments():
    model = fastlstm.LSTM(4, 5, seed=0)
    with pytest.raises(ValueError, match="precision must be one of .*got 'int4'"):
        fastlstm.quantize(model, "int4")
    with pytest.raises(TypeError, match="model must be a fastlstm LSTM or LSTMCell, got dict"):
        fastlstm.quantize({}, "int8")


def _tamper(path, name, value):
    with np.load(path, allow_pickle=False) as files:
        arrays = dict(files)
    arrays[name] = value
    np.savez(path, **arrays)


@pytest.mark.parametrize("name,value,message", [
    ("weight_ih_l0", np.full((20, 4), -128, np.int8), "within -127..127"),
    ("weight_ih_l0", np.zeros((20, 4), np.float32), "int8 codes must be int8"),
    ("weight_ih_l0_scale", np.full(20, np.nan, np.float32), "finite"),
    ("weight_hh_l0_scale", np.ones(3, np.float32), "scales must be float32 of shape"),
])
def test_tampered_quantized_file(tmp_path, name, value, message):
    path = tmp_path / "q.npz"
    fastlstm.quantize(fastlstm.LSTM(4, 5, seed=0), "int8").save(path)
    _tamper(path, name, value)
    with pytest.raises(ValueError, match=message):
        fastlstm.load(path)


_ISA_SCRIPT = """
import sys, numpy as np, fastlstm
q = fastlstm.quantize(fastlstm.LSTM(48, 70, num_layers=2, proj_size=30, seed=21), sys.argv[1])
x = np.random.default_rng(22).standard_normal((9, 6, 48)).astype(np.float32)
y = q(x)[0]
# a lone row (its blocks in one kernel call) gives the bits it has in the batch
assert np.array_equal(q(x[4:5])[0], y[4:5])
np.save(sys.argv[2], y)
"""


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_instruction_set(precision, tmp_path):
    """Each table this CPU runs (FASTLSTM_SIMD caps the choice), in a process of its own: int8
    sums are exact, so the AVX2 and AVX-512 tables give the same bits; the portable table's
    activations are libm's, and bfloat16's native instruction rounds its own way."""
    results = {}
    for isa in [name for name, _, _ in _core._simd_tables_for_test()]:
        out = tmp_path / f"{isa}.npy"
        env = dict(os.environ, FASTLSTM_SIMD=isa)
        subprocess.run([sys.executable, "-c", _ISA_SCRIPT, precision, str(out)], env=env,
                       check=True)
        results[isa] = np.load(out)
    model = fastlstm.LSTM(48, 70, num_layers=2, proj_size=30, seed=21)
    ref = reference.run(model, np.random.default_rng(22).standard_normal((9, 6, 48)).astype(np.float32))[0]
    for isa, y in results.items():
        assert errors(y, ref)[0] <= BOUNDS[precision, "pytorch"][0], isa
    if precision == "int8" and "avx2" in results and "avx512" in results:
        assert np.array_equal(results["avx2"], results["avx512"])


def test_pool_steps_of_any_size_and_thread_count():
    """A pool keeps one workspace for its steps; quantized buffers do not grow with the batch
    alone (a thread's own buffers when a step is cut by blocks), so a smaller step or more
    threads may need more: the pool grows it."""
    q = fastlstm.quantize(fastlstm.LSTM(128, 256, seed=27), "int8")
    x = inputs((20, 128), seed=28)
    stream = q.stream(batch_size=20)
    want = stream.step(x)
    before = fastlstm.get_num_threads()
    try:
        fastlstm.set_num_threads(1)
        pool = fastlstm.StreamPool(q)
        for b in range(16):
            pool.open(b)
        fastlstm.set_num_threads(2)
        out = pool.step({b: x[b] for b in range(16)})
        for b in range(16, 20):
            pool.open(b)
        out.update(pool.step({b: x[b] for b in range(16, 20)}))
        smaller = fastlstm.StreamPool(q)
        for b in range(13):
            smaller.open(b)
        small = smaller.step({b: x[b] for b in range(13)})
    finally:
        fastlstm.set_num_threads(before)
    assert all(np.array_equal(out[b], want[b]) for b in range(20))
    assert all(np.array_equal(small[b], want[b]) for b in range(13))


def test_from_cells_keeps_the_precision():
    cell = fastlstm.quantize(fastlstm.LSTMCell(6, 8, seed=29), "int8")
    stack = fastlstm.LSTM.from_cells([cell])
    x = inputs((2, 3, 6), seed=30)
    assert stack.precision == "int8"
    assert np.array_equal(stack(x)[0][:, 0], cell(x[:, 0])[0])
    other = fastlstm.quantize(fastlstm.LSTMCell(8, 8, seed=31), "bfloat16")
    with pytest.raises(ValueError, match="cells must share one precision"):
        fastlstm.LSTM.from_cells([cell, other])


def test_extreme_values():
    """Rows of tiny values quantize as zeros on every table alike; weights past bfloat16's
    range saturate rather than become infinite."""
    tiny = np.array([[1e-38, 5e-39, 0.0, -2e-39, 1e-45, 0.0, 0.0, 0.0]], np.float32)
    for isa in [name for name, _, _ in _core._simd_tables_for_test()]:
        codes, scales = _core._quantize_rows_for_test("int8", tiny, 2, isa)
        assert np.all(codes == 128) and np.all(scales == 0), isa
    model = fastlstm.LSTM(4, 4, seed=32)
    weights = dict(model.weights)
    weights["weight_hh_l0"] = weights["weight_hh_l0"].copy()
    weights["weight_hh_l0"][0, 0] = 3.4e38
    q = fastlstm.quantize(fastlstm.LSTM.from_torch(weights, batch_first=True), "bfloat16")
    assert np.isfinite(q.weights["weight_hh_l0"]).all()
    assert q.weights["weight_hh_l0"][0, 0] == np.float32(3.3895314e38)


def test_crafted_quantized_pickles_are_refused():
    q = fastlstm.quantize(fastlstm.LSTM(5, 6, seed=33), "int8")
    for change, message in [
            (lambda s: s.pop("codes"), "codes must be a list"),
            (lambda s: s.update(precision="float32"), "must be 'int8' or 'bfloat16'"),
            (lambda s: s["codes"][0].pop(), "codes must be a list"),
            (lambda s: s["codes"][0][0].update(bias_ih=s["codes"][0][0]["weight_hh"]),
             "not a int8 weight"),
            (lambda s: s["codes"][0][0].update(weight_hh=(1, 2, 3)), "malformed codes")]:
        state = q.__getstate__()
        change(state)
        with pytest.raises(ValueError, match=message):
            fastlstm.LSTM.__new__(fastlstm.LSTM).__setstate__(state)
