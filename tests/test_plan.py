"""The run plan (csrc/fl_plan.c, asked through the engine): what it decides for the shapes
around each threshold of csrc/fl_tuning.h, that every door (model call, stream, pool) gets
the same plan for the same work, and that the buffers it sizes are the ones a run uses."""
import numpy as np
import pytest

import fastlstm
from fastlstm import _core, reference

from conftest import assert_close, random_input

FACTS = _core.runtime_facts()
SIMD = not FACTS["blas_used"]        # AVX2/AVX-512 tiles project the inputs (else sgemm)
STEP_BATCH = _core._kernel_constants_for_test()["FL_STEP_PROJECTION_MIN_BATCH"]


def decisions(model, batch, steps, **kw):
    return model.engine.plan(batch, steps, **kw).decisions


@pytest.mark.parametrize("batch", [1, STEP_BATCH - 1, STEP_BATCH, 3 * STEP_BATCH])
def test_projection_mode_follows_the_batch(batch):
    model = fastlstm.LSTM(16, 32, num_layers=2, seed=0)
    for run in decisions(model, batch, 5):
        assert run["by_step"] == (SIMD and batch >= STEP_BATCH)
        assert run["by_tiles"] == SIMD
        assert run["single_row"] == 0
    # stepwise runs (streams, pools) always project in the tiles: rows must not interact
    assert all(r["by_tiles"] for r in decisions(model, batch, 5, stepwise=True))


def test_one_row_one_step_projects_pair_by_pair():
    model = fastlstm.LSTM(16, 32, seed=0)
    assert decisions(model, 1, 1, stepwise=True)[0]["single_row"] == 1
    assert decisions(model, 1, 2, stepwise=True)[0]["single_row"] == 0
    assert decisions(model, 2, 1, stepwise=True)[0]["single_row"] == 0
    # with lengths a lone row is projected compactly, not pair by pair
    assert decisions(model, 1, 1, lengths=True)[0]["single_row"] == 0


@pytest.mark.parametrize("batch", [3, 40])
def test_only_valid_rows_are_projected_with_lengths(batch):
    model = fastlstm.LSTM(16, 32, seed=0)
    compact = [r["compact"] for r in decisions(model, batch, 7, lengths=True)]
    by_step = SIMD and batch >= STEP_BATCH
    assert compact == [not by_step]            # a step-by-step projection needs no packing
    assert not any(r["compact"] for r in decisions(model, batch, 7))
    assert not any(r["compact"] for r in decisions(model, batch, 7, lengths=True,
                                                   stepwise=True))


def test_threads_and_their_split():
    small = fastlstm.LSTM(4, 8, seed=0)
    big = fastlstm.LSTM(256, 512, seed=0)          # a step's weights: 6 MiB, past L2
    mid = fastlstm.LSTM(64, 128, seed=0)           # 0.75 MiB: fits L2
    fastlstm.set_num_threads(2)
    assert decisions(small, 64, 3)[0]["threads"] == 1      # too little work for two
    assert decisions(mid, 64, 3)[0]["by_rows"] == 1
    assert decisions(mid, 64, 3)[0]["threads"] == 2
    assert decisions(big, 64, 3)[0]["by_rows"] == 0        # all weights each step: blocks
    assert decisions(big, 64, 3)[0]["ask_ahead"] == 1
    assert decisions(mid, 4, 3)[0]["by_rows"] == 0         # too few rows a thread
    fastlstm.set_num_threads(1)
    assert all(r["threads"] == 1 and r["by_rows"] == 0 for r in decisions(big, 64, 3))


def test_every_door_gets_the_same_plan_for_the_same_work():
    model = fastlstm.LSTM(8, 16, seed=0)
    engine = model.engine
    batch = 5
    stream = model.stream(batch_size=batch)
    pool = fastlstm.StreamPool(model)
    for k in range(batch):
        pool.open(k)
    x = random_input(model, batch, 1)
    stream.step(x[:, 0])
    pool.step({k: x[k, 0] for k in range(batch)})
    plan = engine.plan(batch, 1, stepwise=True)
    # made once, kept: the stream's runner and the pool's follow this very object
    assert engine.plan(batch, 1, stepwise=True) is plan
    assert stream.plan is plan
    assert pool.plan(batch) is plan
    # and a model call of the same work uses the same decisions, with its own projection
    call = engine.plan(batch, 1)
    assert [r["by_step"] for r in call.decisions] == [r["by_step"] for r in plan.decisions]
    assert [r["threads"] for r in call.decisions] == [r["threads"] for r in plan.decisions]


def test_a_plan_is_made_once_per_shape_and_thread_count():
    model = fastlstm.LSTM(8, 16, seed=0)
    a = model.engine.plan(4, 3)
    assert model.engine.plan(4, 3) is a
    assert model.engine.plan(4, 3, lengths=True) is not a
    fastlstm.set_num_threads(1 if fastlstm.get_num_threads() > 1 else 2)
    assert model.engine.plan(4, 3) is not a


@pytest.mark.parametrize("batch,steps,lengths", [(1, 1, False), (3, 9, True), (20, 6, True),
                                                 (13, 4, False)])
def test_buffers_sized_by_the_plan_are_enough(batch, steps, lengths):
    """A run on a workspace of exactly the plan's sizes, each buffer poisoned with NaN first,
    gives the reference's numbers (a buffer sized short would be read past its end or
    leave NaN behind)."""
    model = fastlstm.LSTM(12, 24, num_layers=3, bidirectional=True, proj_size=10, seed=1)
    engine = model.engine
    x = random_input(model, batch, steps, seed=batch)
    lens = np.random.default_rng(steps).integers(0, steps + 1, batch).astype(np.int32) \
        if lengths else None
    plan = engine.plan(batch, steps, lengths=lengths)
    ws = engine.workspace(plan)
    assert ws.floats == plan.floats
    for buf in (ws.gx, ws.pre, ws.hs, ws.hs2, ws.cs, ws.hfull, ws.buf_a, ws.buf_b, ws.xc):
        buf[:] = np.nan
    runner = engine.runner(plan, ws)
    y = np.zeros((batch, steps, 2 * 10), np.float32)
    hn, cn = engine.zero_state(batch)
    runner.run(x, y, [None] * 6, [None] * 6, hn, cn, lens)
    y_ref, (h_ref, c_ref) = reference.run(model, x, lengths=lens)
    assert_close(y, y_ref)
    assert_close(hn, h_ref)
    assert_close(cn, c_ref)


@pytest.mark.parametrize("other", [
    {"num_layers": 1},                   # fewer cells
    {"num_layers": 2, "hidden_size": 8},  # the same cells, other sizes
    {"num_layers": 2, "proj_size": 3},
    {"num_layers": 2, "input_size": 5},
    {"num_layers": 2, "peepholes": True},  # the same sizes; the plan fuses only standard cells
])
def test_a_runner_refuses_a_plan_made_for_other_layers(other):
    model = fastlstm.LSTM(4, 6, num_layers=2, seed=0)
    kwargs = dict({"input_size": 4, "hidden_size": 6, "seed": 0}, **other)
    plan = fastlstm.LSTM(**kwargs).engine.plan(3, 2)
    ws = model.engine.workspace(plan)
    with pytest.raises(ValueError, match=r"^the plan was made for other layers"):
        model.engine.runner(plan, ws)
    own = model.engine.plan(3, 2)
    assert model.engine.runner(own, model.engine.workspace(own)).plan is own
