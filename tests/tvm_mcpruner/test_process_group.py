"""tvm_mcpruner.process_group: what spawn() starts ends with everything it forked, even when its owner is SIGKILLed.

Real processes on 127.0.0.1: `mcpruner tracker`, `mcpruner server` and a Python process
that calls rpc_farm.start_tracker / start_server are SIGKILLed (no atexit, no handler),
and their trackers and servers, popen_worker children included, must go with them.
Every wait is bounded; every group a test made is killed in ``finally``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tvm_mcpruner import arm_emulation, rpc_farm
from tvm_mcpruner.process_group import group_alive, spawn, stop_group

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="reads /proc (Linux)")

REPO = Path(__file__).resolve().parents[2]
POPEN_WORKER = "tvm.exec.popen_worker"  # TVM's tracker and server each run one (tvm.support.popen_pool)


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after ``pid (comm)``: state, ppid, pgrp, ...; None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _children(pid: int) -> list[int]:
    return [child for child in _pids() if (fields := _stat(child)) and fields[1] == str(pid)]


def _members(pgid: int) -> dict[int, str]:
    """Running (not zombie) members of group ``pgid``: pid -> command line."""
    members = {}
    for pid in _pids():
        fields = _stat(pid)
        if fields and fields[2] == str(pgid) and fields[0] != "Z":
            try:
                members[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                pass
    return members


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"after {timeout:g} s: {what}"
        time.sleep(0.1)


def _start(args: list[str]) -> tuple[subprocess.Popen, list[str]]:
    """A child Python process (its own group, so that killing it touches nothing of ours) and its stdout lines."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO, env=env, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return proc, lines


def _wait_for_line(proc: subprocess.Popen, lines: list[str], text: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while not (found := [line for line in lines if text in line]):
        assert proc.poll() is None, f"exited {proc.returncode}: {''.join(lines)}"
        assert time.monotonic() < deadline, f"no {text!r} in: {''.join(lines)}"
        time.sleep(0.1)
    return found[0]


def _groups_led_by_children(owner: int) -> list[int]:
    """The process groups that ``owner`` started with spawn(): each is led by one of its children."""
    return [pid for pid in _children(owner) if (fields := _stat(pid)) and fields[2] == str(pid)]


def _kill_owner_and_expect_gone(owner: subprocess.Popen, groups: list[int], ports: list[int],
                                timeout: float = 15) -> None:
    os.kill(owner.pid, signal.SIGKILL)  # the owner only: no handler, no atexit
    owner.wait(timeout=10)
    _wait(lambda: not any(arm_emulation._listening(port) for port in ports), timeout,
          f"still listening on {[p for p in ports if arm_emulation._listening(p)]}")
    _wait(lambda: not any(group_alive(pgid) for pgid in groups), timeout,
          f"still running: {[_members(pgid) for pgid in groups]}")


def _cleanup(owner: subprocess.Popen | None, groups: list[int]) -> None:
    if owner is not None and owner.poll() is None:
        os.killpg(owner.pid, signal.SIGKILL)
        owner.wait(timeout=10)
    for pgid in groups:
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)


def _sigkill_cli_and_expect_its_group_gone(args: list[str], ready_line: str, port: int) -> None:
    """Run ``python -m tvm_mcpruner.cli <args>``, wait for ``ready_line``, check that one group
    serves ``port`` with its popen workers, SIGKILL the CLI and expect the group gone."""
    owner, groups = None, []
    try:
        owner, lines = _start(["-m", "tvm_mcpruner.cli", *args])
        _wait_for_line(owner, lines, ready_line)
        groups = _groups_led_by_children(owner.pid)
        assert len(groups) == 1, (groups, _children(owner.pid))
        assert arm_emulation._listening(port)
        assert any(POPEN_WORKER in cmd for cmd in _members(groups[0]).values()), _members(groups[0])
        _kill_owner_and_expect_gone(owner, groups, [port])
    finally:
        _cleanup(owner, groups)


