"""benchmarks/tuning.py --quick end to end: files written, fields present, the tuned build
applied and checked against torch inside the script. Never the speed."""

from __future__ import annotations

import json

import pytest

from tvm_mcpruner.tuning_log import log_provenance

from . import load_benchmark

tuning = load_benchmark("tuning")


def test_quick_run_writes_results_with_an_aa_control(tmp_path):
    ship = tmp_path / "shipped"
    payload = tuning.main(["--quick", "--out", str(tmp_path), "--ship-log", str(ship)])
    written = json.loads((tmp_path / "tuning_quick.json").read_text())
    assert written["part1"] and not written["part2"]
    for row in written["part1"]:
        assert row["log_applied"], row["layer"]  # the log reached mcp.compile
        # MetaSchedule ranks records by their mean, the report gives medians: allow a little
        assert row["trials"] >= 1 and row["tuner_best_ms"] <= 1.1 * row["tuner_default_ms"]
        assert row["default_again_ms"] > 0 and row["aa_ratio"] > 0
        assert 0 < row["probe_gflops_min"] <= row["probe_gflops_max"]  # the FMA loop timed alongside
        # the FMA bound: the default's rate over the probe's, and the speedup left above it
        assert row["ceiling"] == pytest.approx(100 / row["default_pct_probe"])
        # the knobs compile applied when it took a tuned schedule, in words
        assert row["chose_default"] or row["applied_knobs"] is None or "order" in row["applied_knobs"]
    text = (tmp_path / "tuning_quick.md").read_text()
    assert "A/A control" in text and "Median speedup over the default knobs" in text and "Median ceiling" in text
    assert payload["peak"]["peak_gflops"] > 0
    # --ship-log appends the records and says who measured them
    provenance = log_provenance(ship)
    assert provenance.status == "hardware"
    assert len(provenance.entries) == len(written["part1"])  # one tuning run per layer
    assert all(e["runner"] == "local" and "--ship-log" in e["note"] for e in provenance.entries)
