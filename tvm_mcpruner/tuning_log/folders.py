"""Tuning log folders: MetaSchedule JSON databases under ``autotune_logs/<device>/``.

A log is a folder with TVM's two files, ``database_workload.json`` (one line per tuned
PrimFunc) and ``database_tuning_record.json`` (one line per measured schedule), so plain
TVM reads it too (``ms.database.JSONDatabase``). MetaSchedule only ever appends lines
to them; nothing here rewrites or truncates a log. Every record names the target it was
measured for, and one folder holds one target: that is how ``mcp.compile`` finds the
log that fits its target, and how a log meant for another device is refused.

Next to them, ``provenance.jsonl`` says who measured: one JSON line appended by each
``mcp.tune`` run before it measures anything (runner "local" or "rpc", tracker and key,
whether the server was emulated, the tuning host's CPU, TVM version, date, trial budget,
target, and how many records the log held before the run). A folder any of whose runs was
emulated (qemu) holds emulated timings: ``find_tuning_log`` (``mcp.compile``'s "auto")
skips it, with the reason logged. A folder without the file (logs from before it
existed) has "unknown" provenance and is still applied.

Looking a log up is cheap: the target is read from the provenance file where there is
one; the records are parsed to validate them only for the folder that fits, and a
folder's validation is remembered per file (inode, size, mtime) in this process, so
``mcp.compile`` validates the log it applies once.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PROVENANCE_FILE",
    "REPO_LOG_ROOT",
    "LogProvenance",
    "TuningLogError",
    "append_provenance",
    "default_log_dir",
    "device_name",
    "find_tuning_log",
    "log_provenance",
    "log_target",
    "open_tuning_log",
    "target_signature",
]

logger = logging.getLogger("tvm_mcpruner")

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
PROVENANCE_FILE = "provenance.jsonl"
RUNNERS = ("local", "rpc")
REPO_LOG_ROOT = Path(__file__).resolve().parents[2] / "autotune_logs"
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
    """``./autotune_logs/<device_name>``, under the current folder: a tune run writes where
    the user works (in a checkout's root that is the repository's log), never into an
    installed package; ``find_tuning_log`` looks there first."""
    return Path.cwd() / "autotune_logs" / device_name(preset)


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


def _check_one_target(where: str, found: Any, found_is: str, earlier: Any, earlier_is: str) -> None:
    """Raise unless two targets (or signatures; None: not named) are one: a log folder holds
    one target, whether the records, the provenance lines or a new run name it."""
    if found is None or earlier is None:
        return
    found, earlier = target_signature(found), target_signature(earlier)
    if found != earlier:
        raise TuningLogError(f"{where}: {found_is} {found}, but {earlier_is} {earlier}; "
                             "one log folder holds one target")


def _read_lines(path: Path) -> Iterable[tuple[int, Any]]:
    """``(line number, value)`` of each JSON line; any undecodable line is a TuningLogError naming it."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                yield number, json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
            except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
                why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc).split(":")[0]
                raise TuningLogError(
                    f"{path}:{number}: not a JSON line ({why}); a tuning run may have been "
                    "killed while writing it. The log was left as it is: move the file away "
                    "or delete that line by hand."
                ) from None


def _refuse_constant(name: str) -> Any:
    # NaN / Infinity are not JSON; TVM's own reader stops at them ("Cannot tokenize").
    raise ValueError(f"{name} is not a number JSON allows")


def _check_log(directory: Path) -> dict[str, Any] | None:
    """Validate both files line by line; returns the target signature of the records."""
    workloads = directory / WORKLOAD_FILE
    records = directory / RECORD_FILE
    entries: list[list[str]] = []
    if workloads.exists():
        for number, entry in _read_lines(workloads):
            if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry)):
                raise TuningLogError(f"{workloads}:{number}: not a MetaSchedule workload "
                                     "(expected [structural hash, IRModule JSON])")
            entries.append(entry)
    count = len(entries)
    arguments: dict[int, Any] = {}  # workload index -> its arguments, decoded when a record needs them
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
            if len(entry[1]) > 3 and entry[1][3] is not None:
                if entry[0] not in arguments:
                    try:
                        arguments[entry[0]] = _workload_arguments(entries[entry[0]])
                    except Exception as exc:  # TVM's decoder raises its own error types
                        raise TuningLogError(f"{workloads}:{entry[0] + 1}: its IRModule does not decode "
                                             f"({type(exc).__name__})") from None
                if entry[1][3] != arguments[entry[0]]:
                    raise TuningLogError(f"{records}:{number}: its arguments {entry[1][3]} are not those of "
                                         f"workload {entry[0]} ({arguments[entry[0]]}): the record was timed on "
                                         "another kernel")
            found = target_signature(entry[1][2])
            signature = found if signature is None else signature
            if found != signature:  # signatures already: compared as they are, once per line
                raise TuningLogError(f"{records}:{number}: measured for {found}, but earlier records were "
                                     f"for {signature}; one log folder holds one target")
    return signature


