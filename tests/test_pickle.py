"""Models pickle by value: sizes, options and raw float32 weights, nothing executable but the
model's class, and the unpickled model computes the same numbers."""
import copy
import pickle
import pickletools

import numpy as np
import pytest

import fastlstm


def models():
    return {
        "lstm": fastlstm.LSTM(5, 7, seed=0),
        "deep-bidirectional": fastlstm.LSTM(
            6, 10, num_layers=3, bidirectional=True, proj_size=4, peepholes=True,
            forget_bias=1.0, cell_clip=2.5, gate_clip=4.0, proj_clip=1.5,
            activation=("leaky_relu", 0.2), recurrent_activation="hard_sigmoid", seed=1),
        "time-major-coupled": fastlstm.LSTM(3, 8, num_layers=2, batch_first=False,
                                            input_forget=True, output_activation="softsign",
                                            seed=2),
        "cell": fastlstm.LSTMCell(4, 6, seed=3),
        "cell-proj-peep": fastlstm.LSTMCell(4, 9, proj_size=5, peepholes=True, cell_clip=3.0,
                                            activation="relu", seed=4),
        "from-cells": fastlstm.LSTM.from_cells([fastlstm.LSTMCell(3, 6, seed=5),
                                                fastlstm.LSTMCell(6, 4, seed=6)]),
    }


@pytest.fixture(params=sorted(models()))
def model(request):
    return models()[request.param]


def outputs(model):
    rng = np.random.default_rng(7)
    if isinstance(model, fastlstm.LSTMCell):
        x = rng.standard_normal((3, model.input_size))
        state = tuple(rng.standard_normal((3, w)) for w in (model.output_size,
                                                             model.hidden_size))
        y, (h, c) = model(x, state)
        return [y, h, c]
    shape = (4, 5, model.input_size) if model.batch_first else (5, 4, model.input_size)
    x = rng.standard_normal(shape)
    y, (h, c) = model(x, lengths=[5, 0, 3, 1])
    hs = list(h) if isinstance(h, tuple) else [h]
    cs = list(c) if isinstance(c, tuple) else [c]
    return [y] + hs + cs


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_round_trip_gives_the_same_model(model, protocol):
    clone = pickle.loads(pickle.dumps(model, protocol=protocol))
    assert type(clone) is type(model)
    assert repr(clone) == repr(model)
    assert [l.options for l in clone.layers] == [l.options for l in model.layers]
    assert clone.weights.keys() == model.weights.keys()
    for name, arr in model.weights.items():
        np.testing.assert_array_equal(clone.weights[name], arr)
        assert clone.weights[name].dtype == np.float32
        assert not clone.weights[name].flags.writeable
    for got, want in zip(outputs(clone), outputs(model)):
        np.testing.assert_array_equal(got, want)


def test_copies_are_independent_models(model):
    for clone in (copy.copy(model), copy.deepcopy(model)):
        for got, want in zip(outputs(clone), outputs(model)):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("protocol", range(3, pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_is_compact_and_names_only_the_class(model, protocol):
    data = pickle.dumps(model, protocol=protocol)
    weight_bytes = sum(a.nbytes for a in model.weights.values())
    assert len(data) < weight_bytes + 1500 + 120 * len(model.weights)
    strings, imports = [], []
    for op, arg, _ in pickletools.genops(data):
        assert op.name not in ("REDUCE", "INST", "OBJ", "NEWOBJ_EX"), op.name
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            imports.append(tuple(strings[-2:]))
        elif op.name == "GLOBAL":
            imports.append(tuple(arg.split(" ")))
    assert imports == [("fastlstm.models", type(model).__name__)]


def test_unpickling_validates_the_weights():
    model = fastlstm.LSTM(3, 4, seed=0)
    state = model.__getstate__()
    shape, data = state["layers"][0]["directions"][0]["weight_hh"]
    state["layers"][0]["directions"][0]["weight_hh"] = (shape, data[:-4])
    with pytest.raises(ValueError):
        fastlstm.LSTM.__new__(fastlstm.LSTM).__setstate__(state)
    nan = np.full(shape, np.nan, np.float32).tobytes()
    state["layers"][0]["directions"][0]["weight_hh"] = (shape, nan)
    with pytest.raises(ValueError, match="pickled layer 0 weight_hh contains NaN or Inf"):
        fastlstm.LSTM.__new__(fastlstm.LSTM).__setstate__(state)
    with pytest.raises(ValueError, match="unknown format 99"):
        fastlstm.LSTM.__new__(fastlstm.LSTM).__setstate__({"format": 99})


def test_an_unpickled_model_serves_a_pool():
    model = fastlstm.LSTM(4, 6, num_layers=2, seed=9)
    clone = pickle.loads(pickle.dumps(model))
    pools = [fastlstm.StreamPool(m) for m in (model, clone)]
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    for pool in pools:
        pool.open("k")
    for t in range(5):
        a, b = (pool.step({"k": x[t]})["k"] for pool in pools)
        np.testing.assert_array_equal(a, b)


def _reverse_and_held():
    from dataclasses import replace

    base = fastlstm.LSTM(3, 4, num_layers=2, seed=1)
    reverse = fastlstm.LSTM.from_layers([replace(base.layers[0], reverse=True),
                                         base.layers[1]])
    held = fastlstm.LSTM.from_layers(base.layers, initial_state=base.zero_state(2))
    return base, reverse, held


def test_models_older_versions_would_misread_pickle_as_format_2(monkeypatch):
    """Format 1 readers ignore a reverse layer and a held initial_state, and would give other
    numbers: such models pickle as format 2, which those readers refuse; any other model
    stays format 1, which every version reads."""
    base, reverse, held = _reverse_and_held()
    assert base.__getstate__()["format"] == 1
    assert reverse.__getstate__()["format"] == 2
    assert held.__getstate__()["format"] == 2
    data = {name: pickle.dumps(m) for name, m in
            (("base", base), ("reverse", reverse), ("held", held))}
    monkeypatch.setattr(fastlstm.LSTM, "_PICKLE_FORMATS", (1,))   # as an older reader
    pickle.loads(data["base"])
    for name in ("reverse", "held"):
        with pytest.raises(ValueError, match="^cannot unpickle LSTM: unknown format 2$"):
            pickle.loads(data[name])


def test_format_1_pickles_still_load():
    """What earlier versions wrote (format 1, with or without the reverse and initial_state
    entries) loads as it did."""
    base, reverse, held = _reverse_and_held()
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    for model in (base, reverse, held):
        state = model.__getstate__()
        state["format"] = 1
        clone = fastlstm.LSTM.__new__(fastlstm.LSTM)
        clone.__setstate__(state)
        assert [l.reverse for l in clone.layers] == [l.reverse for l in model.layers]
        assert (clone.initial_state is None) == (model.initial_state is None)
        np.testing.assert_array_equal(clone(x)[0], model(x)[0])
    state = base.__getstate__()
    del state["initial_state"]
    for layer in state["layers"]:
        del layer["reverse"]
    clone = fastlstm.LSTM.__new__(fastlstm.LSTM)
    clone.__setstate__(state)
    np.testing.assert_array_equal(clone(x)[0], base(x)[0])
    with pytest.raises(ValueError, match="unknown format 4"):
        fastlstm.LSTM.__new__(fastlstm.LSTM).__setstate__(dict(state, format=4))
    with pytest.raises(ValueError, match="pickled precision must be .int8. or"):   # 3: quantized
        fastlstm.LSTM.__new__(fastlstm.LSTM).__setstate__(dict(state, format=3))
