"""Run aarch64 (HiKey970 CPU class) builds on this x86 machine: qemu-user + a real TVM RPC server.

**Emulated (qemu) — correctness only, not device timing.** This checks that the NEON
code TVM emits for the ``hikey970-cpu`` preset computes the right numbers. A time
measured under qemu says nothing about a Cortex-A73, so nothing here measures time.

``python3.11 -m tvm.exec.rpc_server`` from the aarch64 sysroot (built and checked by
:mod:`tvm_mcpruner.arm_sysroot`) runs under qemu-aarch64 on 127.0.0.1 with
``TVM_USE_RUNTIME_LIB=1``; the host cross-compiles with the ``hikey970-cpu`` preset's
cross compiler (``aarch64-linux-gnu-gcc``), uploads the library over ``tvm.rpc`` and
runs it there (:func:`export_for_arm`, :func:`run_primfunc`, :func:`run_vm`).

The emulated Python always runs under an explicit ``qemu-aarch64 -L <sysroot>``, never
through binfmt_misc: registering binfmt needs root once per boot and is refused in
unprivileged containers. TVM's RPC server runs its sessions in a worker that it starts
as ``sys.executable -m tvm.exec.popen_worker``; an aarch64 ``sys.executable`` would die
there with "Exec format error", so the server is started through a bootstrap that points
``sys.executable`` at a host shell wrapper running the same Python under qemu.

``python -m tvm_mcpruner.arm_emulation server`` runs a server until killed; ``setup``
and ``status`` are :mod:`tvm_mcpruner.arm_sysroot`'s, whose public names (``status``,
``setup``, ``cache_dir``, ``ArmEmulationError`` ...) are re-exported here.

Private module (not exported by ``tvm_mcpruner``); stdlib only at import time, TVM only
in the functions that talk to the server.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from . import arm_sysroot
from .arm_sysroot import (  # noqa: F401 - re-exported: the emulation's public names live here too
    CACHE_ENV,
    CROSS_COMPILER,
    LABEL,
    SETUP_HINT,
    ArmEmulationError,
    cache_dir,
    describe,
    emulator_env,
    setup,
    site_dir,
    status,
    wheel_pins,
    write_wrapper,
)
from .process_group import GroupProcess, spawn, stop_at_exit
from .rpc_tracker import LOOPBACK, parse_tracker
from .thread_pool import configure_for_preset

RPC_KEY = "aarch64-qemu"


# --------------------------------------------------------------------------- server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    """Whether a socket listens on 127.0.0.1:``port``, read from /proc/net/tcp.

    Never probes by connecting: TVM's server loop dies on a connection that closes
    before the RPC handshake.
    """
    local = f"0100007F:{port:04X}"
    with open("/proc/net/tcp", encoding="ascii") as table:
        return any(fields[1] == local and fields[3] == "0A"  # 0A: LISTEN
                   for fields in (line.split() for line in list(table)[1:]))


# Started as `python3.11 -c`: the worker TVM spawns must run under qemu too (module doc).
_BOOTSTRAP = (
    "import os, runpy, sys\n"
    "sys.executable = os.environ['MCPRUNER_ARM_WRAPPER']\n"
    "runpy.run_module('tvm.exec.rpc_server', run_name='__main__', alter_sys=True)\n"
)
_RUNNING: set[EmulatedRPCServer] = set()
stop_at_exit(_RUNNING)


class EmulatedRPCServer(GroupProcess):
    """A ``tvm.exec.rpc_server`` on 127.0.0.1 in the emulated aarch64 Python.

    Emulated (qemu) — correctness only, not device timing. Made by
    :func:`start_rpc_server`; a context manager, or call :meth:`stop`.
    """

    def __init__(self, proc: subprocess.Popen, port: int, tracker: tuple[str, int] | None,
                 key: str, log_path: Path):
        super().__init__(proc, log_path)
        self.port = port
        self.tracker = tracker
        self.key = key

    def __repr__(self) -> str:
        via = f" via tracker {self.tracker[0]}:{self.tracker[1]} key {self.key!r}" if self.tracker else ""
        return (f"<EmulatedRPCServer aarch64 {LOOPBACK}:{self.port}{via} "
                f"{'running' if self.alive else 'stopped'}; {LABEL}>")

    def session(self, session_timeout: float = 300) -> Any:
        """A new ``tvm.rpc`` session on this server (through its tracker when it has one)."""
        from tvm import rpc

        if self.tracker is not None:
            return rpc.connect_tracker(*self.tracker).request(self.key, session_timeout=session_timeout)
        return rpc.connect(LOOPBACK, self.port, session_timeout=session_timeout)

    def stop(self) -> None:
        """Kill the server with its worker and sessions (its whole process group); harmless twice."""
        _RUNNING.discard(self)
        super().stop()


def start_rpc_server(
    port: int | None = None,
    tracker: str | tuple[str, int] | None = None,
    key: str = RPC_KEY,
    timeout: float = 180,
) -> EmulatedRPCServer:
    """Start an emulated aarch64 TVM RPC server on 127.0.0.1 and wait until it serves a session.

    ``port`` None picks a free one. With ``tracker`` (a loopback "HOST:PORT") it also
    registers there under ``key``. Importing TVM under qemu takes ~5 s, and a tracker
    sees the server ~10 s after start; ``timeout`` bounds the wait. Raises
    :class:`ArmEmulationError` (with the server's log) when it is not set up, dies or
    does not serve in time.
    """
    tracker_address = parse_tracker(tracker) if tracker is not None else None
    problem = status()
    if problem:
        raise ArmEmulationError(problem)
    port = _free_port() if port is None else port
    args = ["--host", LOOPBACK, "--port", str(port), "--port-end", str(port + 1)]
    # TVM_USE_RUNTIME_LIB=1 skips libtvm_runtime_extra, which a board's full `import tvm`
    # loads and MetaSchedule's RPCRunner calls into (tvm.contrib.random.random_fill_for_measure):
    # TVM's --load-library loads it into every session.
    extra = site_dir() / "tvm" / "lib" / "libtvm_runtime_extra.so"
    if extra.is_file():
        args += ["--load-library", str(extra)]
    if tracker_address:
        args += ["--tracker", f"{tracker_address[0]}:{tracker_address[1]}", "--key", key]
    wrapper = write_wrapper()
    env = emulator_env()
    env["MCPRUNER_ARM_WRAPPER"] = str(wrapper)
    log_path = cache_dir() / "logs" / f"rpc_server-{port}.log"
    log_path.parent.mkdir(exist_ok=True)
    # The command line stays out of the log: the bootstrap is Python source over several lines.
    proc = spawn([wrapper, "-c", _BOOTSTRAP, *args], log_path, LABEL, env=env, cwd=cache_dir(),
                 log_command=False)
    server = EmulatedRPCServer(proc, port, tracker_address, key, log_path)
    _RUNNING.add(server)
    try:
        _wait_until_serving(server, time.monotonic() + timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_serving(server: EmulatedRPCServer, deadline: float) -> None:
    """Until one real session answers: that proves the worker TVM spawned runs too."""
    last_error: Exception | None = None
    while server.alive and time.monotonic() < deadline:
        if _listening(server.port) and (server.tracker is None or _tracker_has_free_server(server)):
            try:
                _in_session(server, lambda remote: remote.cpu(0).exist)
                return
            except Exception as exc:  # noqa: BLE001 - reported below when it never works
                last_error = exc
        time.sleep(0.5)
    state = f"exited with code {server.proc.returncode}" if not server.alive else "timed out"
    raise ArmEmulationError(f"emulated RPC server on {LOOPBACK}:{server.port} {state} before serving "
                            f"a session (last error: {last_error}); log {server.log_path}:\n"
                            f"{server.log_tail()}")


def _tracker_has_free_server(server: EmulatedRPCServer) -> bool:
    # Checked first because request() would block while the server is not registered.
    from tvm import rpc

    queue = rpc.connect_tracker(*server.tracker).summary().get("queue_info", {})
    return queue.get(server.key, {}).get("free", 0) > 0


# --------------------------------------------------------------------------- running


def export_for_arm(executable: Any, path: str | os.PathLike) -> Path:
    """``executable.export_library(path)``, linked by the aarch64 cross compiler."""
    from tvm.support import cc

    executable.export_library(str(path), fcompile=cc.cross_compiler(CROSS_COMPILER))
    return Path(path)


def run_primfunc(
    server: EmulatedRPCServer,
    lib_path: str | os.PathLike,
    inputs: Iterable[Any],
    outputs: Iterable[tuple[tuple[int, ...], str]],
    func_name: str = "main",
) -> list:
    """Upload an aarch64 PrimFunc library and call ``func_name(*inputs, *outputs)`` remotely.

    ``outputs`` are the ``(shape, dtype)`` of the buffers the function writes (TIR's
    destination-passing style); returns their contents as numpy arrays.
    Emulated (qemu) — correctness only, not device timing.
    """
    import numpy as np
    import tvm

    def call(remote: Any) -> list:
        function = _upload(remote, lib_path)[func_name]
        device = remote.cpu(0)
        args = [tvm.runtime.tensor(np.ascontiguousarray(a), device) for a in inputs]
        results = [tvm.runtime.tensor(np.zeros(shape, dtype), device) for shape, dtype in outputs]
        function(*args, *results)
        return [r.numpy() for r in results]

    return _in_session(server, call)


def run_vm(server: EmulatedRPCServer, lib_path: str | os.PathLike, inputs: Iterable[Any],
           func_name: str = "main", preset: Any = None) -> Any:
    """Run an exported Relax executable's ``func_name`` in a remote ``relax.VirtualMachine``.

    ``preset``: configure the remote thread pool for it first (its cluster and threads,
    :func:`tvm_mcpruner.thread_pool.configure_for_preset`), as on the board.
    Returns numpy (a tuple of them for a tuple result).
    Emulated (qemu) — correctness only, not device timing.
    """
    import numpy as np
    import tvm
    from tvm import relax

    def to_numpy(value: Any) -> Any:
        return value.numpy() if hasattr(value, "numpy") else tuple(map(to_numpy, value))

    def call(remote: Any) -> Any:
        if preset is not None:
            configure_for_preset(preset, session=remote)
        device = remote.cpu(0)
        vm = relax.VirtualMachine(_upload(remote, lib_path), device)
        return to_numpy(vm[func_name](*[tvm.runtime.tensor(np.ascontiguousarray(a), device)
                                        for a in inputs]))

    return _in_session(server, call)


def _upload(remote: Any, lib_path: str | os.PathLike) -> Any:
    # A unique remote name: the server process dlopen()s every upload, and dlopen of a
    # path it already loaded returns the old library, not the new file.
    name = f"{Path(lib_path).stem}-{uuid.uuid4().hex}.so"
    remote.upload(str(lib_path), target=name)
    return remote.load_module(name)


def _in_session(server: EmulatedRPCServer, work: Callable[[Any], Any]) -> Any:
    """``work(remote)`` in a fresh session, closed afterwards even when ``work`` raises.

    The server serves one session at a time, and a session lives as long as any of its
    remote objects. A traceback would keep ``work``'s remote tensors (and so the session)
    alive and block the next caller, hence its frames are cleared.
    """
    remote = server.session()
    try:
        return work(remote)
    except BaseException as exc:
        traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        del remote
        gc.collect()


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``setup`` / ``status`` (the cache, :func:`tvm_mcpruner.arm_sysroot.main`) or ``server``."""
    parser = argparse.ArgumentParser(
        prog="python -m tvm_mcpruner.arm_emulation",
        description=f"aarch64 (HiKey970 CPU class) under qemu-user over TVM RPC: {LABEL}.")
    commands = parser.add_subparsers(dest="command", required=True)
    arm_sysroot.add_cache_commands(commands)
    serve = commands.add_parser("server", help="run an emulated RPC server on 127.0.0.1 until killed")
    serve.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    serve.add_argument("--tracker", default=None, help="loopback tracker HOST:PORT to register with")
    serve.add_argument("--key", default=RPC_KEY, help=f"key at the tracker (default {RPC_KEY})")
    args = parser.parse_args(argv)
    if args.command in ("setup", "status"):
        return arm_sysroot.main([args.command])
    try:
        server = start_rpc_server(args.port, tracker=args.tracker, key=args.key)
    except (ArmEmulationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"serving: {server!r}; log {server.log_path}", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops it like Ctrl-C
    try:
        server.proc.wait()
    except KeyboardInterrupt:
        server.stop()
    if server in _RUNNING:  # it was not stopped by us: it died
        server.stop()
        print(f"error: the server exited by itself; log {server.log_path}:\n{server.log_tail()}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
