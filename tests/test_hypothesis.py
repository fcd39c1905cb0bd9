"""Shapes, options, lengths and states drawn by hypothesis, native against the reference."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastlstm
from fastlstm import reference

from conftest import assert_close, assert_states_close

ACTIVATIONS = ["tanh", "softsign", ("scaled_tanh", 1.2, 0.8), "sigmoid"]


@st.composite
def cases(draw):
    hidden = draw(st.integers(1, 20))
    opts = dict(
        num_layers=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        proj_size=draw(st.sampled_from([0, 0, 1, hidden - 1])) if hidden > 1 else 0,
        peepholes=draw(st.booleans()),
        forget_bias=draw(st.sampled_from([0.0, 1.0])),
        input_forget=draw(st.booleans()),
        cell_clip=draw(st.sampled_from([None, 0.5, 3.0])),
        gate_clip=draw(st.sampled_from([None, 1.0])),
        activation=draw(st.sampled_from(ACTIVATIONS)),
        seed=draw(st.integers(0, 2**16)),
    )
    model = fastlstm.LSTM(draw(st.integers(1, 12)), hidden, **opts)
    batch, steps = draw(st.integers(0, 6)), draw(st.integers(0, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape = (batch, steps, model.input_size) if model.batch_first else \
        (steps, batch, model.input_size)
    x = rng.standard_normal(shape).astype(np.float32)
    lengths = rng.integers(0, steps + 1, batch) if draw(st.booleans()) else None
    state = None
    if draw(st.booleans()):
        h, c = model.zero_state(batch)
        state = (rng.standard_normal(h.shape).astype(np.float32),
                 rng.standard_normal(c.shape).astype(np.float32))
    return model, x, lengths, state, draw(st.booleans())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_native_matches_reference(case):
    model, x, lengths, state, return_sequences = case
    y, states = model(x, initial_state=state, lengths=lengths, return_sequences=return_sequences)
    y_ref, states_ref = reference.run(model, x, initial_state=state, lengths=lengths,
                                      return_sequences=return_sequences)
    assert y.shape == y_ref.shape
    assert_close(y, y_ref)
    assert_states_close(states, states_ref)
