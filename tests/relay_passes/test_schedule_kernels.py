"""ScheduleSparseKernels schedules our unscheduled kernels (and leaves a module without any as it is);
ApplyTuningDatabase applies the record its database puts first (through a RankedTuningView:
the one rank_tuned_records chooses)."""

from __future__ import annotations

import torch
import tvm
from tvm import tirx
from tvm.s_tir import meta_schedule as ms

import topi_sparse
from relay_passes import ApplyTuningDatabase, ScheduleSparseKernels
from tests._tuning import HOST, OTHER_KNOBS, kernel_workload, log_runs, lowered, pruned_conv_module, traced
from tvm_mcpruner.tuning_log import RankedTuningView


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


def test_apply_tuning_database_schedules_the_kernel_with_the_chosen_record():
    workload, mod = kernel_workload()
    database = ms.database.MemoryDatabase()
    log_runs(database, workload, topi_sparse.default_schedule_trace(workload, HOST.family), [1.0, 1.0])
    log_runs(database, workload, traced(workload, OTHER_KNOBS), [0.5, 1.1, 1.1])  # lucky once
    (kernel,) = kernels(mod)

    def applied(db, knobs, kept_default):
        apply = ApplyTuningDatabase(RankedTuningView(db, HOST.family), HOST.family)
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