def _workload_arguments(entry: list[str]) -> Any:
    """The argument list (``[["TENSOR", dtype, shape], ...]``) of a workload line's ``main``."""
    from tvm.s_tir import meta_schedule as ms

    mod = ms.database.Workload.from_json(entry).mod
    return json.loads(json.dumps([info.as_json() for info in ms.arg_info.ArgInfo.from_prim_func(mod["main"])],
                                 default=_plain_json))


def _plain_json(value: Any) -> Any:
    """``json.dumps`` fallback for TVM's strings, integers and arrays."""
    if hasattr(value, "__len__") and not isinstance(value, (str, bytes)):
        return list(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)


# --------------------------------------------------------------------------- provenance


@dataclass(frozen=True)
class LogProvenance:
    """The lines of a log folder's ``provenance.jsonl`` (empty: the folder has none).

    ``status`` is "emulated" when any run measured on an emulated (qemu) server, else
    "unknown" when there is no line or a run did not know whether its server was
    emulated, else "hardware".
    """

    entries: tuple[dict[str, Any], ...] = ()

    @property
    def status(self) -> str:
        if any(e["emulated"] is True for e in self.entries):
            return "emulated"
        if not self.entries or any(e["emulated"] is None for e in self.entries):
            return "unknown"
        return "hardware"

    @property
    def target(self) -> dict[str, Any] | None:
        """The target signature the runs name (they all name the same one)."""
        return next((e["target"] for e in self.entries if e.get("target") is not None), None)

    def describe(self) -> str:
        """One phrase for summaries and log messages."""
        status = self.status
        if status == "emulated":
            return "provenance: emulated (qemu) — not device timings"
        if not self.entries:
            return "provenance: unknown (no provenance.jsonl: nothing says who measured it)"
        runs = "; ".join(_describe_run(e) for e in self.entries[-3:])
        more = f"{len(self.entries) - 3} earlier run(s) and " if len(self.entries) > 3 else ""
        if status == "unknown":
            return f"provenance: unknown (not known whether the server was emulated): {more}{runs}"
        return f"provenance: measured on hardware: {more}{runs}"


def _describe_run(entry: dict[str, Any]) -> str:
    if entry["runner"] == "local":
        where = f"local on {entry.get('host_cpu') or 'this host'}"
    else:
        where = f"rpc key {entry.get('key')!r} via {entry.get('tracker')}"
    return where + (f" ({entry['date']})" if entry.get("date") else "")


def _check_provenance_entry(entry: Any) -> str | None:
    """What is wrong with a provenance line (None: nothing)."""
    if not isinstance(entry, dict):
        return "not a JSON object"
    if entry.get("runner") not in RUNNERS:
        return f"'runner' must be one of {RUNNERS}, got {entry.get('runner')!r}"
    if "emulated" not in entry or entry["emulated"] not in (True, False, None):
        return "'emulated' must be true, false or null (not known)"
    if entry.get("target") is not None and not isinstance(entry["target"], dict):
        return "'target' must be a target signature (a JSON object)"
    for key in ("trials", "records_before"):
        value = entry.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return f"{key!r} must be an integer or null"
    return None


def _read_provenance(directory: Path) -> LogProvenance:
    """Parse and check ``provenance.jsonl`` line by line (a missing file: no lines)."""
    path = directory / PROVENANCE_FILE
    if not path.exists():
        return LogProvenance()
    entries = []
    first = None  # the first target a line names; every later one must be the same
    for number, entry in _read_lines(path):
        problem = _check_provenance_entry(entry)
        if problem is not None:
            raise TuningLogError(f"{path}:{number}: not a provenance line ({problem}). The log was "
                                 "left as it is: fix or delete that line by hand.")
        first = first if first is not None else entry.get("target")
        _check_one_target(f"{path}:{number}", entry.get("target"), "a run for", first, "earlier runs were for")
        entries.append(entry)
    return LogProvenance(tuple(entries))


def append_provenance(directory: str | Path, entry: dict[str, Any]) -> None:
    """Append one line to the folder's ``provenance.jsonl`` (created if missing).

    The existing lines are checked first (a corrupt line is an error; nothing is written).
    The line goes out in one ``write`` on a file opened with ``O_APPEND``, so it lands
    whole at the end, after whatever is there; earlier lines are never rewritten.
    """
    directory = Path(directory)
    problem = _check_provenance_entry(entry)
    if problem is not None:
        raise ValueError(f"not a provenance line: {problem}")
    previous = _read_provenance(directory)  # a corrupt line stops here, before anything is written
    _check_one_target(str(directory / PROVENANCE_FILE), entry.get("target"), "the new run is for",
                      previous.target, "its runs were for")
    path = directory / PROVENANCE_FILE
    line = (json.dumps(entry) + "\n").encode("utf-8")
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # the last line lacks its newline: never glue two lines
        if os.write(fd, line) != len(line):
            raise OSError(f"{path}: short write while appending a provenance line")
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- validation cache

