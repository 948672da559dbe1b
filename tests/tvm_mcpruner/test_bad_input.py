"""Bad input gets a clear error naming the problem, before any long work (issue 25, item 10)."""

from __future__ import annotations

import contextlib
import io
import socket
import time

import pytest
import torch
from onnx import TensorProto, helper

import tvm_mcpruner as mcp
from tvm_mcpruner import cli


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
    return code, err.getvalue()


@pytest.mark.parametrize("argv, says", [
    (["compile", "--input-shape", "1,3,224"], "four positive dimensions N,C,H,W"),
    (["compile", "--input-shape", "1,3,0,224"], "four positive dimensions N,C,H,W"),
    (["compile", "--num-classes", "0"], "--num-classes: '0': give a whole number >= 1"),
    (["compile", "--onnx", "x.onnx", "--weights", "w.pt"], "give --onnx or --weights, not both"),
    (["tune", "--trials", "0"], "--trials: '0': give a whole number >= 1"),
    (["tune", "--trials", "-5"], "--trials: '-5': give a whole number >= 1"),
    (["tune", "--confirm-rounds", "-1"], "--confirm-rounds: '-1': give a whole number >= 0"),
    (["tune", "--model", "x.onnx"], "for the ONNX file x.onnx use --onnx x.onnx"),
    (["compile", "--model", "m.pt"], "use --weights m.pt"),
    (["bench", "--model", "models/m"], "not a path (models/m): give an ONNX file with --onnx"),
    (["tune", "--tracker", "nohostport", "--key", "k"], "HOST:PORT"),
])
def test_cli_says_what_is_wrong_and_exits_2(argv, says):
    start = time.perf_counter()
    code, err = run_cli(argv)
    assert code == 2 and says in err and "Traceback" not in err
    assert time.perf_counter() - start < 60  # refused before compiling or tuning anything


def test_compile_out_into_a_missing_folder_creates_it(tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "m.so"
    code, err = run_cli(["compile", "--model", "vgg11", "--width", "0.125", "--input-shape", "1,3,32,32",
                         "--num-classes", "10", "--tuning-log", "none", "--out", str(out)])
    assert code == 0, err
    assert out.is_file()


def test_a_float64_model_is_refused_naming_its_dtype():
    model = torch.nn.Conv2d(3, 4, 3).double()
    with pytest.raises(TypeError, match="float64 parameters; only float32 .* model.float()"):
        mcp.from_torch(model, (torch.randn(1, 3, 8, 8, dtype=torch.float64),))


def test_an_onnx_operator_tvm_cannot_import_is_named():
    node = helper.make_node("DFT", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ValueError, match="operator TVM's importer does not support.*DFT"):
        mcp.from_onnx(model)


def test_an_empty_tuning_log_argument_is_refused():
    mod = mcp.from_torch(torch.nn.Conv2d(3, 4, 3), (torch.randn(1, 3, 8, 8),))
    with pytest.raises(ValueError, match="tuning_log is empty"):
        mcp.compile(mod, tuning_log="")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_tune_with_an_unreachable_tracker_fails_fast_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default log folder is ./autotune_logs/<device>
    start = time.perf_counter()
    code, err = run_cli(["tune", "--tracker", f"127.0.0.1:{_closed_port()}", "--key", "hikey970"])
    assert code == 2 and "tracker" in err and "Traceback" not in err, err
    assert time.perf_counter() - start < 30  # the model is not even built
    assert list(tmp_path.iterdir()) == []


def test_tune_with_nothing_to_tune_creates_no_log_folder(tmp_path):
    mod = mcp.from_torch(torch.nn.ReLU(), (torch.randn(1, 3, 4, 4),))
    with pytest.raises(ValueError, match="nothing to tune"):
        mcp.tune(mod, "host", trials=1, log_dir=tmp_path / "log", sparse_only=True, progress=False)
    assert not (tmp_path / "log").exists()


@pytest.mark.parametrize("content, says", [
    (b"", "neither a file written by 'mcpruner prune --out'"),
    (b"hello, not a model\n", "neither a file written by 'mcpruner prune --out'"),
    (bytes(range(256)) * 2, "neither a file written by 'mcpruner prune --out'"),
])
def test_compile_weights_that_are_no_model_file_are_named(tmp_path, content, says):
    weights = tmp_path / "w.pt"
    weights.write_bytes(content)
    code, err = run_cli(["compile", "--model", "vgg11", "--width", "0.125", "--input-shape", "1,3,32,32",
                         "--num-classes", "10", "--tuning-log", "none", "--weights", str(weights)])
    assert code == 2 and says in err and str(weights) in err and "Traceback" not in err, err


def test_compile_weights_of_another_model_are_refused(tmp_path):
    weights = tmp_path / "w.pt"
    torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), weights)
    code, err = run_cli(["compile", "--model", "vgg11", "--width", "0.125", "--input-shape", "1,3,32,32",
                         "--num-classes", "10", "--tuning-log", "none", "--weights", str(weights)])
    assert code == 2 and "does not fit the model" in err and "Traceback" not in err, err
