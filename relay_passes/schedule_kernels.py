"""Passes that give our sparse kernels their schedules: tuned ones from a log, else defaults."""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, tirx
from tvm.ir import IRModule
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

import topi_sparse
from tvm_mcpruner.targets import preset_for_tvm_target

__all__ = [
    "CHOICE_MARGIN",
    "CONFIRMED_RUNS",
    "ApplyTuningDatabase",
    "RankedTuningView",
    "ScheduleSparseKernels",
    "rank_tuned_records",
]

logger = logging.getLogger("tvm_mcpruner")

# A tuned schedule replaces a kernel's default only when it is this much faster. On a
# shared machine two runs of the same schedule differ by ~1-2% typically and by up to
# ~20% now and then (the A/A control of benchmarks/tuning.py), so a candidate measured
# once can win by luck; the margin and the median over repeated runs keep such a pick
# from replacing the default.
CHOICE_MARGIN = 0.03
# ... and only when it was timed as often as the default, up to this many runs: the
# search's run plus the tuner's confirmation rounds (``tvm_mcpruner.tuning``), in which
# the default and the best candidates take turns. A schedule the search timed once
# cannot replace it: the search's runs read faster than the confirmation rounds on this
# host (session 9: three candidates timed 0.24 ms by the search measured 0.31-0.34 ms
# when confirmed, so a fourth, timed once at 0.27 ms, outranked them and the default).
CONFIRMED_RUNS = 3


@tvm.transform.module_pass(opt_level=0, name="ApplyTuningDatabase")
class ApplyTuningDatabase:
    """Schedule every PrimFunc that a MetaSchedule database holds a record for.

    Matches: PrimFuncs (our kernels' computes and TVM's legalized ops alike) that are
    structurally equal to a tuned workload, queried for the current ``Target``.
    Emits: the first schedule of :func:`rank_tuned_records` for each (the fastest by
    median time; for our kernels the default unless beaten by ``CHOICE_MARGIN``), marked
    ``tirx.is_scheduled``; the others are left as they are for the passes after it.
    ``family`` (default: the current Target's preset) names our kernels' default
    schedule. Read after the pass ran: ``applied`` names the functions it scheduled,
    ``knobs`` maps those of them that are our kernels to the knobs they got (None when
    the record predates knob annotations), and
    ``kept_default`` names the kernels whose logged default schedule ranked first.
    """

    def __init__(self, database, family: str | None = None):
        self.database = database
        self.family = family
        self.applied: list[str] = []
        self.knobs: dict[str, topi_sparse.PatternConvKnobs | None] = {}
        self.kept_default: list[str] = []

    def transform_module(self, mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        before = _scheduled(mod)
        defaults = {gvar.name_hint: topi_sparse.declared_knobs(func) for gvar, func in mod.functions_items()
                    if topi_sparse.is_unscheduled_kernel(func)}
        family = self.family or preset_for_tvm_target(tvm.target.Target.current()).family
        with RankedTuningView(self.database, family):
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


def rank_tuned_records(
    database: ms.database.Database, workload: ms.database.Workload, family: str | None = None,
    margin: float = CHOICE_MARGIN,
) -> list[ms.database.TuningRecord]:
    """The schedules logged for ``workload``, one record each, best first.

    A schedule (a trace with its decisions) measured several times is ranked by the
    median of its measurements' medians, so one lucky run does not make it the winner.
    When ``family`` is given and the workload is our kernel, its default schedule
    (``topi_sparse.default_schedule_trace``) comes first unless the fastest schedule
    timed at least as often as the default (counting up to :data:`CONFIRMED_RUNS` runs)
    is faster by more than ``margin``, and then that one comes first: tuning never
    replaces the default by a tie, nor by a schedule timed once. Each returned
    record carries the schedule's median time as its one ``run_secs`` value. Records of
    our kernel made by an earlier version of its schedule are left out
    (``topi_sparse.is_current_trace``): they stay in the log, unused.
    """
    records = [r for r in database.get_top_k(workload, max(1, len(database))) if r.run_secs]  # all of them
    if topi_sparse.is_kernel(workload.mod["main"]):
        current = [r for r in records if topi_sparse.is_current_trace(r.trace)]
        if len(current) < len(records):
            _note_stale(database, workload, len(records) - len(current))
        records = current
    runs: dict[str, list] = defaultdict(list)
    for record in records:
        runs[str(record.trace)].append(record)
    median = {key: float(np.median([np.median([float(s) for s in r.run_secs]) for r in group]))
              for key, group in runs.items()}
    order = sorted(runs, key=median.__getitem__)
    default = topi_sparse.default_schedule_trace(workload.mod, family) if family and order else None
    default_key = str(default) if default is not None else None
    if default_key in median:
        enough = min(len(runs[default_key]), CONFIRMED_RUNS)
        rival = next((key for key in order if key != default_key and len(runs[key]) >= enough), None)
        chosen = rival if rival is not None and median[rival] <= median[default_key] * (1 - margin) else default_key
        order.remove(chosen)
        order.insert(0, chosen)
    return [_with_time(runs[key][0], median[key]) for key in order]


_stale_noted: set[tuple[int, int]] = set()


def _note_stale(database: ms.database.Database, workload: ms.database.Workload, count: int) -> None:
    key = (id(database), tvm_ffi.structural_hash(workload.mod))
    if key not in _stale_noted:  # ranking runs often per workload: say it once per opened log
        _stale_noted.add(key)
        logger.info("tuning log: %d records of a sparse kernel come from an earlier version of its "
                    "schedule and are not used (re-tune to replace them)", count)


def _with_time(record: ms.database.TuningRecord, seconds: float) -> ms.database.TuningRecord:
    return ms.database.TuningRecord(record.trace, record.workload, [seconds], record.target,
                                    record.args_info)


@derived_object
class RankedTuningView(ms.database.PyDatabase):
    """A tuning log seen through :func:`rank_tuned_records`: ``get_top_k`` lists each
    current schedule once, by the median of its runs.

    Compile applies a log through it read-only (``family`` set: our kernels' default
    schedule keeps its place against ties); the tuner's search starts from its top
    records and, with ``writable=True``, writes its measurements through to the log.
    """

    def __init__(self, database: ms.database.Database, family: str | None = None, writable: bool = False):
        super().__init__()
        self.database = database
        self.family = family
        self.writable = writable

    def has_workload(self, mod: IRModule) -> bool:
        return self.database.has_workload(mod)

    def commit_workload(self, mod: IRModule) -> ms.database.Workload:
        return self.database.commit_workload(mod)  # returns the logged one; adds nothing if present

    def commit_tuning_record(self, record: ms.database.TuningRecord) -> None:
        if not self.writable:
            raise TypeError("applying a tuning log never writes to it")
        self.database.commit_tuning_record(record)

    def get_top_k(self, workload: ms.database.Workload, top_k: int) -> list[ms.database.TuningRecord]:
        return rank_tuned_records(self.database, workload, self.family)[:top_k]

    def get_all_tuning_records(self) -> list[ms.database.TuningRecord]:
        return self.database.get_all_tuning_records()

    def __len__(self) -> int:
        return len(self.database)
