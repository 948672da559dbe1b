"""A device farm for MetaSchedule's ``RPCRunner``: a TVM RPC tracker and the servers behind it.

Tuning measures candidates wherever the tracker finds a free server registered under a
key; the tracker *is* the distributed engine (no scheduler of ours). This module starts
TVM's own processes, so a farm of stand-ins on this machine and a farm of real boards
are the same thing to the tuner:

* :func:`start_tracker` runs ``python -m tvm.exec.rpc_tracker --host 127.0.0.1 --port P``;
* :func:`start_server` runs ``python -m tvm.exec.rpc_server --tracker HOST:P --key KEY
  --host 127.0.0.1`` (a host-CPU server), or with ``emulate_aarch64=True`` an aarch64
  server under qemu (:mod:`tvm_mcpruner.arm_emulation`; emulated timings are not
  device timings and are labelled so);
* a real HiKey970 joins the same tracker with one line, run on the board::

      python -m tvm.exec.rpc_server --tracker HOST:9190 --key hikey970

  (``HOST`` is this machine's address on the board's network: start the tracker with
  ``host="0.0.0.0"`` / ``mcpruner tracker --host 0.0.0.0`` so that the board can reach it,
  on a trusted network only: a TVM RPC server runs whatever code it is sent.)

Each process runs in its own process group with its output in a log file
(:mod:`tvm_mcpruner.process_group`): TVM forks workers, and killing the group is the
only way to stop them all. Everything still running is stopped at interpreter exit. The
tracker is asked with :mod:`tvm_mcpruner.rpc_tracker` (stdlib, no 60 s retry loop); its
public names are re-exported here.

What TVM does that shapes this module (TVM 0.27):

* An RPC server whose tracker does not answer within 60 s (at start, or after the
  tracker went away) ends its listening thread but keeps running, registered nowhere;
  :func:`start_server` therefore checks the tracker before it starts anything.
* Without ``--port-end`` TVM searches ports ``[port, 9199)``, which is empty above 9199:
  both processes get ``--port P --port-end P+1``.
* The server's ``RPCServer`` logger writes ``connected from ('127.0.0.1', N)`` to stderr
  for every session (INFO with its own handler, unless ``--silent``): that line is what
  :meth:`ServerProcess.sessions_served` counts.

Private module (not exported by ``tvm_mcpruner``); stdlib at import time, TVM only in
the functions that build.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import arm_emulation
from .arm_sysroot import LABEL
from .process_group import GroupProcess, spawn, stop_at_exit
from .rpc_tracker import (
    BOARD_KEY,
    DEFAULT_TRACKER_PORT,
    LOOPBACK,
    RPCFarmError,
    TrackerUnreachableError,
    board_join_command,
    free_under,
    parse_tracker,
    servers_under,
    tracker_summary,
    wait_for_servers,
)

__all__ = [
    "BOARD_KEY",
    "DEFAULT_TRACKER_PORT",
    "RPCFarmError",
    "ServerProcess",
    "TrackerProcess",
    "TrackerUnreachableError",
    "EMULATED_KEY_MARKERS",
    "board_join_command",
    "build_without_tensor_intrinsics",
    "emulated_server_running",
    "export_aarch64_shared_library",
    "key_names_emulator",
    "start_server",
    "start_tracker",
    "tracker_summary",
    "wait_for_servers",
]

# A key naming one of these is an emulated server by convention (arm_emulation.RPC_KEY is
# "aarch64-qemu"); mcp.tune records its measurements as emulated.
EMULATED_KEY_MARKERS = ("qemu", "emul")
LOGS_ENV = "MCPRUNER_RPC_LOGS"
# One line per session in TVM's rpc/server.py: logger.info(f"connected from {addr}").
_SESSION_LINE = re.compile(r"\bconnected from \(")


def key_names_emulator(key: str | None) -> bool:
    """Whether an RPC key says its servers are emulated (contains "qemu" or "emul")."""
    return bool(key) and any(marker in key.lower() for marker in EMULATED_KEY_MARKERS)


def emulated_server_running(tracker: str | tuple[str, int], key: str) -> bool:
    """Whether this process started an emulated server (not stopped yet) under ``key`` at ``tracker``."""
    try:
        address = parse_tracker(tracker, loopback_only=False)
    except ValueError:
        return False
    return any(isinstance(p, ServerProcess) and p.emulated is not None and p.key == key
               and parse_tracker(p.tracker, loopback_only=False) == address for p in list(_RUNNING))


# --------------------------------------------------------------------------- processes


def _log_dir() -> Path:
    """``$MCPRUNER_RPC_LOGS``, else ``<tmp>/mcpruner-rpc`` (logs outlive the processes, for post-mortems)."""
    directory = Path(os.environ.get(LOGS_ENV) or Path(tempfile.gettempdir()) / "mcpruner-rpc")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


_RUNNING: set[_FarmProcess] = set()
stop_at_exit(_RUNNING)


class _FarmProcess(GroupProcess):
    """A TVM process started by this module, leader of its own process group, serving on ``port``."""

    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path):
        super().__init__(proc, log_path)
        self.port = port

    def bound(self) -> bool:
        """Whether TVM logged that *this* process bound its port (``bind to HOST:PORT``).

        Checked before believing an answer on the port: with an explicit port already in
        use, the answer would come from someone else while ours fails to bind and exits.
        """
        return re.search(rf"\bbind to \S+:{self.port}\b", self.log_text()) is not None

    def stop(self) -> None:
        """Kill the process with everything it forked (its process group); harmless twice."""
        _RUNNING.discard(self)
        super().stop()

    def _failed(self, what: str) -> RPCFarmError:
        state = f"exited with code {self.proc.returncode}" if not self.alive else "is still starting"
        return RPCFarmError(f"{what} ({state}); log {self.log_path}:\n{self.log_tail()}")


def _answers(tracker: TrackerProcess) -> bool:
    if not tracker.bound():
        return False
    try:
        tracker_summary(tracker.address, timeout=2.0)
    except TrackerUnreachableError:
        return False
    return True


def _refuse_taken(address: str) -> None:
    """An explicit port where a tracker already answers is refused (ours could not bind it)."""
    try:
        tracker_summary(address, timeout=2.0)
    except TrackerUnreachableError:
        return
    raise RPCFarmError(f"a TVM RPC tracker already answers at {address}: use it, or pick another port")


class TrackerProcess(_FarmProcess):
    """``python -m tvm.exec.rpc_tracker`` running in the background; made by :func:`start_tracker`."""

    def __init__(self, proc: subprocess.Popen, host: str, port: int, log_path: Path):
        super().__init__(proc, port, log_path)
        self.host = host

    @property
    def address(self) -> str:
        """``"127.0.0.1:P"``: where clients and servers on this machine reach it."""
        host = LOOPBACK if self.host in ("0.0.0.0", "") else self.host
        return f"{host}:{self.port}"

    def summary(self) -> dict[str, Any]:
        """:func:`tracker_summary` of this tracker."""
        return tracker_summary(self.address)

    def __repr__(self) -> str:
        return (f"<TrackerProcess {self.host}:{self.port} {'running' if self.alive else 'stopped'}; "
                f"log {self.log_path}>")


def start_tracker(port: int | None = None, *, host: str = LOOPBACK, timeout: float = 60.0) -> TrackerProcess:
    """Start a TVM RPC tracker and wait until it answers (the protocol ``tvm.rpc.connect_tracker`` speaks).

    ``port`` None picks a free one; a port where a tracker already answers is refused. ``host`` is the address it listens on: 127.0.0.1 keeps
    the farm on this machine (the default: anyone who reaches a tracker can hand work to
    its servers); ``"0.0.0.0"`` lets boards on a trusted network join. Raises
    :class:`RPCFarmError` with the tracker's log when it exits or does not answer in time.
    """
    if port is None:
        port = arm_emulation._free_port()
    else:
        port = int(port)
        _refuse_taken(f"{LOOPBACK if host in ('0.0.0.0', '') else host}:{port}")
    log_path = _log_dir() / f"tracker-{port}.log"
    args = [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", host, "--port", str(port),
            "--port-end", str(port + 1)]
    tracker = TrackerProcess(spawn(args, log_path, "TVM RPC tracker"), host, port, log_path)
    _RUNNING.add(tracker)
    try:
        deadline = time.monotonic() + timeout
        while not _answers(tracker):
            if not tracker.alive:
                raise tracker._failed(f"the TVM RPC tracker on {host}:{port} did not start")
            if time.monotonic() > deadline:
                raise tracker._failed(f"the TVM RPC tracker on {host}:{port} did not answer within {timeout:g} s")
            time.sleep(0.2)
    except BaseException:
        tracker.stop()
        raise
    return tracker


class ServerProcess(_FarmProcess):
    """A TVM RPC server registered with a tracker under a key; made by :func:`start_server`.

    ``emulated`` servers are aarch64 under qemu: their timings are not device timings.
    """

    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path, tracker: str, key: str,
                 emulated: Any = None):
        super().__init__(proc, port, log_path)
        self.tracker = tracker
        self.key = key
        self.emulated = emulated  # the arm_emulation.EmulatedRPCServer behind it, if any
        self._sessions_before = 0

    def sessions_served(self) -> int:
        """Sessions this server accepted since :func:`start_server` returned.

        Counted from its log: TVM's server logs ``connected from (host, port)`` once per
        session, before the session runs. The emulated server's own readiness check (one
        session) is not counted.
        """
        return len(_SESSION_LINE.findall(self.log_text())) - self._sessions_before

    def registered(self) -> bool:
        """Whether the tracker lists this server under its key (busy or free)."""
        return self.port in (port for _, port in servers_under(tracker_summary(self.tracker), self.key))

    def wait_until_registered(self, timeout: float = 60.0) -> None:
        """Wait until the tracker lists this server free under its key."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                raise self._failed(f"the RPC server on {LOOPBACK}:{self.port} exited before it registered")
            summary = tracker_summary(self.tracker)
            listed = self.port in (port for _, port in servers_under(summary, self.key))
            if listed and free_under(summary, self.key) > 0 and self.bound():
                return
            if time.monotonic() > deadline:
                raise self._failed(f"the RPC server on {LOOPBACK}:{self.port} is not registered under key "
                                   f"{self.key!r} at the tracker {self.tracker} after {timeout:g} s")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.emulated is not None:
            _RUNNING.discard(self)
            self.emulated.stop()
        else:
            super().stop()

    def __repr__(self) -> str:
        kind = f"aarch64 (qemu) {LOOPBACK}:{self.port}" if self.emulated is not None else f"host {LOOPBACK}:{self.port}"
        label = f"; {LABEL}" if self.emulated is not None else ""
        return (f"<ServerProcess {kind} key {self.key!r} tracker {self.tracker} "
                f"{'running' if self.alive else 'stopped'}{label}; log {self.log_path}>")


