"""mcp.tune end to end: real MetaSchedule + XGBoost, LocalRunner and a real tvm.rpc farm.

Budgets are a handful of trials: these check the machinery (logs written and applied,
outputs right, resumption, measurements spread over servers), not the tuning quality;
that is benchmarks/tuning.py's job.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np
import pytest
import torch
from tvm.s_tir import meta_schedule as ms

import tvm_mcpruner as mcp
from tests._resources import require_arm_emulation
from tvm_mcpruner import arm_emulation, rpc_farm
from tests._tuning import OTHER_KNOBS, kernel_workload, log_runs, traced, without_knobs
from tvm_mcpruner.tuning_log import RankedTuningView
from tvm_mcpruner.tuning import _resolve_emulated
from tvm_mcpruner.tuning_log import PROVENANCE_FILE, RECORD_FILE, log_provenance, log_target, target_signature

TOLERANCE = 1e-4  # relative to the output's max magnitude, as everywhere else


def pruned_layer(cin=16, cout=32, size=10, target="host", seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.ReLU()).eval()
    pruned, _ = mcp.prune(model, target=target, keep_kernels=0.5)
    x = torch.randn(1, cin, size, size)
    return mcp.from_torch(pruned, (x,)), x.numpy(), pruned(x).detach().numpy()


def assert_matches(y, ref):
    assert np.abs(y - ref).max() <= TOLERANCE * max(1.0, float(np.abs(ref).max()))


def records(log_dir):
    return [json.loads(line) for line in (log_dir / RECORD_FILE).read_text().splitlines() if line.strip()]


def test_local_tuning_logs_resumes_and_is_applied(tmp_path):
    mod, x, ref = pruned_layer()
    log = tmp_path / "log"
    report = mcp.tune(mod, "host", trials=6, log_dir=log, sparse_only=True, progress=False)
    (task,) = report.tasks
    assert task.kind == "sparse" and task.default_ms > 0 and task.best_ms <= task.default_ms
    assert task.kept_default in (True, False)
    per_schedule = Counter(json.dumps(record[1][0]) for record in records(log))  # runs per trace
    assert 2 <= task.trials <= 6 and len(per_schedule) == task.trials
    # after the search, the 3 fastest (the default among them or added) ran twice more
    confirmed = [n for n in per_schedule.values() if n == 3]
    assert len(confirmed) in (3, 4) and sum(per_schedule.values()) == task.trials + 2 * len(confirmed)
    assert log_target(log) == target_signature(mcp.get_preset("host").tvm_target())

    first_run = (log / PROVENANCE_FILE).read_bytes()
    again = mcp.tune(mod, "host", trials=6, log_dir=log, sparse_only=True, progress=False)
    logged = len(records(log))
    assert again.trials_run == 0 and len(records(log)) == logged  # resumed: nothing to add

    # one provenance line per run, appended (the first one unchanged)
    assert (log / PROVENANCE_FILE).read_bytes().startswith(first_run)
    runs = log_provenance(log).entries
    assert [(r["runner"], r["emulated"], r["trials"]) for r in runs] == [("local", False, 6)] * 2
    assert runs[0]["records_before"] == 0 and runs[1]["records_before"] == logged
    assert runs[0]["target"] == log_target(log) and runs[0]["tvm"] and runs[0]["host_cpu"]

    compiled = mcp.compile(mod, "host", tuning_log=log)
    assert compiled.tuning_log == log and compiled.tuned_functions == [compiled.sparse_layers[0].function]
    # the summary says what the log changed: the knobs it applied, or that the default stayed
    function = compiled.sparse_layers[0].function
    note = "[tuning log: default kept]" if task.kept_default else f"[tuned: {compiled.tuned_knobs[function].describe()}]"
    assert note in compiled.summary() and "measured on hardware: local on" in compiled.summary()
    assert_matches(compiled(x), ref)


def test_dense_ops_are_tuned_in_the_same_run(tmp_path):
    torch.manual_seed(1)
    # The pooling stays TVM's op (a "dense" task); the conv is our kernel.
    model = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.MaxPool2d(2)).eval()
    pruned, _ = mcp.prune(model, target="host", keep_kernels=0.5)
    x = torch.randn(1, 16, 8, 8)
    mod = mcp.from_torch(pruned, (x,))
    report = mcp.tune(mod, "host", trials=8, log_dir=tmp_path, progress=False)
    kinds = {t.kind for t in report.tasks}
    assert kinds == {"sparse", "dense"}, report.summary()
    compiled = mcp.compile(mod, "host", tuning_log=tmp_path)
    assert_matches(compiled(x), pruned(x).detach().numpy())


def test_tuning_over_a_tracker_spreads_measurements_over_two_servers(tmp_path):
    mod, x, ref = pruned_layer(seed=2)
    with rpc_farm.start_tracker() as tracker:
        servers = [rpc_farm.start_server(tracker.address, "tune-test", wait=False) for _ in range(2)]
        try:
            rpc_farm.wait_for_servers(tracker.address, "tune-test", count=2, timeout=90)
            report = mcp.tune(mod, "host", trials=8, log_dir=tmp_path, sparse_only=True,
                              tracker=tracker.address, key="tune-test", progress=False)
            served = [server.sessions_served() for server in servers]
        finally:
            for server in servers:
                server.stop()
    assert "tune-test" in report.runner
    # host-CPU servers, but nothing tells the tuner so: recorded as unknown, still applied
    assert report.emulated is None and log_provenance(tmp_path).status == "unknown"
    assert all(n >= 1 for n in served), served
    assert sum(served) >= report.tasks[0].trials - 1  # one session per measurement
    assert_matches(mcp.compile(mod, "host", tuning_log=tmp_path)(x), ref)


@pytest.mark.arm
def test_tuning_for_hikey970_over_the_emulated_aarch64_server(tmp_path):
    """Emulated (qemu) — correctness only: the times in this log are not device timings."""
    require_arm_emulation()
    mod, x, ref = pruned_layer(cin=8, cout=8, size=6, target="hikey970-cpu", seed=3)
    start = time.perf_counter()
    with rpc_farm.start_tracker() as tracker:
        with rpc_farm.start_server(tracker.address, arm_emulation.RPC_KEY, emulate_aarch64=True) as server:
            report = mcp.tune(
                mod, "hikey970-cpu", trials=4, log_dir=tmp_path, sparse_only=True,
                tracker=tracker.address, key=arm_emulation.RPC_KEY, progress=False,
                evaluator=ms.runner.EvaluatorConfig(number=1, repeat=1, min_repeat_ms=0),
            )
            compiled = mcp.compile(mod, "hikey970-cpu", tuning_log=tmp_path)
            assert compiled.tuned_functions, compiled.summary()
            assert report.emulated is True and log_provenance(tmp_path).status == "emulated"
            assert "emulated (qemu)" in compiled.summary()
            lib = arm_emulation.export_for_arm(compiled.executable, tmp_path / "model.so")
            y = arm_emulation.run_vm(server.emulated, lib, [x])
    print(f"emulated aarch64 tuning + check: {time.perf_counter() - start:.0f} s wall ({arm_emulation.LABEL})")
    assert report.tasks[0].trials >= 2
    assert_matches(y, ref)


def test_emulated_is_inferred_only_where_it_is_known(monkeypatch):
    tracker = "127.0.0.1:9190"
    assert _resolve_emulated(None, None, None) is False  # LocalRunner: this machine
    assert _resolve_emulated(None, tracker, arm_emulation.RPC_KEY) is True  # "aarch64-qemu"
    assert _resolve_emulated(None, tracker, "my-emulator") is True
    assert _resolve_emulated(None, tracker, "hikey970") is None  # not known
    assert _resolve_emulated(False, tracker, "hikey970") is False
    assert _resolve_emulated(True, tracker, "hikey970") is True
    with pytest.raises(ValueError, match="emulated"):
        _resolve_emulated(False, tracker, "aarch64-qemu")
    # an emulated server this process started, under any key, is known too
    monkeypatch.setattr(rpc_farm, "emulated_server_running", lambda t, k: k == "board-like")
    assert _resolve_emulated(None, tracker, "board-like") is True
    with pytest.raises(ValueError, match="emulated"):
        _resolve_emulated(False, tracker, "board-like")


def test_cli_tune_emulated_flag():
    from tvm_mcpruner.cli import _parser

    assert _parser().parse_args(["tune"]).emulated is None
    assert _parser().parse_args(["tune", "--emulated"]).emulated is True
    assert _parser().parse_args(["tune", "--no-emulated"]).emulated is False


def test_cli_tune_forwards_confirm_rounds(monkeypatch):
    from tvm_mcpruner import cli, tuning

    assert cli._parser().parse_args(["tune"]).confirm_rounds == 2
    seen = {}

    class Report:
        log_dir = "LOG"

        def summary(self):
            return "summary"

    def fake_tune(mod, target, **kwargs):
        seen.update(kwargs)
        return Report()

    monkeypatch.setattr(tuning, "tune", fake_tune)
    monkeypatch.setattr(cli, "_model_module", lambda args: "MOD")
    assert cli._cmd_tune(cli._parser().parse_args(["tune", "--confirm-rounds", "0"])) == 0
    assert seen["confirm_rounds"] == 0


def test_the_search_starts_from_current_schedules_only_and_writes_to_the_log():
    workload, _ = kernel_workload()
    database = ms.database.MemoryDatabase()
    fast_but_stale = without_knobs(traced(workload, OTHER_KNOBS))
    log_runs(database, workload, fast_but_stale, [0.1])
    current = traced(workload, OTHER_KNOBS)
    log_runs(database, workload, current, [1.0, 1.2])  # two runs: one record, their median
    view = RankedTuningView(database, writable=True)
    entry = view.commit_workload(workload)
    (seed,) = view.get_top_k(entry, 10)
    assert str(seed.trace) == str(current) and float(seed.run_secs[0]) == pytest.approx(1.1e-3)
    view.commit_tuning_record(ms.database.TuningRecord(current, entry, [9e-4], mcp.get_preset("host").tvm_target(),
                                                       seed.args_info))
    assert len(database.get_all_tuning_records()) == len(view) == 4  # written through, nothing dropped


@pytest.mark.parametrize("kwargs, error, match", [
    ({"trials": 0}, ValueError, "trials must be an int >= 1"),
    ({"trials": -5}, ValueError, "trials must be an int >= 1"),
    ({"tracker": "nohostport", "key": "k"}, ValueError, "tracker must be 'HOST:PORT'"),
    ({"tracker": "127.0.0.1:1", "key": "k"}, rpc_farm.TrackerUnreachableError, "127.0.0.1"),
])
def test_bad_arguments_and_an_unreachable_tracker_fail_before_anything_is_written(tmp_path, kwargs, error, match):
    mod, _, _ = pruned_layer()
    start = time.perf_counter()
    with pytest.raises(error, match=match):
        mcp.tune(mod, "host", log_dir=tmp_path / "log", progress=False, **kwargs)
    assert time.perf_counter() - start < 20 and not (tmp_path / "log").exists()
