"""ScheduleSparseKernels schedules our unscheduled kernels (and leaves a module without any as it is);
ApplyTuningDatabase applies the logged schedule that rank_tuned_records puts first."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import s_tir, tirx
from tvm.s_tir import meta_schedule as ms

import topi_sparse
import tvm_mcpruner as mcp
from relay_passes import (
    ApplyTuningDatabase,
    RankedTuningView,
    RewriteSparseConv2d,
    ScheduleSparseKernels,
    rank_tuned_records,
    to_tir_stage,
)
from relay_passes import schedule_kernels

HOST = mcp.get_preset("host")


def lowered(model, x):
    """The module ScheduleSparseKernels sees in the pipeline (every op a PrimFunc, none scheduled)."""
    mod = mcp.from_torch(model, (x,))
    with HOST.tvm_target():
        return to_tir_stage(HOST, RewriteSparseConv2d(HOST))(mod)


def pruned_conv_module():
    """One 3x3 conv with half its kernels pruned (and a ReLU), lowered: it holds one sparse kernel."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU()).eval()
    pruned, _ = mcp.prune(model, target="host", keep_kernels=0.5)
    return lowered(pruned, torch.randn(1, 16, 8, 8))


def kernels(mod):
    return [g for g, f in mod.functions_items() if isinstance(f, tirx.PrimFunc) and f.attrs
            and topi_sparse.KERNEL_ATTR in f.attrs]


def test_a_module_without_unscheduled_kernels_is_returned_unchanged():
    torch.manual_seed(0)
    # Only TVM's ops: no sparse kernel to schedule.
    mod = lowered(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.MaxPool2d(2)).eval(), torch.randn(1, 4, 8, 8))
    assert not kernels(mod)
    after = ScheduleSparseKernels(HOST.family)(mod)
    assert after.same_as(mod)  # the very module, not a rebuilt copy
    tvm.ir.assert_structural_equal(after, mod)


def test_kernels_are_scheduled_and_the_rest_kept_then_a_second_run_changes_nothing():
    mod = pruned_conv_module()
    (kernel,) = kernels(mod)
    assert topi_sparse.is_unscheduled_kernel(mod[kernel])

    once = ScheduleSparseKernels(HOST.family)(mod)
    assert not once.same_as(mod)
    assert once[kernel].attrs["tirx.is_scheduled"]
    for gvar, func in mod.functions_items():
        if gvar.name_hint != kernel.name_hint:
            assert once[gvar.name_hint].same_as(func), gvar.name_hint

    twice = ScheduleSparseKernels(HOST.family)(once)
    assert twice.same_as(once)
    tvm.ir.assert_structural_equal(twice, once)


# --------------------------------------------------------------------------- choosing among logged schedules


def kernel_workload():
    """A sparse kernel's tuning workload (as mcp.tune extracts it) and the module it came from."""
    mod = pruned_conv_module()
    (task,) = [t for t in ms.relax_integration.extract_tasks(mod, HOST.tvm_target())
               if topi_sparse.KERNEL_ATTR in t.dispatched[0]["main"].attrs]
    return task.dispatched[0], mod


def traced(workload, knobs):
    sch = s_tir.Schedule(workload)
    topi_sparse.apply_default_schedule(sch, HOST.family, knobs)
    return sch.trace


def log_runs(database, workload, trace, medians_ms):
    """One record per run, each with three timings around its median."""
    entry = database.commit_workload(workload)
    args = ms.arg_info.ArgInfo.from_prim_func(workload["main"])
    for ms_ in medians_ms:
        secs = [ms_ * 1e-3 * f for f in (0.99, 1.0, 1.01)]
        database.commit_tuning_record(ms.database.TuningRecord(trace, entry, secs, HOST.tvm_target(), args))


# Knobs other than any default; lanes are fixed by the packed weight, i.e. by the preset.
OTHER_KNOBS = topi_sparse.PatternConvKnobs(lanes=HOST.vector_width, tile_w=4, tile_h=2, order="row")
THIRD_KNOBS = topi_sparse.PatternConvKnobs(lanes=HOST.vector_width, tile_w=2, tile_h=1, order="group",
                                           vectorize_store=False)


@pytest.mark.parametrize(
    "default_runs, tuned_runs, tuned_wins",
    [
        ([1.0], [0.90], True),              # 10% faster: beyond the margin
        ([1.0], [0.99], False),             # 1% faster: a tie, the default stays
        ([1.0, 1.0], [0.5, 1.1, 1.1], False),  # one lucky run; its median is slower
        ([1.2, 1.0, 1.0], [0.95, 0.9, 0.92], True),  # the default's slow outlier does not count either
        ([1.0, 1.0, 1.0], [0.5], False),    # timed once (by the search), never confirmed: no rival
        ([1.0, 1.0, 1.0, 1.0, 1.0], [0.9, 0.9, 0.9], True),  # CONFIRMED_RUNS runs are enough
    ],
)
def test_the_default_stays_unless_a_schedule_beats_its_median_by_the_margin(default_runs, tuned_runs, tuned_wins):
    workload, _ = kernel_workload()
    default = topi_sparse.default_schedule_trace(workload, HOST.family)
    tuned = traced(workload, OTHER_KNOBS)
    assert str(default) != str(tuned)
    database = ms.database.MemoryDatabase()
    log_runs(database, workload, tuned, tuned_runs)
    log_runs(database, workload, default, default_runs)

    ranked = rank_tuned_records(database, database.commit_workload(workload), HOST.family)
    assert [str(r.trace) for r in ranked] == [str(tuned), str(default)][:: 1 if tuned_wins else -1]
    expected_ms = np.median(tuned_runs) if tuned_wins else np.median(default_runs)
    assert float(ranked[0].run_secs[0]) * 1e3 == pytest.approx(expected_ms, rel=1e-9)
    # without the family (no default known) it is the plain order of the medians
    plain = rank_tuned_records(database, database.commit_workload(workload))
    assert str(plain[0].trace) == str(min([(np.median(tuned_runs), str(tuned)), (np.median(default_runs), str(default))])[1])


