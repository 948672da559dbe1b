"""The ``"mcpruner"`` Relax pipeline: our rewrites, then the target's lowering.

Registered on import, so plain TVM users write::

    import tvm, tvm_mcpruner  # or: import relay_passes
    ex = tvm.compile(mod, target, relax_pipeline=tvm.relax.get_pipeline("mcpruner"))
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.s_tir import dlight

from tvm_mcpruner.sparse_format import MIN_MAC_REDUCTION
from tvm_mcpruner.targets import TargetPreset, get_preset, preset_for_tvm_target

from .cpu_fallback import ParallelVectorizeLeftovers
from .rewrite_sparse_conv2d import RewriteSparseConv2d
from .schedule_kernels import ApplyTuningDatabase, ScheduleSparseKernels

__all__ = ["mcpruner_pipeline", "to_tir_stage"]


def mcpruner_pipeline(
    target: "str | TargetPreset | None" = None,
    min_mac_reduction: float = MIN_MAC_REDUCTION,
    rewrite: RewriteSparseConv2d | None = None,
    database=None,
) -> tvm.transform.Pass:
    """Sparse rewrites + the default pipeline of the target ``tvm.compile`` builds for.

    ``target`` picks the preset (vector width, schedule family); when None it is read
    from the Target that ``tvm.compile`` enters. Pass ``rewrite`` to read its
    ``records`` afterwards. ``database`` (a MetaSchedule database, or an
    :class:`ApplyTuningDatabase` to read ``applied`` from) supplies tuned schedules;
    kernels it has no record for get their default schedule.
    """

    @tvm.transform.module_pass(opt_level=0, name="mcpruner_pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        tvm_target = tvm.target.Target.current(allow_none=True)
        if tvm_target is None:
            if target is None:
                raise ValueError("the mcpruner pipeline needs a target: run it inside tvm.compile")
            tvm_target = get_preset(target).tvm_target()
        preset = get_preset(target) if target is not None else preset_for_tvm_target(tvm_target)
        rewriter = rewrite or RewriteSparseConv2d(preset, min_mac_reduction=min_mac_reduction)
        apply_log = database if isinstance(database, ApplyTuningDatabase) or database is None \
            else ApplyTuningDatabase(database, preset.family)
        with tvm_target:
            mod = to_tir_stage(preset, rewriter)(mod)
            if apply_log is not None:
                mod = apply_log(mod)
            return _lowering(tvm_target, preset)(mod)

    return _pipeline


def to_tir_stage(preset: TargetPreset, rewrite: RewriteSparseConv2d) -> tvm.transform.Pass:
    """Our rewrites and TVM's legalization + fusion: every op is a PrimFunc, none scheduled.

    This is the module that tuning extracts its tasks from and that tuning logs are
    applied to, so ``mcp.tune`` and ``mcp.compile`` both go through here. Run it inside
    the target's scope.
    """
    passes = [relax.transform.FoldConstant(), rewrite]  # FoldConstant: bias arrives as reshape(const)
    if preset.family in ("x86", "arm_cpu"):
        from tvm.relax.backend.cpu_generic import pipeline as cpu  # stages are not re-exported

        target = preset.tvm_target()
        passes += cpu.library_dispatch_passes(target) + cpu.legalize_passes(target)
    return tvm.transform.Sequential(passes)


def _lowering(target: tvm.target.Target, preset: TargetPreset) -> tvm.transform.Pass:
    """Schedules for what is left, then TVM's lowering for ``target``.

    On CPUs the stages are TVM's own (``relax.backend.cpu_generic``): our kernels get
    their default schedule, then :class:`ParallelVectorizeLeftovers` takes every
    PrimFunc not scheduled yet.
    """
    if target.kind.name != "llvm":
        return relax.get_default_pipeline(target)
    from tvm.relax.backend.cpu_generic import pipeline as cpu  # dataflow_lower_passes is not re-exported

    return tvm.transform.Sequential(
        [ScheduleSparseKernels(preset.family),
         dlight.ApplyDefaultSchedule(ParallelVectorizeLeftovers(preset.vector_width))]
        + cpu.dataflow_lower_passes(target)
        + cpu.finalize_passes(target)
    )


if "mcpruner" not in relax.pipeline.PIPELINE_MAP:
    relax.pipeline.register_pipeline("mcpruner")(mcpruner_pipeline)
