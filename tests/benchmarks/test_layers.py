"""benchmarks/layers.py: the layer list, the TVM dense tuning log, and a --quick run end to end.

These check that the pipeline works (files written, fields present, mcpruner output
matches torch), never the speed: timings on a shared CI machine mean nothing.
"""

from __future__ import annotations

import json
import os

import pytest

from tvm_mcpruner.targets import host_cpu_name
from tvm_mcpruner.tuning_log import (RECORD_FILE, WORKLOAD_FILE, log_provenance, log_target,
                                     target_signature)
from tvm_mcpruner.tuning_log.locked import LOCK_FILE

from . import load_benchmark


layers = load_benchmark("layers")
common = layers.C  # benchmarks/_common.py, as the scripts import it


def test_layer_list_is_derived_from_the_models_and_deduplicated():
    found = layers.discover_layers(["3x3", "1x1"])
    shapes = [(lay.suite, lay.shape) for lay in found]
    assert len(shapes) == len(set(shapes))
    labels = {(lay.suite, lay.shape.label) for lay in found}
    assert ("3x3", "64->64 3x3/s1 @224x224") in labels            # VGG-16 conv1_2
    assert ("3x3", "512->512 3x3/s1 @7x7") in labels               # ResNet-50 last stage
    assert ("3x3", "128->128 3x3/s2 @56x56") in labels             # ResNet-50 strided 3x3
    assert ("1x1", "320->1280 1x1/s1 @7x7") in labels              # MobileNetV2 last pointwise
    assert ("1x1", "1024->2048 1x1/s2 @14x14") in labels           # ResNet-50 projection
    assert all(lay.shape.cin >= layers.MIN_IN_CHANNELS for lay in found if lay.suite == "3x3")
    repeated = next(lay for lay in found if lay.shape.label == "256->256 3x3/s1 @56x56")
    assert [f.split(":")[0] for f in repeated.found_in] == ["vgg16", "vgg16"]  # conv3_2, conv3_3


