"""A tuning log folder that several processes may append to at once without losing records.

MetaSchedule's ``JSONDatabase`` numbers workloads from its own in-memory view: two tune
runs on one folder each call their first workload 0, and the second run's records end up
pointing at the first run's workload. :class:`LockedJSONDatabase` writes the same two
files in the same format, but every append holds an OS lock on the folder and numbers
the workload from the file as it is at that moment; each append is one ``write`` of a
whole line, flushed to disk before the lock is let go. Reads go to a ``JSONDatabase``
opened on the files, reopened when another writer changed them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

import tvm_ffi
from tvm.ir import IRModule
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

__all__ = ["LOCK_FILE", "LockedJSONDatabase"]

LOCK_FILE = ".lock"


def _line(value) -> bytes:
    # MetaSchedule writes compact JSON, one value per line.
    return (json.dumps(value, separators=(",", ":")) + "\n").encode()


@derived_object
class LockedJSONDatabase(ms.database.PyDatabase):
    """The log in ``directory`` (its workload and record files), appended to under a lock."""

    def __init__(self, directory: str | os.PathLike, workload_file: str, record_file: str):
        super().__init__()
        self.directory = Path(directory)
        self.workloads = self.directory / workload_file
        self.records = self.directory / record_file
        self._reader: ms.database.JSONDatabase | None = None
        self._reader_state: tuple | None = None

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the folder's lock (released by the OS if the process dies holding it)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _append(self, path: Path, data: bytes) -> None:
        with open(path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def _index_of(self, mod: IRModule) -> int | None:
        """The line number (from 0) of ``mod`` in the workload file as it is now."""
        if not self.workloads.exists():
            return None
        shash = str(tvm_ffi.structural_hash(mod))
        with open(self.workloads, encoding="utf-8") as f:
            lines = [line for line in f if line.strip()]
        for index, line in enumerate(lines):
            entry = json.loads(line)
            if entry[0] == shash and tvm_ffi.structural_equal(ms.database.Workload.from_json(entry).mod, mod):
                return index
        return None

    def _workload_index(self, mod: IRModule) -> int:
        """``mod``'s line in the workload file, appended if absent; call it holding the lock."""
        index = self._index_of(mod)
        if index is not None:
            return index
        workload = ms.database.Workload(mod)
        self._append(self.workloads, _line([str(part) for part in workload.as_json()]))
        return self._index_of(mod)

    def commit_workload(self, mod: IRModule) -> ms.database.Workload:
        with self._locked():
            self._workload_index(mod)
        return ms.database.Workload(mod)

    def commit_tuning_record(self, record: ms.database.TuningRecord) -> None:
        with self._locked():
            index = self._workload_index(record.workload.mod)
            self._append(self.records, _line([index, _plain(record.as_json())]))

    # ------------------------------------------------------------------ reading

    def _read(self) -> ms.database.JSONDatabase:
        state = tuple((p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else None
                      for p in (self.workloads, self.records))
        if self._reader is None or state != self._reader_state:
            self._reader = ms.database.JSONDatabase(str(self.workloads), str(self.records), allow_missing=True)
            self._reader_state = state
        return self._reader

    def has_workload(self, mod: IRModule) -> bool:
        return self._read().has_workload(mod)

    def get_top_k(self, workload: ms.database.Workload, top_k: int) -> list[ms.database.TuningRecord]:
        reader = self._read()
        if not reader.has_workload(workload.mod):
            return []
        return reader.get_top_k(reader.commit_workload(workload.mod), top_k)  # present: nothing written

    def get_all_tuning_records(self) -> list[ms.database.TuningRecord]:
        return self._read().get_all_tuning_records()

    def __len__(self) -> int:
        return len(self._read())


def _plain(value):
    """A record's JSON as plain Python lists, numbers and strings (``json.dumps`` takes those)."""
    if isinstance(value, (str, bytes)):
        return str(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "__len__"):
        return [_plain(v) for v in value]
    if hasattr(value, "value"):  # an IntImm / FloatImm
        return value.value
    return str(value)