def test_sigkill_of_mcpruner_tracker_ends_the_tracker_and_its_workers():
    port = arm_emulation._free_port()
    _sigkill_cli_and_expect_its_group_gone(["tracker", "--port", str(port)], "Ctrl-C stops it", port)


def test_sigkill_of_mcpruner_server_ends_the_server_and_its_popen_workers():
    port = arm_emulation._free_port()
    with rpc_farm.start_tracker() as tracker:
        _sigkill_cli_and_expect_its_group_gone(
            ["server", "--tracker", tracker.address, "--key", "pg-test", "--port", str(port)], "serving:", port)


def test_sigkill_of_a_python_process_that_started_a_farm_ends_the_farm():
    tracker_port, server_port = arm_emulation._free_port(), arm_emulation._free_port()
    script = textwrap.dedent(f"""
        import time
        from tvm_mcpruner import rpc_farm
        tracker = rpc_farm.start_tracker({tracker_port})
        rpc_farm.start_server(tracker.address, "pg-lib-test", port={server_port})
        print("farm ready", flush=True)
        time.sleep(600)
    """)
    owner, groups = None, []
    try:
        owner, lines = _start(["-c", script])
        _wait_for_line(owner, lines, "farm ready")
        groups = _groups_led_by_children(owner.pid)
        assert len(groups) == 2, (groups, _children(owner.pid))
        assert arm_emulation._listening(tracker_port) and arm_emulation._listening(server_port)
        _kill_owner_and_expect_gone(owner, groups, [tracker_port, server_port])
    finally:
        _cleanup(owner, groups)


# ---------------------------------------------------------------------------------
# spawn() and stop_group() on small commands
# ---------------------------------------------------------------------------------
def test_spawn_logs_the_command_and_passes_its_exit_status_on(tmp_path):
    log = tmp_path / "exit.log"
    proc = spawn([sys.executable, "-c", "print('hello'); raise SystemExit(3)"], log, "a header")
    assert proc.wait(timeout=30) == 3
    lines = log.read_text().splitlines()
    assert lines[0] == "# a header" and lines[1].startswith(f"# $ {sys.executable} -c print('hello')")
    assert "hello" in lines
    killed = spawn([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                   tmp_path / "killed.log", "killed", log_command=False)
    assert killed.wait(timeout=30) == -signal.SIGKILL
    assert not (tmp_path / "killed.log").read_text().startswith("# killed\n# $")


def test_what_a_command_leaves_behind_ends_when_it_exits(tmp_path):
    proc = spawn(["sh", "-c", "sleep 60 & echo started"], tmp_path / "leftover.log", "leftover")
    try:
        assert proc.wait(timeout=30) == 0
        _wait(lambda: not group_alive(proc.pid), 10, f"still running: {_members(proc.pid)}")
    finally:
        stop_group(proc, settle_s=5)


def test_stop_group_ends_children_that_ignore_sigterm(tmp_path):
    code = "import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
           "subprocess.Popen(['sleep', '60']); print('up', flush=True); time.sleep(60)"
    proc = spawn([sys.executable, "-c", code], tmp_path / "stubborn.log", "stubborn")
    try:
        _wait(lambda: "up" in (tmp_path / "stubborn.log").read_text().splitlines(), 30, "the command did not start")
        assert len(_members(proc.pid)) == 3  # keeper, command, sleep
        stop_group(proc)
        assert proc.poll() is not None and not group_alive(proc.pid)
    finally:
        stop_group(proc, settle_s=5)


def test_a_group_outlives_the_thread_that_spawned_it(tmp_path):
    # The owner is the process: a server started from a worker thread keeps running after the thread ends.
    started: list[subprocess.Popen] = []
    thread = threading.Thread(target=lambda: started.append(spawn(["sleep", "60"], tmp_path / "t.log", "thread")))
    thread.start()
    thread.join(timeout=30)
    (proc,) = started
    try:
        time.sleep(1.0)
        assert proc.poll() is None and group_alive(proc.pid)
    finally:
        stop_group(proc, settle_s=5)
    assert not group_alive(proc.pid)
