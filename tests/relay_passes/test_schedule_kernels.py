"""ScheduleSparseKernels: schedules our unscheduled kernels, and leaves a module without any as it is."""

from __future__ import annotations

import torch
import tvm
from tvm import tirx

import topi_sparse
import tvm_mcpruner as mcp
from relay_passes import RewriteSparseConv2d, ScheduleSparseKernels, to_tir_stage

HOST = mcp.get_preset("host")


def lowered(model, x):
    """The module ScheduleSparseKernels sees in the pipeline (every op a PrimFunc, none scheduled)."""
    mod = mcp.from_torch(model, (x,))
    with HOST.tvm_target():
        return to_tir_stage(HOST, RewriteSparseConv2d(HOST))(mod)


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
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU()).eval()
    pruned, _ = mcp.prune(model, target="host", keep_kernels=0.5)
    mod = lowered(pruned, torch.randn(1, 16, 8, 8))
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
