"""benchmarks/stages.py: the four builds of a layer compute what they claim (the kernel is
checked against torch inside ``build_layer``), the stages add up to the kernel's time, and
the tile sweep checks every tile's output (never their speed)."""

from __future__ import annotations

import pytest

import tvm_mcpruner as mcp

from . import load_benchmark

stages = load_benchmark("stages")


def test_stage_times_add_up_to_the_kernel_time():
    ms = {"kernel": 1.0, "one entry": 0.2, "copy only": 0.05, "call": 0.01}
    parts = stages.stage_ms(ms)
    assert parts == pytest.approx({"call": 0.01, "copy": 0.04, "fixed": 0.15, "entries": 0.8})
    assert sum(parts.values()) == pytest.approx(ms["kernel"])


def test_one_small_layer_runs_every_build_and_reports_shares():
    row = stages.measure(8, 16, 6, "A", mcp.get_preset("host"), repeats=1)
    assert set(row["ms"]) == {"kernel", "one entry", "copy only", "call"}
    assert all(t > 0 for t in row["ms"].values())
    assert set(row["stage_share"]) == set(stages.STAGES)
    assert row["entries_per_group"] >= 1


def test_every_tile_of_the_sweep_computes_the_same_layer():
    row = stages.measure_tiles(8, 16, 8, "B", mcp.get_preset("host"), repeats=1)
    assert set(row["ms"]) == {f"{r}x{c}" for r, c in stages.TILES}
    assert row["best"] in row["ms"] and row["default_over_best"] >= 1.0 or row["default"] not in row["ms"]
