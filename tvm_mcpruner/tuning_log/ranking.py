"""Which logged schedule a kernel gets: the policy ``mcp.compile`` and ``mcp.tune`` share.

A log holds every run of every schedule tried; :func:`rank_tuned_records` orders the
schedules of one workload by the median of their runs, keeps our kernels' default first
unless a schedule timed as often beats it by :data:`CHOICE_MARGIN`, and leaves out records
of an earlier version of our schedules. :class:`RankedTuningView` is a log seen through
that order: what MetaSchedule's apply pass and the tuner's search read.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import tvm_ffi
from tvm.ir import IRModule
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

import topi_sparse

__all__ = ["CHOICE_MARGIN", "CONFIRMED_RUNS", "RankedTuningView", "rank_tuned_records"]

logger = logging.getLogger("tvm_mcpruner")

# A tuned schedule replaces a kernel's default only when it is this much faster: two runs
# of one schedule on a shared machine differ by a few percent (benchmarks/tuning.py's A/A
# control measures it), so a candidate could otherwise win by luck.
CHOICE_MARGIN = 0.03
# ... and only when it was timed as often as the default, up to this many runs: the
# search's run plus the tuner's confirmation rounds (``tvm_mcpruner.tuning``), in which
# the default and the best candidates take turns. A schedule the search timed once
# cannot replace it: the search's own runs read faster than confirmation runs do.
CONFIRMED_RUNS = 3


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
