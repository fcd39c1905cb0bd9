"""Long streaming runs: no growth of the resident set, and a step allocates only its outputs."""
import os
import time
import tracemalloc

import numpy as np
import pytest

import fastlstm

PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(autouse=True)
def one_thread():
    """Memory, not threads, is under test: one thread keeps the timings steady on a busy
    machine."""
    before = fastlstm.get_num_threads()
    fastlstm.set_num_threads(1)
    yield
    fastlstm.set_num_threads(before)


def rss_bytes():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def churn(pool, rng, keys, steps, xs):
    """Steps where about half the streams step, and now and then one closes and reopens."""
    for t in range(steps):
        pool.step({k: xs[(t + k) % len(xs)] for k in keys if (t * 7 + k) % 3})
        if t % 25 == 0:
            k = keys[rng.integers(len(keys))]
            pool.open(k, state=pool.close(k))


def test_long_pool_run_keeps_memory_flat():
    model = fastlstm.LSTM(16, 32, num_layers=2, seed=0)
    pool = fastlstm.StreamPool(model)
    keys = list(range(24))
    for k in keys:
        pool.open(k)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((97, 16)).astype(np.float32)
    churn(pool, rng, keys, 2000, xs)   # reach the steady state of every buffer and cache
    before = rss_bytes()
    start = time.perf_counter()
    churn(pool, rng, keys, 30000, xs)
    elapsed = time.perf_counter() - start
    growth = rss_bytes() - before
    assert growth < 1 << 20, f"resident set grew by {growth / 1024:.0f} KiB over 30000 steps"
    assert elapsed < 10, f"30000 steps took {elapsed:.1f} s"


def test_long_stream_run_keeps_memory_flat():
    model = fastlstm.LSTM(16, 64, seed=1)
    stream = model.stream(batch_size=4)
    xs = np.random.default_rng(1).standard_normal((97, 4, 16)).astype(np.float32)
    for t in range(2000):
        stream.step(xs[t % 97])
    before = rss_bytes()
    for t in range(30000):
        stream.step(xs[t % 97])
    growth = rss_bytes() - before
    assert growth < 1 << 20, f"resident set grew by {growth / 1024:.0f} KiB over 30000 steps"


def test_a_pool_step_allocates_little_and_keeps_nothing():
    """NumPy reports its buffers to tracemalloc: across many steps the traced memory returns
    to where it was, and the peak stays near the size of one step's outputs."""
    model = fastlstm.LSTM(16, 64, num_layers=2, seed=2)
    pool = fastlstm.StreamPool(model)
    for k in range(64):
        pool.open(k)
    x = np.ones(16, np.float32)
    inputs = {k: x for k in range(64)}
    pool.step(inputs)
    outputs_bytes = 64 * 64 * 4
    tracemalloc.start()
    try:
        pool.step(inputs)
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(200):
            pool.step(inputs)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current - base < 16 << 10, f"{current - base} bytes stayed allocated after 200 steps"
    assert peak - base < 2 * outputs_bytes + (32 << 10), \
        f"a step peaked at {peak - base} bytes for {outputs_bytes} bytes of outputs"