def _check_key(key: str) -> str:
    # The tracker stores "server:KEY" and splits on ":"; the server sends "client:KEY opts" split on spaces.
    if not isinstance(key, str) or not key or any(c.isspace() or c == ":" for c in key):
        raise ValueError(f"an RPC key is a non-empty word without ':' or spaces (e.g. {BOARD_KEY}), got {key!r}")
    return key


def start_server(tracker: str, key: str, *, port: int | None = None, emulate_aarch64: bool = False,
                 wait: bool = True, timeout: float | None = None) -> ServerProcess:
    """Start a TVM RPC server on 127.0.0.1 that registers with ``tracker`` under ``key``.

    A host-CPU server runs ``python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY
    --host 127.0.0.1`` (a local stand-in; a real board runs the same command on the board,
    see the module docstring). ``emulate_aarch64`` starts the qemu aarch64 server of
    :func:`tvm_mcpruner.arm_emulation.start_rpc_server` instead (emulated (qemu) — not
    device timing; needs the emulation cache and always waits, ~10-20 s).

    The tracker is asked first: :class:`TrackerUnreachableError` before anything starts
    when it does not answer. With ``wait`` (default) this returns once the tracker lists
    the server free under ``key``; ``wait=False`` returns at once, to start several
    servers side by side and then :func:`wait_for_servers`. ``timeout`` defaults to 60 s
    (180 s emulated).
    """
    _check_key(key)
    host, tracker_port = parse_tracker(tracker)  # a stand-in on 127.0.0.1 joins a local tracker only
    address = f"{host}:{tracker_port}"
    tracker_summary(address)
    if emulate_aarch64:
        emulated = arm_emulation.start_rpc_server(port, tracker=address, key=key,
                                                  timeout=180.0 if timeout is None else timeout)
        server = ServerProcess(emulated.proc, emulated.port, emulated.log_path, address, key, emulated)
        server._sessions_before = server.sessions_served()  # its readiness check
        _RUNNING.add(server)
        return server
    port = arm_emulation._free_port() if port is None else int(port)
    log_path = _log_dir() / f"server-{key}-{port}.log"
    args = [sys.executable, "-m", "tvm.exec.rpc_server", "--tracker", address, "--key", key,
            "--host", LOOPBACK, "--port", str(port), "--port-end", str(port + 1)]
    server = ServerProcess(spawn(args, log_path, f"TVM RPC server (host CPU), key {key}"), port, log_path,
                           address, key)
    _RUNNING.add(server)
    if wait:
        try:
            server.wait_until_registered(60.0 if timeout is None else timeout)
        except BaseException:
            server.stop()
            raise
    return server


