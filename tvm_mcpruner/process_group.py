"""Background processes that lead their own process group, and stopping them with everything they forked.

TVM's RPC tracker and server fork workers (each runs in a ``popen_worker`` child, and
every session in a forked child), and those children outlive a killed leader: killing
the whole group is the only way to stop them all. :func:`spawn` starts a command as a
group leader with its output in a log file, :class:`GroupProcess` holds it, and
:func:`stop_at_exit` stops whatever is still running when the interpreter exits.

Used by :mod:`tvm_mcpruner.arm_emulation` (the emulated aarch64 server) and
:mod:`tvm_mcpruner.rpc_farm` (trackers and host-CPU servers). Stdlib only.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

__all__ = ["GroupProcess", "group_alive", "spawn", "stop_at_exit", "stop_group"]


def spawn(args: Sequence[str], log_path: Path, header: str, *, env: dict[str, str] | None = None,
          cwd: Path | None = None, log_command: bool = True) -> subprocess.Popen:
    """Start ``args`` as the leader of a new process group, stdout and stderr into ``log_path``.

    The log starts with ``# header`` and, with ``log_command``, ``# $ <the command line>``.
    ``env`` None is this process's environment; ``PYTHONUNBUFFERED=1`` is added either
    way, so that the log is current while the process runs.
    """
    with open(log_path, "w") as log:
        log.write(f"# {header}\n")
        if log_command:
            log.write(f"# $ {' '.join(map(str, args))}\n")
        log.flush()
        env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
        return subprocess.Popen([str(arg) for arg in args], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies do not count).

    A zombie holds no port any more, and forked workers that outlive their leader are
    reaped by init whenever it gets to them: waiting for a zombie is waiting for nothing.
    """
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: ask the kernel, zombies included
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def stop_group(proc: subprocess.Popen, settle_s: float = 10.0) -> None:
    """Kill ``proc``'s process group (TERM, then KILL) and wait until it is gone; harmless twice.

    KILL follows TERM because forked children may ignore or outlive the TERM. The wait
    lasts until no member runs (at most ``settle_s``): the children are not ours to
    ``wait()`` for, and their ports are free only once they have exited.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    proc.poll()
    deadline = time.monotonic() + settle_s
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


class GroupProcess:
    """A process that leads its own process group, with its output in ``log_path``."""

    def __init__(self, proc: subprocess.Popen, log_path: Path):
        self.proc = proc
        self.log_path = log_path

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]

    def stop(self) -> None:
        """Kill the process with everything it forked (its process group); harmless twice."""
        stop_group(self.proc)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def stop_at_exit(running: set[GroupProcess]) -> None:
    """Stop every process still in ``running`` when the interpreter exits.

    Callers add a process to ``running`` when it starts and remove it in ``stop()``, so
    only the ones nobody stopped are left for exit time.
    """

    def stop_all() -> None:
        for process in list(running):
            process.stop()

    atexit.register(stop_all)
