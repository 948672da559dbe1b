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
    Emits: the best measured schedule of each, marked ``tirx.is_scheduled``; the others
    are left as they are for the passes after it. ``applied`` names the functions it
    scheduled (read it after the pass ran).
    """

    def __init__(self, database):
        self.database = database
        self.applied: list[str] = []

    def transform_module(self, mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        before = _scheduled(mod)
        with self.database:
            mod = relax.transform.MetaScheduleApplyDatabase()(mod)
        self.applied = sorted(_scheduled(mod) - before)
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