def _log_measurements(tuner, task, count: int) -> None:
    """Write ``count`` measurements of one schedule of ``task`` to the tuner's log."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    workload = tuner.database.commit_workload(task.workload)
    sch = s_tir.Schedule(task.workload)
    sch.get_child_blocks(sch.get_sblock("root"))  # a non-empty trace: get_top_k leaves out empty ones
    trace = sch.trace
    args_info = ms.arg_info.ArgInfo.from_prim_func(task.workload["main"])
    for _ in range(count):
        tuner.database.commit_tuning_record(ms.database.TuningRecord(trace, workload, [1e-3], tuner.target,
                                                                     args_info))


def test_tuning_log_skips_tasks_tuned_with_the_same_or_a_larger_budget(tmp_path):
    shape = layers.ConvShape(16, 16, 8, 8, 3, 1, 1)
    mod = layers.mcp.from_torch(layers.layer_module(shape), (layers.layer_input(shape),))
    tuner = common.DenseTuner(8, root=tmp_path)
    assert tuner.log_dir == tmp_path / host_cpu_name() / "dense"
    tasks = tuner.tasks(mod)
    assert tasks and [missing for _, missing in tuner.pending(tasks)] == [8] * len(tasks)  # empty log
    for task in tasks:
        _log_measurements(tuner, task, 5)
    assert [missing for _, missing in tuner.pending(tasks)] == [3] * len(tasks)  # only the missing trials
    report = tuner.tune_and_report(tasks, tune=False)
    assert [s["trials_done"] for s in report["short_of_budget"]] == [5] * len(tasks)
    for task in tasks:
        _log_measurements(tuner, task, 3)
    assert tuner.pending(tasks) == []                                   # same budget: nothing to tune
    assert common.DenseTuner(4, root=tmp_path).pending(tasks) == []     # smaller budget, log read anew
    bigger = common.DenseTuner(16, root=tmp_path).pending(tasks)
    assert [missing for _, missing in bigger] == [8] * len(tasks)
    assert {p.name for p in tuner.log_dir.iterdir()} - {LOCK_FILE} == {WORKLOAD_FILE, RECORD_FILE}  # no ledger


def test_tuning_appends_provenance_before_it_measures(tmp_path, monkeypatch):
    shape = layers.ConvShape(16, 16, 8, 8, 3, 1, 1)
    mod = layers.mcp.from_torch(layers.layer_module(shape), (layers.layer_input(shape),))
    tuner = common.DenseTuner(4, root=tmp_path)
    tasks = tuner.tasks(mod)
    lines_seen = []

    def fake_tune_one(task, trials, work_dir):  # MetaSchedule's part: measures land in the log
        lines_seen.append(len(log_provenance(tuner.log_dir).entries))
        _log_measurements(tuner, task, trials)
        return {"task": task.name, "records": tuner.trials_done(task)}

    monkeypatch.setattr(tuner, "_tune_one", fake_tune_one)
    report = tuner.tune_and_report(tasks)
    assert report["short_of_budget"] == [] and [t["records"] for t in report["tuned_this_run"]] == [4] * len(tasks)
    assert lines_seen and set(lines_seen) == {1}  # the run was on record before its first measurement
    (entry,) = log_provenance(tuner.log_dir).entries
    assert entry["runner"] == "local" and entry["emulated"] is False and entry["trials"] == 4
    assert entry["records_before"] == 0 and entry["target"] == target_signature(tuner.target)
    assert log_target(tuner.log_dir) == entry["target"]
    assert tuner.tune_and_report(tasks)["tuned_this_run"] == []  # nothing short: no new run, no new line
    assert len(log_provenance(tuner.log_dir).entries) == 1


@pytest.mark.slow
def test_quick_run_writes_results_and_matches_torch(tmp_path):
    out = tmp_path / "results"
    payload = layers.main(["--quick", "--repeats", "1", "--out", str(out),
                           "--autotune-root", str(tmp_path / "autotune_logs")])
    saved = json.loads((out / "layers.json").read_text())
    assert (out / "layers.md").read_text().startswith("# Layer benchmark")
    for key in ("machine", "date", "command", "tune_trials_per_task", "peak", "wall_s", "targets", "layers"):
        assert key in saved
    assert saved["machine"]["threads"] == 2 and saved["tune_trials_per_task"] == 0
    assert saved["peak"]["peak_gflops"] > 0
    assert {r["suite"] for r in saved["layers"]} == {"3x3", "1x1"}
    assert {r["sparsity"] for r in saved["layers"]} == {"A", "B"}
    for r in saved["layers"]:
        frameworks = [t["framework"] for t in r["timings"]]
        assert frameworks == ["torch", "onnxruntime", "tvm-dense", "mcpruner"]
        assert all(t["max_rel_error"] < 1e-4 for t in r["timings"]), r["layer"]
        assert r["mac_reduction"] >= 1.0 and r["speedup_vs_fastest_dense"] > 0
        assert 0 < r["nonzero_macs"] <= r["dense_macs"]
        # the FMA-loop probe was timed with the layer and its peak divides the row's GF/s
        assert r["concurrent_peak_gflops"] > 0
        assert r["mcpruner_pct_concurrent_peak"] == pytest.approx(
            100 * r["mcpruner_gflops_nonzero"] / r["concurrent_peak_gflops"])
    three = [r for r in saved["layers"] if r["suite"] == "3x3"]
    assert {round(r["mac_reduction"], 2) for r in three} == {4.5, 9.0}  # 4-of-9 + 50% / 25% kept
    proxy = bool(os.environ.get("MCPRUNER_HOST_CPU"))  # then TVM dense is held to the preset's ISA
    assert set(saved["targets"]) == {"3x3_A", "3x3_B", "3x3_peak_pct", "3x3_concurrent_peak_pct",
                                     "1x1_4x", "3x3_B_over_A",
                                     *(["3x3_A_same_isa", "3x3_B_same_isa"] if proxy else [])}
    assert saved["targets"]["3x3_B_over_A"]["value"] > 0  # a ratio of two timings: its size is not tested
    assert all((r["speedup_vs_fastest_same_isa_dense"] is not None) == proxy for r in saved["layers"])
    assert payload["layers"] == saved["layers"]
