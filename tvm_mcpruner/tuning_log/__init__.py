"""Tuning logs: the folders that hold them, and which logged schedule a kernel gets.

``folders``: MetaSchedule JSON databases under ``autotune_logs/<device>/``, their
provenance, validation and lookup. ``ranking``: the choice among a log's schedules that
``mcp.compile`` applies and ``mcp.tune`` searches from.
"""

from .folders import (
    PROVENANCE_FILE,
    RECORD_FILE,
    REPO_LOG_ROOT,
    WORKLOAD_FILE,
    LogProvenance,
    TuningLogError,
    append_provenance,
    default_log_dir,
    device_name,
    find_tuning_log,
    log_provenance,
    log_target,
    open_tuning_log,
    target_signature,
)
from .ranking import CHOICE_MARGIN, CONFIRMED_RUNS, RankedTuningView, rank_tuned_records

__all__ = [
    "CHOICE_MARGIN",
    "CONFIRMED_RUNS",
    "PROVENANCE_FILE",
    "RECORD_FILE",
    "REPO_LOG_ROOT",
    "WORKLOAD_FILE",
    "LogProvenance",
    "RankedTuningView",
    "TuningLogError",
    "append_provenance",
    "default_log_dir",
    "device_name",
    "find_tuning_log",
    "log_provenance",
    "log_target",
    "open_tuning_log",
    "rank_tuned_records",
    "target_signature",
]
