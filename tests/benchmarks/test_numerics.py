"""benchmarks/numerics.py: errors against float64 are measured, not assumed, and reported."""

from __future__ import annotations

import torch

import tvm_mcpruner as mcp

from . import load_benchmark

numerics = load_benchmark("numerics")


def test_errors_measure_both_programs_against_float64():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU()).eval()
    pruned, _ = mcp.prune(model, target="host", keep_kernels=0.5)
    x = torch.randn(1, 8, 10, 10)
    compiled = mcp.compile(mcp.from_torch(pruned, (x,)), target="host", tuning_log=None)
    row = numerics.errors(pruned, compiled, x)
    assert 0 < row["ours"] < 1e-5 and 0 < row["torch"] < 1e-5  # relative to max|y|: fp32 rounding only
    assert row["ratio"] == row["ours"] / row["torch"]

    wrong = numerics.errors(pruned, lambda a: compiled(a) * 1.001, x)  # a program 0.1% off
    assert wrong["ours"] > 100 * row["ours"]


def test_markdown_names_the_machine_and_every_row():
    row = {"net": "vgg11", "path": "onnx", "batch": 1, "input": 0, "scale": 1.0, "ours": 2e-7, "torch": 1e-7, "ratio": 2.0,
           "ours_vs_torch": 2e-7}
    text = numerics.markdown({"machine": {"llvm_cpu": "znver4", "built_for_llvm_cpu": "znver1"},
                              "preset": "host", "end_to_end": [row], "stages": [{"blocks": 1, "sparse_layers": 0,
                                                                                 **row}]})
    assert "znver4" in text and "built for znver1" in text and "| vgg11 | onnx | 1 | 0 | 2.00e-07 | 1.00e-07 | 2.00 |" in text
    assert "median 2.00, max 2.00" in text
