"""benchmarks/models.py --quick (narrow VGG-16 at 64x64): pipeline, not speed."""

from __future__ import annotations

import json

import pytest

from . import load_benchmark


models = load_benchmark("models")


def test_vgg16_keep_share_gives_8x_fewer_3x3_macs():
    assert models.CASES["vgg16"].three_by_three_reduction == pytest.approx(8.0)
    assert models.CASES["resnet50"].three_by_three_reduction == pytest.approx(4.5)


@pytest.mark.slow
def test_quick_vgg16_run_writes_results_and_matches_torch(tmp_path):
    out = tmp_path / "results"
    models.main(["--quick", "--models", "vgg16", "--repeats", "1", "--out", str(out),
                 "--autotune-root", str(tmp_path / "autotune_logs")])
    saved = json.loads((out / "models.json").read_text())
    assert "Where the time goes: vgg16" in (out / "models.md").read_text()
    (result,) = saved["models"]
    assert [t["framework"] for t in result["timings"]] == ["torch", "onnxruntime", "tvm-dense", "mcpruner"]
    assert all(t["max_rel_error"] < 1e-4 for t in result["timings"])
    assert result["sparse_layers"] >= 1 and result["nonzero_reduction"] > 2
    wb = result["weight_bytes"]
    assert wb["mcpruner_model_constant_bytes"] < wb["dense_model_constant_bytes"]
    assert wb["dense_model_constant_bytes"] >= wb["dense_weight_bytes"] * 0.99  # every weight counted
    assert any(r["mcpruner_kernel"].startswith("pattern_conv2d") for r in result["per_layer"])
    for key in ("machine", "date", "command", "tune_trials_per_task", "peak", "wall_s"):
        assert key in saved