# directory -> ((inode, size, mtime) of its files, (records' signature, provenance) or the error)
_VALIDATED: dict[Path, tuple[tuple, tuple[dict[str, Any] | None, LogProvenance] | TuningLogError]] = {}


def _file_state(directory: Path) -> tuple:
    state = []
    for name in (WORKLOAD_FILE, RECORD_FILE, PROVENANCE_FILE):
        try:
            st = os.stat(directory / name)
        except FileNotFoundError:
            state.append(None)
        else:
            state.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(state)


def _validated(directory: Path) -> tuple[dict[str, Any] | None, LogProvenance]:
    """Records' target signature and the provenance of a log folder, after checking both.

    Remembered, error included, per (inode, size, mtime) of the three files: a log that
    did not change is not parsed again (an appended line changes its size, a file put in
    its place its inode).
    """
    key = directory.resolve()
    state = _file_state(directory)
    cached = _VALIDATED.get(key)
    if cached is None or cached[0] != state:
        try:
            signature = _check_log(directory)
            provenance = _read_provenance(directory)
            _check_one_target(str(directory / PROVENANCE_FILE), provenance.target, "its runs were for",
                              signature, f"the records in {RECORD_FILE} were measured for")
            result: Any = (signature, provenance)
        except TuningLogError as exc:
            result = exc
        cached = _VALIDATED[key] = (state, result)
    if isinstance(cached[1], TuningLogError):
        raise TuningLogError(str(cached[1]))
    return cached[1]


def log_provenance(directory: str | Path) -> LogProvenance:
    """Who measured the log in ``directory`` (after validating it; see :class:`LogProvenance`)."""
    return _validated(Path(directory))[1]


def log_target(directory: str | Path) -> dict[str, Any] | None:
    """Target signature of the records in a log folder (None when it has none yet)."""
    return _validated(Path(directory))[0]


def open_tuning_log(directory: str | Path, target: Any = None, *, create: bool = False):
    """The log in ``directory`` as a MetaSchedule database, after checking it.

    The database reads like a ``JSONDatabase`` of the folder's files and appends to them
    under an OS lock on the folder (:class:`.locked.LockedJSONDatabase`), so concurrent
    tune runs on one folder keep every record with its own workload.

    Raises :class:`TuningLogError` when a line (of the records or of the provenance) is
    malformed, or when ``target`` is given and the log was measured for another one.
    ``create`` makes an empty log (MetaSchedule then appends to it); otherwise a missing
    log is an error. Whether the timings were emulated is not checked here: see
    :func:`log_provenance`.
    """
    from .locked import LockedJSONDatabase  # imports TVM

    directory = Path(directory)
    if not create and not (directory / RECORD_FILE).exists():
        raise TuningLogError(f"no tuning log in {directory} (expected {RECORD_FILE} there)")
    signature, provenance = _validated(directory)
    signature = signature if signature is not None else provenance.target
    wanted = target_signature(target) if target is not None else None
    if wanted is not None and signature is not None and signature != wanted:
        raise TuningLogError(
            f"the tuning log in {directory} was measured for {signature}, not for "
            f"{wanted}; tune into another folder (--log) instead"
        )
    directory.mkdir(parents=True, exist_ok=True)
    return LockedJSONDatabase(directory, WORKLOAD_FILE, RECORD_FILE)


def find_tuning_log(target: Any, roots: Iterable[str | Path] | None = None) -> Path | None:
    """The log folder under ``roots`` (default: ``./autotune_logs`` and the repository's)
    whose records were measured for ``target``; None when there is none.

    Folders whose provenance says a run was emulated (qemu) are skipped, with the reason
    logged: their timings are not device timings (ask for one by path to apply it anyway).
    A malformed log on the way is skipped with a warning (it may belong to another
    device); ask for it by path to get the error itself. Only the folder that fits is
    parsed: the others are told apart by their provenance file's target where they have
    one.
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
                named = _read_provenance(directory).target
                if named is not None and target_signature(named) != wanted:
                    continue  # another device's log: not parsed
                signature, provenance = _validated(directory)
            except TuningLogError as exc:
                logger.warning("skipping tuning log %s: %s", directory, exc)
                continue
            if signature != wanted:
                continue
            if provenance.status == "emulated":
                logger.warning("skipping tuning log %s for %s: %s; pass it by path to apply it anyway",
                               directory, wanted, provenance.describe())
                continue
            return directory
    return None
