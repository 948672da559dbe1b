"""The ``"mcpruner"`` Relax pipeline: our rewrites, then the target's lowering.

Registered on import, so plain TVM users write::

    import tvm, tvm_mcpruner  # or: import relay_passes
    ex = tvm.compile(mod, target, relax_pipeline=tvm.relax.get_pipeline("mcpruner"))
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.s_tir import dlight

import topi_sparse
from tvm_mcpruner.sparse_format import MIN_MAC_REDUCTION
from tvm_mcpruner.targets import TargetPreset, get_preset, preset_for_tvm_target

from .accurate_pooling import AccuratePooling
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
    ``records`` afterwards. ``database`` (a MetaSchedule database, applied as it orders
    its records, or an :class:`ApplyTuningDatabase` to read ``applied`` from) supplies
    tuned schedules; kernels it has no record for get their default schedule.
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
    """Our rewrites (sparse convs, blocked global pooling) and TVM's legalization + fusion
    for the target: every op a PrimFunc.

    This is the module that tuning extracts its tasks from and that tuning logs are
    applied to, so ``mcp.tune`` and ``mcp.compile`` both go through here. Our kernels are
    left unscheduled (TVM's GPU stages schedule its own ops here). Run it inside the
    target's scope.
    """
    target = preset.tvm_target()
    # FoldConstant: bias arrives as reshape(const); AccuratePooling: fp32 global pooling
    # sums stay accurate on large inputs (TVM sums the whole extent in one running total)
    passes = [relax.transform.FoldConstant(), rewrite, AccuratePooling()]
    tvm_stages = _tvm_stages(target)
    return tvm.transform.Sequential(passes + tvm_stages.library_dispatch_passes(target)
                                    + tvm_stages.legalize_passes(target))


def _lowering(target: tvm.target.Target, preset: TargetPreset) -> tvm.transform.Pass:
    """Schedules for what is left, then TVM's lowering for ``target``.

    Our kernels get their family's default schedule, then the family's rules take the
    TVM ops not scheduled yet (on CPUs TVM lowers those as plain serial loops otherwise).
    """
    passes = []
    if preset.family is not None:
        family = topi_sparse.family_module(preset.family)
        passes.append(ScheduleSparseKernels(family.NAME))
        rules = family.leftover_rules(preset.vector_width)
        if rules:
            passes.append(dlight.ApplyDefaultSchedule(*rules))
    tvm_stages = _tvm_stages(target)
    return tvm.transform.Sequential(passes + tvm_stages.dataflow_lower_passes(target)
                                    + tvm_stages.finalize_passes(target))


def _tvm_stages(target: tvm.target.Target):
    """TVM's per-target stage lists (``library_dispatch_passes`` ... ``finalize_passes``).

    ``tvm.relax.pipeline`` picks them by the target's kind and keys; for llvm it reaches for
    functions that ``relax.backend.cpu_generic`` does not re-export in TVM 0.27, so for llvm
    the module that defines them is used directly.
    """
    if target.kind.name == "llvm":
        from tvm.relax.backend.cpu_generic import pipeline as cpu_stages

        return cpu_stages
    return relax.pipeline


if "mcpruner" not in relax.pipeline.PIPELINE_MAP:
    relax.pipeline.register_pipeline("mcpruner")(mcpruner_pipeline)
