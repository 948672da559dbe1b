"""benchmarks/perf_model.py: the hot loop it reads from a kernel's assembly, the trip counts
it multiplies by, its reading of llvm-mca's output, its rank statistics, and (with
``llvm-mca-19``) a prediction end to end. Nothing here is timed."""

from __future__ import annotations

import dataclasses

import pytest

import tvm_mcpruner as mcp
from tests._resources import require_llvm_mca

from . import load_benchmark

pm = load_benchmark("perf_model")

# A 2x4 tile keeps every (row, column) FMA of a tile distinct in the loop body on every ISA.
TILE_H, TILE_W = 2, 4


def small_kernel(preset_name: str, tile: tuple[int, int] | None = (TILE_H, TILE_W)):
    """A 16->32 3x3 layer at 8x8 (sparsity A) built for ``preset_name``, with its assembly."""
    preset = mcp.get_preset(preset_name)
    kernel = pm.layer_kernel(16, 32, 8, "A", preset)
    if tile is not None:
        kernel = pm.layer_kernel(16, 32, 8, "A", preset,
                                 dataclasses.replace(kernel.knobs, tile_h=tile[0], tile_w=tile[1]))
    target = preset.tvm_target()
    return kernel, pm.kernel_asm(kernel, target), pm.target_triple(target)


@pytest.mark.parametrize("preset_name, fma", [
    ("x86-avx2", r"vfmadd231ps\s+%ymm\d+, %ymm\d+, %ymm\d+"),
    ("hikey970-cpu", r"fmla\s+v\d+\.4s, v\d+\.4s, v\d+\.s\[\d\]"),
])
def test_hot_loop_is_the_entry_loop_with_one_fma_per_accumulator(preset_name, fma):
    import re

    kernel, asm, _ = small_kernel(preset_name)
    body = pm.hot_loop(asm)
    fmas = pm.fp_multiplies(body)
    assert all(re.match(fma, line) for line in fmas), "\n".join(body)
    assert len(fmas) == kernel.knobs.tile_h * kernel.knobs.tile_w == TILE_H * TILE_W, "\n".join(body)
    # It is a loop: it ends in a branch back, and llvm-mca gets instructions only.
    assert re.match(r"(j[a-z]+|b\.\w+|cbn?z|b)\s", body[-1]), body[-1]
    source = pm.mca_source(body)
    assert not any(line.startswith(".") or line.endswith(":") for line in source.splitlines())
    assert len(pm.fp_multiplies(source.splitlines())) == len(fmas)


def test_loops_are_found_from_label_to_back_branch():
    asm = "\n".join([
        "f:", "\tmovl $0, %eax", ".LBB0_1:", "\tvmovaps (%rsi), %ymm0", ".LBB0_2:",
        "\tvfmadd231ps %ymm1, %ymm0, %ymm2", "\taddq $4, %rcx", "\tjne .LBB0_2", "\tdecl %eax",
        "\tjne .LBB0_1", "\tjmp .LBB0_9", "\tret",
    ])
    bodies = pm.loops(asm)
    assert [len(b) for b in bodies] == [3, 7]  # inner, then outer (which contains the inner)
    assert pm.hot_loop(asm) == ["vfmadd231ps %ymm1, %ymm0, %ymm2", "addq $4, %rcx", "jne .LBB0_2"]
    with pytest.raises(ValueError, match="no loop"):
        pm.hot_loop("f:\n\tvfmadd231ps %ymm1, %ymm0, %ymm2\n\tret\n")


