"""Tuning logs: MetaSchedule JSON databases under ``autotune_logs/<device>/``.

A log is a folder with TVM's two files, ``database_workload.json`` (one line per tuned
PrimFunc) and ``database_tuning_record.json`` (one line per measured schedule), so plain
TVM reads it too (``ms.database.JSONDatabase``). MetaSchedule only ever appends lines
to them; nothing here rewrites or truncates a log. Every record names the target it was
measured for, and one folder holds one target: that is how ``mcp.compile`` finds the
log that fits its target, and how a log meant for another device is refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "REPO_LOG_ROOT",
    "TuningLogError",
    "default_log_dir",
    "device_name",
    "find_tuning_log",
    "log_target",
    "open_tuning_log",
    "target_signature",
]

logger = logging.getLogger("tvm_mcpruner")

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
REPO_LOG_ROOT = Path(__file__).resolve().parents[1] / "autotune_logs"
# What makes two targets the same machine for a schedule (tags and keys do not).
_SIGNATURE_KEYS = ("kind", "mtriple", "mcpu", "mattr", "num-cores", "device", "arch")


class TuningLogError(ValueError):
    """A tuning log is malformed, or was measured for another target. It is left untouched."""


def device_name(preset) -> str:
    """Folder name of a preset's logs: the CPU's LLVM name for the host (e.g. ``znver5``)."""
    if preset.name != "host":
        return preset.name
    return str(preset.tvm_target().attrs.get("mcpu", "") or "host-generic")


def default_log_dir(preset) -> Path:
    """``<repo>/autotune_logs/<device_name>``."""
    return REPO_LOG_ROOT / device_name(preset)


def target_signature(target: Any) -> dict[str, Any]:
    """The parts of a target (``tvm.target.Target`` or its exported dict) a schedule depends on."""
    exported = target if isinstance(target, dict) else dict(target.export())
    signature = {}
    for key in _SIGNATURE_KEYS:
        value = exported.get(key)
        if value is None or (hasattr(value, "__len__") and len(value) == 0):
            continue
        if isinstance(value, str):
            signature[key] = str(value)
        elif isinstance(value, (int, float)):
            signature[key] = int(value)
        else:  # a list, or TVM's Array of strings
            signature[key] = [str(v) for v in value]
    return signature


def _read_lines(path: Path) -> Iterable[tuple[int, Any]]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise TuningLogError(
                    f"{path}:{number}: not a JSON line ({exc.msg}); a tuning run may have been "
                    "killed while writing it. The log was left as it is: move the file away "
                    "or delete that line by hand."
                ) from None


def _check_log(directory: Path) -> dict[str, Any] | None:
    """Validate both files line by line; returns the target signature of the records."""
    workloads = directory / WORKLOAD_FILE
    records = directory / RECORD_FILE
    count = 0
    if workloads.exists():
        for number, entry in _read_lines(workloads):
            if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry)):
                raise TuningLogError(f"{workloads}:{number}: not a MetaSchedule workload "
                                     "(expected [structural hash, IRModule JSON])")
            count += 1
    signature = None
    if records.exists():
        for number, entry in _read_lines(records):
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int)
                    and isinstance(entry[1], list) and len(entry[1]) >= 3):
                raise TuningLogError(f"{records}:{number}: not a MetaSchedule tuning record "
                                     "(expected [workload index, [trace, run_secs, target, args]])")
            if not 0 <= entry[0] < count:
                raise TuningLogError(f"{records}:{number}: refers to workload {entry[0]}, but "
                                     f"{workloads.name} has {count}")
            found = target_signature(entry[1][2])
            if signature is None:
                signature = found
            elif found != signature:
                raise TuningLogError(f"{records}:{number}: measured for {found}, while earlier records "
                                     f"are for {signature}; one log folder holds one target")
    return signature


def log_target(directory: str | Path) -> dict[str, Any] | None:
    """Target signature of the records in a log folder (None when it has none yet)."""
    return _check_log(Path(directory))


def open_tuning_log(directory: str | Path, target: Any = None, *, create: bool = False):
    """The log in ``directory`` as a MetaSchedule ``JSONDatabase``, after checking it.

    Raises :class:`TuningLogError` when a line is malformed, or when ``target`` is given
    and the records were measured for another one. ``create`` makes an empty log
    (MetaSchedule then appends to it); otherwise a missing log is an error.
    """
    from tvm.s_tir import meta_schedule as ms

    directory = Path(directory)
    if not create and not (directory / RECORD_FILE).exists():
        raise TuningLogError(f"no tuning log in {directory} (expected {RECORD_FILE} there)")
    signature = _check_log(directory)
    if target is not None and signature is not None and signature != target_signature(target):
        raise TuningLogError(
            f"the tuning log in {directory} was measured for {signature}, not for "
            f"{target_signature(target)}; tune into another folder (--log) instead"
        )
    directory.mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(str(directory / WORKLOAD_FILE), str(directory / RECORD_FILE),
                                    allow_missing=True)


def find_tuning_log(target: Any, roots: Iterable[str | Path] | None = None) -> Path | None:
    """The log folder under ``roots`` (default: ``./autotune_logs`` and the repository's)
    whose records were measured for ``target``; None when there is none.

    A malformed log on the way is skipped with a warning (it may belong to another
    device); ask for it by path to get the error itself.
    """
    wanted = target_signature(target)
    roots = [Path(r) for r in roots] if roots is not None else [Path.cwd() / "autotune_logs", REPO_LOG_ROOT]
    seen: set[Path] = set()
    for root in roots:
        if not root.is_dir() or root.resolve() in seen:
            continue
        seen.add(root.resolve())
        for directory in sorted(p for p in root.iterdir() if (p / RECORD_FILE).exists()):
            try:
                signature = _check_log(directory)
            except TuningLogError as exc:
                logger.warning("skipping tuning log %s: %s", directory, exc)
                continue
            if signature == wanted:
                return directory
    return None