def test_the_ranked_view_applies_a_log_without_writing_to_it():
    workload, _ = kernel_workload()
    database = ms.database.MemoryDatabase()
    log_runs(database, workload, traced(workload, OTHER_KNOBS), [1.0, 3.0])
    view = RankedTuningView(database, HOST.family)
    (top,) = view.get_top_k(view.commit_workload(workload), 5)
    assert float(top.run_secs[0]) * 1e3 == pytest.approx(2.0)  # one record, the median of both runs
    with pytest.raises(TypeError, match="never writes"):
        view.commit_tuning_record(top)
    assert len(view) == len(database) == 2


def test_an_unconfirmed_schedule_does_not_hide_a_confirmed_one():
    # The search's single runs read fast; the confirmed candidate is the one compared.
    workload, _ = kernel_workload()
    default = topi_sparse.default_schedule_trace(workload, HOST.family)
    confirmed, once = traced(workload, OTHER_KNOBS), traced(workload, THIRD_KNOBS)
    database = ms.database.MemoryDatabase()
    log_runs(database, workload, default, [1.0, 1.0, 1.0])
    log_runs(database, workload, confirmed, [0.8, 0.9, 0.9])
    log_runs(database, workload, once, [0.5])
    ranked = rank_tuned_records(database, database.commit_workload(workload), HOST.family)
    assert [str(r.trace) for r in ranked] == [str(confirmed), str(once), str(default)]
    from tvm_mcpruner.tuning import CONFIRM_ROUNDS

    assert schedule_kernels.CONFIRMED_RUNS == 1 + CONFIRM_ROUNDS  # what the tuner gives each


def without_knobs(trace: s_tir.Trace) -> s_tir.Trace:
    """``trace`` as the schedule code before schedule ids made it (no knobs annotations)."""
    kept = [inst for inst in trace.insts if not (inst.kind.name == "Annotate"
                                                 and str(inst.attrs[0]).startswith(topi_sparse.KNOBS_ANNOTATION))]
    return s_tir.Trace(kept, {inst: d for inst, d in trace.decisions.items() if inst in kept})


def test_records_of_an_earlier_schedule_version_are_left_out(caplog, monkeypatch):
    monkeypatch.setattr(schedule_kernels, "_stale_noted", set())  # said once per opened log
    # A trace logged by earlier code replays its old loop structure: ranked out, kept in the log.
    workload, _ = kernel_workload()
    default = topi_sparse.default_schedule_trace(workload, HOST.family)
    assert topi_sparse.trace_schedule_id(default) == topi_sparse.cpu.SCHEDULE_ID
    old = without_knobs(traced(workload, OTHER_KNOBS))
    assert topi_sparse.trace_schedule_id(old) is None and not topi_sparse.is_current_trace(old)
    database = ms.database.MemoryDatabase()
    log_runs(database, workload, old, [0.1])  # far faster, but from another schedule version
    log_runs(database, workload, default, [1.0])
    with caplog.at_level("INFO", logger="tvm_mcpruner"):
        ranked = rank_tuned_records(database, database.commit_workload(workload), HOST.family)
    assert [str(r.trace) for r in ranked] == [str(default)]
    assert len(database.get_all_tuning_records()) == 2 and "earlier version of its schedule" in caplog.text


def test_apply_tuning_database_schedules_the_kernel_with_the_chosen_record():
    workload, mod = kernel_workload()
    database = ms.database.MemoryDatabase()
    log_runs(database, workload, topi_sparse.default_schedule_trace(workload, HOST.family), [1.0, 1.0])
    log_runs(database, workload, traced(workload, OTHER_KNOBS), [0.5, 1.1, 1.1])  # lucky once
    (kernel,) = kernels(mod)

    def applied(db, knobs, kept_default):
        apply = ApplyTuningDatabase(db, HOST.family)
        with HOST.tvm_target():
            after = apply(mod)
        assert apply.applied == [kernel.name_hint]
        # the pass reports what each kernel got, and whether that is its default
        assert apply.knobs == {kernel.name_hint: knobs}
        assert apply.kept_default == ([kernel.name_hint] if kept_default else [])
        return after[kernel]

    def scheduled(knobs):
        return topi_sparse.schedule_pattern_conv2d(mod[kernel], HOST.family, knobs)

    default_knobs = topi_sparse.declared_knobs(mod[kernel])
    assert default_knobs != OTHER_KNOBS
    tvm.ir.assert_structural_equal(applied(database, default_knobs, True), scheduled(None), map_free_vars=True)
    log_runs(database, workload, traced(workload, OTHER_KNOBS), [0.5, 0.5])  # now it is faster
    tvm.ir.assert_structural_equal(applied(database, OTHER_KNOBS, False), scheduled(OTHER_KNOBS),
                                   map_free_vars=True)