def test_trip_counts_follow_the_knobs_and_loop_order():
    kernel = pm.layer_kernel(16, 32, 8, "A", mcp.get_preset("x86-avx2"))
    shape = kernel.shape  # 4 groups of 8 lanes, 8x8 output, rows padded to 8
    knobs = dataclasses.replace(kernel.knobs, tile_h=2, tile_w=4, unroll_entries=1, order="group")
    trips = pm.trip_counts(shape, knobs, threads=2)
    row_tiles = shape.acc_rows(4) // 2
    assert trips.parallel_extent == shape.batch * shape.groups * row_tiles
    assert trips.per_call == shape.batch * shape.groups * row_tiles * (8 // 4) * shape.entries
    assert trips.busiest_thread == -(-trips.parallel_extent // 2) * trips.inner_per_parallel
    column = pm.trip_counts(shape, dataclasses.replace(knobs, order="column"), threads=3)
    assert column.parallel_extent == shape.groups * 2 and column.per_call == trips.per_call
    assert column.busiest_thread == -(-(shape.groups * 2) // 3) * row_tiles * shape.entries
    if shape.entries % 2 == 0:
        unrolled = pm.trip_counts(shape, dataclasses.replace(knobs, unroll_entries=2), threads=2)
        assert unrolled.per_call * 2 == trips.per_call
    # LLVM's own unroll of the entry loop (3 entries per iteration, read off the FMAs) divides it further.
    by_llvm = pm.trip_counts(shape, knobs, threads=2, entries_per_iteration=3)
    assert by_llvm.inner_per_parallel == (8 // 4) * -(-shape.entries // 3)
    # A tile that does not divide the width still runs whole column tiles.
    assert pm.trip_counts(shape, dataclasses.replace(knobs, tile_h=1, tile_w=3), 1).inner_per_parallel \
        == 3 * shape.entries


MCA_SNIPPET = """\
Iterations:        300
Instructions:      8400
Total Cycles:      2021
Total uOps:        8400

Dispatch Width:    6
uOps Per Cycle:    4.16
IPC:               4.16
Block RThroughput: 6.5


Instruction Info:
[1]: #uOps
"""


def test_llvm_mca_summary_is_parsed():
    report = pm.parse_mca(MCA_SNIPPET)
    assert report == pm.McaReport(iterations=300, instructions=8400, total_cycles=2021, block_rthroughput=6.5)
    assert report.cycles_per_iteration == pytest.approx(2021 / 300)
    with pytest.raises(ValueError, match="Total Cycles"):
        pm.parse_mca("Iterations: 3\nInstructions: 9\n")


def test_rank_agreement_statistics():
    assert pm.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert pm.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert pm.pairwise_agreement([1, 2, 3], [1, 3, 2]) == (pytest.approx(2 / 3), 3)
    assert pm.pairwise_agreement([1, 1, 2], [5, 6, 7]) == (1.0, 2)  # the tied pair is skipped
    # Within 3% counts as a tie: only the (1.0, 2.0) pairs are compared.
    assert pm.pairwise_agreement([1.0, 1.01, 2.0], [3.0, 1.0, 4.0], tie=0.03) == (1.0, 2)


def test_prediction_arithmetic():
    trips = pm.TripCounts(parallel_extent=10, inner_per_parallel=100, threads=2)
    p = pm.Prediction("znver4", cycles_per_iteration=5.0, fmas_per_iteration=10, trips=trips, mhz=1000.0,
                      peak_lane_fmas_per_cycle=16.0, lanes=8, stored_macs=10 * 100 * 10 * 8)
    assert p.ms == pytest.approx(5.0 * 500 / 1e6)  # 2500 cycles at 1 GHz
    assert p.loop_share_of_peak == pytest.approx(10 * 8 / 5.0 / 16.0)
    assert p.layer_share_of_peak == pytest.approx(80000 / 2.5e-6 / (16e9 * 2))  # 16 lane-FMAs a cycle: the peak
    assert p.to_dict()["label"] == pm.PREDICTED


def test_fma_peaks_from_llvm_mca():
    require_llvm_mca()
    assert pm.fma_peak(pm.ISAS["avx2"], pm.X86_TRIPLE, "znver4") == pytest.approx(16)
    assert pm.fma_peak(pm.ISAS["avx512"], pm.X86_TRIPLE, "znver4") == pytest.approx(16)
    assert pm.fma_peak(pm.ISAS["neon"], "aarch64-linux-gnu", "cortex-a73") == pytest.approx(4)


@pytest.mark.parametrize("preset_name, mcpu", [("x86-avx2", "znver4"), ("hikey970-cpu", "cortex-a73")])
def test_prediction_of_a_small_kernel(preset_name, mcpu):
    require_llvm_mca()
    kernel, asm, triple = small_kernel(preset_name, tile=None)
    p = pm.predict(kernel, asm, triple, mcpu, threads=2, mhz=2000.0)
    assert p.fmas_per_iteration == kernel.knobs.tile_h * kernel.knobs.tile_w
    # No loop beats the FMA pipes, and one entry of this size stays within a few cycles per FMA.
    assert p.fmas_per_iteration * p.lanes / p.peak_lane_fmas_per_cycle <= p.cycles_per_iteration + 1e-9
    assert 0 < p.loop_share_of_peak <= 1.0
    assert p.layer_share_of_peak <= p.loop_share_of_peak + 1e-9
    assert p.ms == pytest.approx(p.cycles_per_iteration * p.trips.busiest_thread / 2e6)


def test_calibration_report_from_fake_timings(monkeypatch, tmp_path):
    """The calibration's bookkeeping on one small layer, with the timer replaced (nothing is timed)."""
    require_llvm_mca()
    import stages

    monkeypatch.setattr(stages, "LAYERS", [(8, 16, 6)])
    monkeypatch.setattr(stages, "TILES", [(1, 2), (1, 3), (2, 6)])
    fake = {"kernel": 1.0, "one entry": 0.25}
    monkeypatch.setattr(stages._common, "time_interleaved",
                        lambda runners, repeats: {k: [fake.get(k.split("|")[-1], 0.1 + 0.01 * i)]
                                                  for i, k in enumerate(runners)})
    payload = pm.main(["calibrate", "--presets", "x86-avx2", "--tile-presets", "x86-avx2", "--layers", "1",
                       "--repeats", "1", "--max-load", "1000", "--out", str(tmp_path)])
    assert [(r["layer"], r["sparsity"]) for r in payload["layers"]] == [("8->16 3x3/s1 @6x6", s) for s in "AB"]
    row = payload["layers"][0]
    assert row["measured_ms"] == 1.0 and row["measured_entries_ms"] == pytest.approx(0.75)
    assert row["error_pct"] == pytest.approx(100 * (row["predicted"]["ms"] - 1.0))
    assert payload["median_abs_error_pct"] >= 0
    assert [t["tile"] for t in payload["tiles"][0]["tiles"]] == ["1x2", "1x3", "2x6"]
    md = next(tmp_path.glob("perf_model_calibration_*.md")).read_text()
    assert pm.PREDICTED in md and "median |error|" in md
