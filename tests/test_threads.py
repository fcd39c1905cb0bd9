"""One model shared by many Python threads: correct results, and real parallelism because the
native call releases the GIL."""
import hashlib
import os
import statistics
import threading
import time

import numpy as np
import pytest

import fastlstm
from fastlstm import reference

ATOL = RTOL = 2e-5


@pytest.fixture
def threads_setting():
    before = fastlstm.get_num_threads()
    yield
    fastlstm.set_num_threads(before)


def run_in_threads(target, n):
    """Start n threads on target(index) together; re-raise the first error in this thread."""
    errors = []
    start = threading.Barrier(n)

    def body(i):
        try:
            start.wait()
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("num_threads", [1, 2])
def test_many_threads_share_one_model(threads_setting, num_threads):
    fastlstm.set_num_threads(num_threads)
    model = fastlstm.LSTM(10, 32, num_layers=2, bidirectional=True, proj_size=12, seed=1)
    n_threads, calls = 8, 4
    rng = np.random.default_rng(0)
    inputs = []
    for i in range(n_threads):
        batch, steps = 1 + i % 4, 5 + 3 * i   # every thread its own shapes
        x = rng.standard_normal((batch, steps, 10)).astype(np.float32)
        lengths = rng.integers(0, steps + 1, batch)
        state = tuple(rng.standard_normal((4, batch, w)).astype(np.float32) for w in (12, 32))
        inputs.append((x, lengths, state))
    results = [[None] * calls for _ in range(n_threads)]

    def work(i):
        x, lengths, state = inputs[i]
        for k in range(calls):
            results[i][k] = model(x, initial_state=state, lengths=lengths)

    run_in_threads(work, n_threads)
    for i, (x, lengths, state) in enumerate(inputs):
        want_y, (want_h, want_c) = reference.run(model, x, state, lengths)
        for y, (h, c) in results[i]:
            np.testing.assert_allclose(y, want_y, rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(h, want_h, rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(c, want_c, rtol=RTOL, atol=ATOL)
            np.testing.assert_array_equal(y, results[i][0][0])   # no run saw another's data


def test_threads_stream_their_own_streams(threads_setting):
    fastlstm.set_num_threads(1)
    model = fastlstm.LSTM(6, 20, seed=2)
    n_threads, steps = 6, 40
    xs = np.random.default_rng(1).standard_normal((n_threads, 2, steps, 6)).astype(np.float32)
    outputs = np.zeros((n_threads, 2, steps, 20), np.float32)

    def work(i):
        stream = model.stream(batch_size=2)
        for t in range(steps):
            outputs[i, :, t] = stream.step(xs[i, :, t])

    run_in_threads(work, n_threads)
    want, _ = reference.run(model, xs.reshape(-1, steps, 6))
    np.testing.assert_allclose(outputs.reshape(-1, steps, 20), want, rtol=RTOL, atol=ATOL)


def test_the_gil_is_released_while_the_kernel_computes(threads_setting):
    """A Python thread keeps running while another is inside a long model call. Held GIL: it
    would get only the switch interval (5 ms) around each call of about 200 ms. This holds on
    one core too, so it checks the mechanism where the speed-up test below cannot run."""
    fastlstm.set_num_threads(1)
    model = fastlstm.LSTM(128, 256, seed=3)
    x = np.random.default_rng(2).standard_normal((16, 300, 128)).astype(np.float32)
    model(x)
    counter, done = [0], []

    def spin():
        while not done:
            counter[0] += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        time.sleep(0.05)
        t0, c0 = time.perf_counter(), counter[0]
        time.sleep(0.2)
        alone = (counter[0] - c0) / (time.perf_counter() - t0)   # spins per second, idle main
        shares = []
        for _ in range(3):
            t0, c0 = time.perf_counter(), counter[0]
            model(x)
            shares.append((counter[0] - c0) / (time.perf_counter() - t0) / alone)
    finally:
        done.append(True)
        spinner.join()
    assert statistics.median(shares) > 0.2, (
        f"another Python thread ran at only {statistics.median(shares):.0%} of its own pace "
        f"during model calls: {[round(v, 3) for v in shares]}")


def speedup(work, rounds=3):
    """Median time of work() twice in one thread over the median time of two threads running
    work() at once; serial and threaded runs alternate so that they see the same load."""
    serial, threaded = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        work()
        work()
        serial.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_in_threads(lambda _: work(), 2)
        threaded.append(time.perf_counter() - t0)
    return statistics.median(serial) / statistics.median(threaded)


def test_two_threads_run_in_parallel(threads_setting):
    """With one kernel thread each, two Python threads beat one thread doing the same calls in
    turn: the GIL is released while the kernel computes (a GIL held there gives about 1x).

    Other processes share this machine and can take a core away at any moment. So each round
    brackets the measurement with a probe of the machine itself, two threads hashing large
    buffers (hashlib releases the GIL): a round counts against fastlstm only when the probe
    found two free cores both before and after it. A run where no round reached 1.3x fails
    with all the numbers (on a machine kept busy by others, the probes show why)."""
    assert len(os.sched_getaffinity(0)) >= 2, "this test needs two cores"
    fastlstm.set_num_threads(1)
    model = fastlstm.LSTM(128, 256, seed=3)
    x = np.random.default_rng(2).standard_normal((16, 100, 128)).astype(np.float32)
    data = bytes(16 << 20)

    def infer():
        model(x)
        model(x)

    def digest():
        hashlib.sha256(data).digest()
        hashlib.sha256(data).digest()

    infer()   # warm up the code paths and the allocator
    rounds, failed_on_free_machine = [], []
    for _ in range(4):
        before, ours, after = speedup(digest), speedup(infer), speedup(digest)
        rounds.append((round(before, 2), round(ours, 2), round(after, 2)))
        if ours > 1.3:
            return
        if min(before, after) >= 1.6:
            failed_on_free_machine.append(ours)
    assert not failed_on_free_machine, (
        f"two threads ran fastlstm only {max(failed_on_free_machine):.2f}x faster than one "
        f"while the machine had two free cores; rounds (probe, fastlstm, probe): {rounds}")
    pytest.fail(f"two threads never ran fastlstm 1.3x faster than one, and the machine never "
                f"had two free cores around a measurement (other load); rounds (probe, "
                f"fastlstm, probe): {rounds}")
