"""Shared by the tests of tuning logs and of the passes that apply them: a sparse kernel's
tuning workload, schedules of it with chosen knobs, and records of runs logged for them."""

from __future__ import annotations

import torch
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms

import topi_sparse
import tvm_mcpruner as mcp
from relay_passes import RewriteSparseConv2d, to_tir_stage

__all__ = ["HOST", "OTHER_KNOBS", "THIRD_KNOBS", "kernel_workload", "log_runs", "lowered", "pruned_conv_module",
           "traced", "without_knobs"]

HOST = mcp.get_preset("host")
# Knobs other than any default; lanes are fixed by the packed weight, i.e. by the preset.
OTHER_KNOBS = topi_sparse.PatternConvKnobs(lanes=HOST.vector_width, tile_w=4, tile_h=2, order="row")
THIRD_KNOBS = topi_sparse.PatternConvKnobs(lanes=HOST.vector_width, tile_w=2, tile_h=1, order="group",
                                           vectorize_store=False)


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


def without_knobs(trace: s_tir.Trace) -> s_tir.Trace:
    """``trace`` as the schedule code before schedule ids made it (no knobs annotations)."""
    kept = [inst for inst in trace.insts if not (inst.kind.name == "Annotate"
                                                 and str(inst.attrs[0]).startswith(topi_sparse.KNOBS_ANNOTATION))]
    return s_tir.Trace(kept, {inst: d for inst, d in trace.decisions.items() if inst in kept})
