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

__all__ = ["mcpruner_pipeline"]


def mcpruner_pipeline(
    target: "str | TargetPreset | None" = None,
    min_mac_reduction: float = MIN_MAC_REDUCTION,
    rewrite: RewriteSparseConv2d | None = None,
) -> tvm.transform.Pass:
    """Sparse rewrites + the default pipeline of the target ``tvm.compile`` builds for.

    ``target`` picks the preset (vector width, schedule family); when None it is read
    from the Target that ``tvm.compile`` enters. Pass ``rewrite`` to read its
    ``records`` afterwards.
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
        with tvm_target:
            mod = relax.transform.FoldConstant()(mod)  # bias arrives as reshape(const)
            mod = rewriter(mod)
            return _lowering(tvm_target, preset.vector_width)(mod)

    return _pipeline


def _lowering(target: tvm.target.Target, lanes: int) -> tvm.transform.Pass:
    """TVM's default lowering for ``target``; on CPUs with the leftover ops scheduled.

    The CPU stages are TVM's own (``relax.backend.cpu_generic``), with one addition
    after fusion: :class:`ParallelVectorizeLeftovers` for every PrimFunc not scheduled yet.
    """
    if target.kind.name != "llvm":
        return relax.get_default_pipeline(target)
    from tvm.relax.backend.cpu_generic import pipeline as cpu  # dataflow_lower_passes is not re-exported

    return tvm.transform.Sequential(
        cpu.library_dispatch_passes(target)
        + cpu.legalize_passes(target)
        + [dlight.ApplyDefaultSchedule(ParallelVectorizeLeftovers(lanes))]
        + cpu.dataflow_lower_passes(target)
        + cpu.finalize_passes(target)
    )


if "mcpruner" not in relax.pipeline.PIPELINE_MAP:
    relax.pipeline.register_pipeline("mcpruner")(mcpruner_pipeline)
