"""benchmarks/kernels.py: a layer is checked against torch and timed with the peak probe
(never its speed)."""

from __future__ import annotations

import json

import pytest

from . import load_benchmark

kernels = load_benchmark("kernels")


def test_one_layer_gives_both_sparsities_against_the_concurrent_peak():
    rows = kernels.measure_layer(16, 32, 9, 2, threads=2, repeats=1)
    assert [r["sparsity"] for r in rows] == ["A", "B"]
    for r in rows:
        assert r["ms"] > 0 and r["concurrent_peak_gflops"] > 0
        assert r["pct_concurrent_peak"] == pytest.approx(100 * r["gflops_nonzero"] / r["concurrent_peak_gflops"])


def test_a_kernel_that_disagrees_with_torch_is_refused(monkeypatch):
    runner, flops, _ = kernels._kernel_runner(8, 16, 6, 1, 0.5, seed=0)
    assert flops > 0
    # a reference that is off everywhere: the check must stop the benchmark
    monkeypatch.setattr(kernels.torch.nn.functional, "conv2d",
                        lambda x, w, **kw: kernels.torch.ones(1, 16, 6, 6))
    with pytest.raises(AssertionError, match="differs from torch"):
        kernels._kernel_runner(8, 16, 6, 1, 0.5, seed=0)


def test_main_writes_json_and_markdown(tmp_path):
    payload = kernels.main(["--limit", "1", "--repeats", "1", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "kernels.json").read_text())
    assert len(saved["rows"]) == 2 and saved["median_pct_concurrent_peak"] > 0
    assert (tmp_path / "kernels.md").read_text().startswith("# Kernel-only efficiency")
    assert payload["command"].startswith("python benchmarks/kernels.py")


def test_order_comparison_times_the_other_loop_order_too():
    rows = kernels.measure_layer(16, 32, 9, 1, threads=2, repeats=1, compare_orders=True)
    for r in rows:
        assert r["order"] in ("group", "row") and r["other_order_ms"] > 0
        assert r["default_speedup_over_other_order"] == pytest.approx(r["other_order_ms"] / r["ms"])


def test_main_with_order_comparison_summarises_it(tmp_path):
    payload = kernels.main(["--limit", "1", "--repeats", "1", "--compare-orders", "--out", str(tmp_path)])
    assert payload["order_comparison"]["min"] <= payload["order_comparison"]["median"] <= payload["order_comparison"]["max"]
    assert "Loop order: the default's kernel is" in (tmp_path / "kernels.md").read_text()
