"""Passes that give our sparse kernels their schedules: tuned ones from a log, else defaults."""

from __future__ import annotations

import logging

import tvm
from tvm import relax, tirx
from tvm.ir import IRModule

import topi_sparse

__all__ = ["ApplyTuningDatabase", "ScheduleSparseKernels"]

logger = logging.getLogger("tvm_mcpruner")


@tvm.transform.module_pass(opt_level=0, name="ApplyTuningDatabase")
class ApplyTuningDatabase:
    """Schedule every PrimFunc that a MetaSchedule database holds a record for.

    Matches: PrimFuncs (our kernels' computes and TVM's legalized ops alike) that are
    structurally equal to a tuned workload, queried for the current ``Target``.
    Emits: the record the database puts first for each (its ``get_top_k(workload, 1)``),
    marked ``tirx.is_scheduled``; the others are left as they are for the passes after it.
    Which record comes first is the database's policy, not this pass's: ``mcp.compile``
    hands it a ``tvm_mcpruner.tuning_log.RankedTuningView``, a plain JSONDatabase puts the
    fastest run first.

    ``family`` (default: the current Target's) names our kernels' default knobs. Read
    after the pass ran: ``applied`` names the functions it scheduled, ``knobs`` maps those
    of them that are our kernels to the knobs they got (None when the record predates
    knob annotations), and ``kept_default`` names the kernels that got their default knobs.
    """

    def __init__(self, database, family: str | None = None):
        self.database = database
        self.family = family
        self.applied: list[str] = []
        self.knobs: dict[str, object | None] = {}
        self.kept_default: list[str] = []

    def transform_module(self, mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        before = _scheduled(mod)
        family = self.family or topi_sparse.family_of(tvm.target.Target.current())
        defaults = {gvar.name_hint: topi_sparse.declared_knobs(func, family) for gvar, func in mod.functions_items()
                    if family and topi_sparse.is_unscheduled_kernel(func)}
        with self.database:
            mod = relax.transform.MetaScheduleApplyDatabase()(mod)
        self.applied = sorted(_scheduled(mod) - before)
        functions = {gvar.name_hint: func for gvar, func in mod.functions_items()}
        # None: a record logged before schedules recorded their knobs
        self.knobs = {name: topi_sparse.scheduled_knobs(functions[name]) for name in self.applied if name in defaults}
        self.kept_default = sorted(name for name, k in self.knobs.items() if k is not None and defaults[name] == k)
        logger.info("ApplyTuningDatabase: %d functions scheduled from the tuning log", len(self.applied))
        return mod


@tvm.transform.module_pass(opt_level=0, name="ScheduleSparseKernels")
class ScheduleSparseKernels:
    """Apply the default schedule of ``family`` to our kernels that are still unscheduled.

    Matches: PrimFuncs marked ``topi_sparse.KERNEL_ATTR`` without ``tirx.is_scheduled``
    (a tuning log had no record for them). Emits: the same functions scheduled with the
    knobs their compute was declared with (``topi_sparse.schedule_pattern_conv2d``).
    A module without such kernels is returned as it came (the same object).
    """

    def __init__(self, family: str):
        self.family = family

    def transform_module(self, mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        unscheduled = [gvar for gvar, func in mod.functions_items() if topi_sparse.is_unscheduled_kernel(func)]
        if not unscheduled:
            return mod
        functions = dict(mod.functions_items())
        for gvar in unscheduled:
            functions[gvar] = topi_sparse.schedule_pattern_conv2d(functions[gvar], self.family)
        return IRModule(functions, attrs=mod.attrs, global_infos=mod.global_infos)


def _scheduled(mod: IRModule) -> set[str]:
    return {
        gvar.name_hint
        for gvar, func in mod.functions_items()
        if isinstance(func, tirx.PrimFunc) and func.attrs and func.attrs.get("tirx.is_scheduled", False)
    }
