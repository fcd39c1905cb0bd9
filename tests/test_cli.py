"""The ``fastlstm`` command (``python -m fastlstm``, fastlstm.cli): info, inspect, convert and
bench, end to end on a real ONNX file, and its errors."""
import importlib.metadata
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import fastlstm
from fastlstm import cli

from conftest import assert_close, torch_export_warnings

I, H, B, T = 3, 5, 2, 6


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    """A one-node ONNX LSTM (forward, batch 2, 6 steps) written to disk."""
    rng = np.random.default_rng(7)
    weights = {"W": rng.uniform(-.5, .5, (1, 4 * H, I)), "R": rng.uniform(-.5, .5, (1, 4 * H, H)),
               "B": rng.uniform(-.3, .3, (1, 8 * H))}
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], name="encoder_lstm",
                            hidden_size=H)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [T, 1, B, H])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("cli") / "encoder.onnx"
    onnx.save(model, str(path))
    return str(path)


def run_cli(*args, cwd=None):
    """``python -m fastlstm ARGS`` in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "fastlstm", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def test_info_prints_show_config(tmp_path):
    done = run_cli("info", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"fastlstm {fastlstm.__version__}"
    cfg = fastlstm.runtime.config()
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["OpenMP", "threads", "BLAS",
                                                                   "SIMD", "int8"]
    assert cfg["simd"] in lines[4]
    assert cfg["reduced_precision"]["int8"] in lines[5]
    assert (cfg["openmp_runtime"] or "off (serial build)") in lines[1]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"fastlstm {fastlstm.__version__}\n"


def test_console_script_is_the_cli():
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="fastlstm")
    assert script.load() is cli.main


def test_convert_onnx_writes_the_model(onnx_file, tmp_path, capsys):
    out = tmp_path / "model.npz"
    assert cli.main(["convert", onnx_file, "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: ")
    model = fastlstm.load(out)
    want = fastlstm.LSTM.from_onnx(onnx_file)
    assert sorted(model.weights) == sorted(want.weights)
    for name, value in want.weights.items():
        np.testing.assert_array_equal(model.weights[name], value)
    # The saved model gives ONNX Runtime's outputs on the file's own graph.
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    (y_ort,) = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"]).run(
        ["Y"], {"X": x})
    assert not model.batch_first      # layout 0: time-major, as the file has it
    y, _ = model(x)
    assert_close(y, y_ort[:, 0])


def test_convert_by_node_name_in_a_fresh_process(onnx_file, tmp_path):
    out = tmp_path / "picked.npz"
    done = run_cli("convert", onnx_file, "--node", "encoder_lstm", "-o", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(fastlstm.load(out).weights["weight_hh_l0"],
                                  fastlstm.LSTM.from_onnx(onnx_file).weights["weight_hh_l0"])


@torch_export_warnings
def test_convert_takes_a_chain_of_onnx_nodes(tmp_path, capsys):
    """torch.onnx.export writes a 2-layer nn.LSTM as two LSTM nodes; ``--node A,B`` takes
    the chain as one 2-layer model (the loader's node=[A, B]), ``--node A`` the first alone."""
    import torch

    torch.manual_seed(0)
    module = torch.nn.LSTM(I, H, 2).eval()
    x = np.random.default_rng(3).standard_normal((T, B, I)).astype(np.float32)
    path = str(tmp_path / "stack.onnx")
    torch.onnx.export(module, (torch.from_numpy(x),), path, dynamo=False, input_names=["x"],
                      output_names=["y", "h", "c"], opset_version=14)
    names = [n.name for n in onnx.load(path).graph.node if n.op_type == "LSTM"]
    assert len(names) == 2
    out = tmp_path / "stack.npz"
    assert cli.main(["convert", path, "--node", ",".join(names), "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: LSTM({I}, {H}, num_layers=2")
    model = fastlstm.load(out)
    y, (h, c) = model(x)
    y_ref, (h_ref, c_ref) = fastlstm.reference.run(model, x)
    assert_close(y, y_ref)
    assert_close(h, h_ref)
    assert_close(c, c_ref)
    with torch.no_grad():
        y_torch, _ = module(torch.from_numpy(x))
    np.testing.assert_allclose(y, y_torch.numpy(), atol=1e-5, rtol=0)

    first = tmp_path / "first.npz"
    assert cli.main(["convert", path, "--node", names[0], "-o", str(first)]) == 0
    assert fastlstm.load(first).num_layers == 1
    assert cli.main(["convert", path, "--node", f"{names[1]},{names[0]}", "-o",
                     str(tmp_path / "never.npz")]) == 1
    assert "does not take" in capsys.readouterr().err


def test_inspect_onnx_prints_the_inventory(onnx_file, capsys):
    inventory = fastlstm.inspect(onnx_file)
    (found,) = inventory
    assert (found.selector, found.name) == ("node", "encoder_lstm")
    assert (found.input_size, found.hidden_size, found.num_layers) == (I, H, 1)
    assert cli.main(["inspect", onnx_file]) == 0
    out = capsys.readouterr().out
    assert out == f"{inventory}\n" and "node='encoder_lstm'" in out


@pytest.mark.parametrize("flag", ["--layer", "--module", "--scope"])
def test_convert_refuses_a_selector_of_another_framework(onnx_file, tmp_path, capsys, flag):
    out = tmp_path / "never.npz"
    assert cli.main(["convert", onnx_file, flag, "encoder_lstm", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fastlstm convert: error: {flag} does not apply to ")
    assert "an ONNX model" in err and "--node NAME" in err
    assert not out.exists()


def test_convert_unknown_node_is_an_error_naming_it(onnx_file, tmp_path, capsys):
    assert cli.main(["convert", onnx_file, "--node", "decoder", "-o",
                     str(tmp_path / "m.npz")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fastlstm convert: error: ") and "'decoder'" in err


@pytest.mark.parametrize("args,message", [
    (["convert", "{file}", "--node", "a", "--layer", "b", "-o", "m.npz"], "not allowed with"),
    (["convert", "{file}"], "the following arguments are required: -o/--output"),
    (["convert", "missing.onnx", "-o", "m.npz"], "argument file: 'missing.onnx' does not exist"),
    (["inspect", "missing.keras"], "argument file: 'missing.keras' does not exist"),
    (["info", "--threads", "2"], "unrecognized arguments: --threads 2"),
    ([], "the following arguments are required: COMMAND"),
    (["train"], "invalid choice: 'train'"),
])
def test_usage_errors_exit_2_naming_the_argument(onnx_file, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([a.format(file=onnx_file) for a in args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_takes_the_benchmarks_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: fastlstm bench [-h] [--quick]")
    out = tmp_path / "bench"
    assert cli.main(["bench", "--quick", "--in-process", "--threads", "1", "--workloads",
                     "stream_step", "--peers", "numpy", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["mode"] == "quick"
    assert results["meta"]["command"].startswith("fastlstm bench --quick")
    (run,) = results["runs"]
    (stream_step,) = run["workloads"]
    assert stream_step["name"] == "stream_step" and stream_step["error_vs_float64"] < 3e-7
    assert stream_step["peers"]["numpy"]["time_s"] > 0
    assert "stream_step" in capsys.readouterr().out
    assert os.path.isfile(out / "RESULTS.md")