def run_in_foreground(process: _FarmProcess) -> int:
    """Block until Ctrl-C, SIGTERM or SIGHUP (then stop ``process``: 0) or until it dies by itself (1).

    The process runs in its own process group, so a signal to ours does not reach it:
    each of these signals becomes a KeyboardInterrupt here (also SIGINT, which a shell
    leaves ignored for background jobs), and the handler stops the whole group.
    """
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in signals}
    try:
        process.proc.wait()
    except KeyboardInterrupt:
        process.stop()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    process.stop()
    print(f"error: {process!r} exited by itself; log {process.log_path}:\n{process.log_tail()}",
          file=sys.stderr)
    return 1


# --------------------------------------------------------------------------- building for the farm


def export_aarch64_shared_library(mod: Any) -> str:
    """``ms.builder.LocalBuilder(f_export=...)`` for aarch64 servers: a cross-linked ``.so`` path.

    MetaSchedule's default export is a ``.tar`` that the server links with its own
    compiler, which an emulated (or bare) board lacks. Module-level so that MetaSchedule's
    popen workers unpickle it by reference (a lambda or closure would not survive).
    """
    path = Path(tempfile.mkdtemp(prefix="mcpruner-aarch64-")) / "tvm_tmp_mod.so"
    return str(arm_emulation.export_for_arm(mod, path))


def build_without_tensor_intrinsics(mod: Any, target: Any, params: Any = None) -> Any:
    """``ms.builder.LocalBuilder(f_build=...)``: MetaSchedule's default build minus one import.

    ``default_build`` imports ``tvm.s_tir.tensor_intrin`` first, which parses every
    registered tensor intrinsic in TVMScript, ~30 s of CPU on this machine (the CUDA ones
    alone ~29 s), and ``LocalBuilder`` starts fresh workers for every ``build()`` call, so
    every batch pays it again. A schedule's tensorize steps are applied before the build
    (the module handed here already holds the intrinsic's body), so fp32 CPU kernels
    build the same without it. Module-level so that it pickles by reference.
    """
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    if params:
        raise ValueError("build_without_tensor_intrinsics takes no params (nor does MetaSchedule's default build)")
    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)
