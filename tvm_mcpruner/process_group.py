"""Background processes that lead their own process group, and stopping them with everything they forked.

TVM's RPC tracker and server fork workers (each runs in a ``popen_worker`` child, and
every session in a forked child), and those children outlive a killed leader: killing
the whole group is the only way to stop them all. :func:`spawn` starts a command as a
group leader with its output in a log file, :class:`GroupProcess` holds it, and
:func:`stop_at_exit` stops whatever is still running when the interpreter exits.

The group also ends when the process that spawned it dies, SIGKILL included (no atexit
then): the group's leader is a small keeper (``python -I process_group.py --keep``, run
from this file, stdlib only) that starts the command in its group and ends the group
when the command exits, when it gets SIGTERM/SIGHUP/SIGINT, or when the spawning process
is gone. It learns the last from a pipe (the "lifeline") whose write end only the
spawning process holds: the kernel closes it when that process dies, by any signal,
whichever thread spawned (``PR_SET_PDEATHSIG`` would follow the spawning *thread*, and is
Linux only).

Used by :mod:`tvm_mcpruner.arm_emulation` (the emulated aarch64 server) and
:mod:`tvm_mcpruner.rpc_farm` (trackers and host-CPU servers). Stdlib only.
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

__all__ = ["GroupProcess", "group_alive", "spawn", "stop_at_exit", "stop_group"]

_KEEPER = Path(__file__).resolve()
# Between the keeper's TERM to its group and its KILL to those left; below stop_group's 5 s wait.
_KEEPER_GRACE_S = 3.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def spawn(args: Sequence[str], log_path: Path, header: str, *, env: dict[str, str] | None = None,
          cwd: Path | None = None, log_command: bool = True) -> subprocess.Popen:
    """Start ``args`` in a new process group, stdout and stderr into ``log_path``; the group ends with this process.

    The returned process is the group's leader, the keeper (module docstring): its pid is
    the group id, and its exit status is the command's. The group ends when the command
    exits, when the group is killed (:func:`stop_group`), or when this process dies, even
    by SIGKILL; a child this process forked without exec holds the lifeline too, so the
    group then lasts until that child is gone as well.

    The log starts with ``# header`` and, with ``log_command``, ``# $ <the command line>``.
    ``env`` None is this process's environment; ``PYTHONUNBUFFERED=1`` is added either
    way, so that the log is current while the process runs.
    """
    args = [str(arg) for arg in args]
    with open(log_path, "w") as log:
        log.write(f"# {header}\n")
        if log_command:
            log.write(f"# $ {' '.join(args)}\n")
        log.flush()
        env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
        # -I: the keeper imports the standard library only, never this folder's modules or $PYTHONPATH.
        keeper = [sys.executable, "-I", str(_KEEPER), "--keep"]
        lifeline_read, lifeline_write = os.pipe()  # both non-inheritable: no other child gets the write end
        try:
            proc = subprocess.Popen([*keeper, str(lifeline_read), "--", *args], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                    start_new_session=True, pass_fds=(lifeline_read,))
        except BaseException:
            os.close(lifeline_write)
            raise
        finally:
            os.close(lifeline_read)
    # The write end lives as long as the Popen, which subprocess keeps while the keeper runs even when dropped.
    proc._lifeline = open(lifeline_write, "wb", buffering=0)  # type: ignore[attr-defined]  # noqa: SIM115
    return proc


def _members(pgid: int) -> list[int] | None:
    """PIDs of the running members of group ``pgid`` (zombies do not count); None without /proc (not Linux)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    members = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies do not count).

    A zombie holds no port any more, and forked workers that outlive their leader are
    reaped by init whenever it gets to them: waiting for a zombie is waiting for nothing.
    """
    members = _members(pgid)
    if members is None:  # not Linux: ask the kernel, zombies included
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    return bool(members)


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
    lifeline = getattr(proc, "_lifeline", None)
    if lifeline is not None:
        lifeline.close()


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


# --------------------------------------------------------------------------- the keeper (group leader)


def _keep(lifeline: int, args: list[str]) -> int:
    """Run ``args`` in this process's group until it exits, a stop signal comes or ``lifeline`` closes; then end the group.

    Returns the command's exit status; a command killed by signal N ends the keeper by
    signal N too, so that the spawner's ``Popen.returncode`` is -N as if it ran the command.
    """
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)  # each handled signal writes its number there: select() sees it
    for sig in (*_STOP_SIGNALS, signal.SIGCHLD):
        signal.signal(sig, lambda *_: None)
    try:
        command = subprocess.Popen(args)  # same group, same output; handlers reset to default at exec
    except OSError as err:
        print(f"# process group keeper: cannot start {args[0]}: {err}", file=sys.stderr, flush=True)
        return 127
    stop_numbers = {int(sig) for sig in _STOP_SIGNALS}
    while command.poll() is None:
        ready = select.select([lifeline, wake_read], [], [])[0]
        if lifeline in ready:  # the spawner never writes: readable means its end closed
            print("# process group keeper: the spawning process is gone; ending the group", file=sys.stderr,
                  flush=True)
            break
        if wake_read in ready and stop_numbers & set(os.read(wake_read, 512)):
            break
    _end_group(command)
    status = command.wait()
    if status < 0:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # passing on SIGSEGV/SIGABRT must not write a core
        if -status not in (signal.SIGKILL, signal.SIGSTOP):  # those two take no handler
            signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        return 128 - status  # only where that signal did not end us
    return status


def _end_group(command: subprocess.Popen) -> None:
    """TERM to this keeper's whole group, then KILL to whoever is left after the grace period."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the keeper outlives its own TERM to finish the job
    pgid, me = os.getpgid(0), os.getpid()
    os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + _KEEPER_GRACE_S
    while True:
        command.poll()  # reaped: a zombie is not a member
        members = _members(pgid)
        others = [pid for pid in members if pid != me] if members is not None else None
        if others == [] or (others is None and command.returncode is not None):
            return  # not Linux: only the command is known, and what ignored TERM is left running
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if others is None:  # not Linux, command still running: KILL the group, this keeper included
        os.killpg(pgid, signal.SIGKILL)
        return
    for pid in others:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _keeper_main(argv: list[str]) -> int:
    """``python -I process_group.py --keep LIFELINE_FD -- COMMAND...`` (what :func:`spawn` runs)."""
    if len(argv) < 4 or argv[0] != "--keep" or argv[2] != "--":
        print("usage: process_group.py --keep LIFELINE_FD -- COMMAND...", file=sys.stderr)
        return 2
    return _keep(int(argv[1]), argv[3:])


if __name__ == "__main__":
    sys.exit(_keeper_main(sys.argv[1:]))
