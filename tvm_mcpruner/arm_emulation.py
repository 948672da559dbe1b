"""Run aarch64 (HiKey970 CPU class) builds on this x86 machine: qemu-user + a real TVM RPC server.

**Emulated (qemu) — correctness only, not device timing.** This checks that the NEON
code TVM emits for the ``hikey970-cpu`` preset computes the right numbers. A time
measured under qemu says nothing about a Cortex-A73, so nothing here measures time.

The recipe (``/work/shared/TVM_NOTES.md``, "ARM (aarch64 + NEON) correctness under qemu"):
an aarch64 *sysroot* (Debian arm64 ``.deb`` files unpacked: python3.11, glibc, libstdc++
...) and a *site* directory with the aarch64 wheels of apache-tvm, apache-tvm-ffi and
numpy unpacked. ``python3.11 -m tvm.exec.rpc_server`` from the sysroot then runs under
qemu-aarch64 on 127.0.0.1 with ``TVM_USE_RUNTIME_LIB=1``; the host cross-compiles with
the ``hikey970-cpu`` preset's cross compiler (``aarch64-linux-gnu-gcc``), uploads the
library over ``tvm.rpc`` and runs it there.

The emulated Python always runs under an explicit ``qemu-aarch64 -L <sysroot>``, never
through binfmt_misc: registering binfmt needs root once per boot and is refused in
unprivileged containers. TVM's RPC server runs its sessions in a worker that it starts
as ``sys.executable -m tvm.exec.popen_worker``; an aarch64 ``sys.executable`` would die
there with "Exec format error", so the server is started through a bootstrap that points
``sys.executable`` at a host shell wrapper running the same Python under qemu.

Cache: ``<repo>/.cache/arm/`` (gitignored; ``$MCPRUNER_ARM_CACHE`` overrides it) with
``sysroot/``, ``site/``, ``bin/`` (the wrapper), ``logs/`` (server logs) and
``ready.json`` (written once the emulated ``import tvm`` worked). ``bash
.ci/setup_arm.sh`` (root) installs the host packages and builds it; ``python -m
tvm_mcpruner.arm_emulation setup`` builds only the cache. Both only check when it is
already there.

Private module (not exported by ``tvm_mcpruner``); stdlib-only at import time so that
``.ci/setup_arm.sh`` can run it before the project's requirements are installed.
"""

from __future__ import annotations

import argparse
import atexit
import compileall
import gc
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

try:
    from .targets import get_preset
except ImportError:  # run as a file (.ci/setup_arm.sh, before the requirements): its folder is sys.path[0]
    from targets import get_preset  # type: ignore[no-redef]  # stdlib-only, like this module

LABEL = "emulated (qemu) — correctness only, not device timing"
RPC_KEY = "aarch64-qemu"
LOOPBACK = "127.0.0.1"
CACHE_ENV = "MCPRUNER_ARM_CACHE"
CROSS_COMPILER = get_preset("hikey970-cpu").cross_compiler  # the target preset owns the name

# Debian (bookworm) arm64 packages that make a working python3.11 with libstdc++ (~10 MB).
SYSROOT_DEBS = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6",
    "libffi8", "zlib1g", "libssl3", "libexpat1", "libbz2-1.0", "liblzma5", "libgcc-s1",
    "libstdc++6",
)
# aarch64 wheels for the site directory, pinned to requirements.txt (one truth for the
# versions: the host builds with the same TVM, and numpy must load the same .npy data).
# cloudpickle is what tvm.exec.popen_worker speaks; psutil (a C extension) is left out:
# only PopenWorker.kill imports it, and the server is stopped by killing its group.
PINNED_PACKAGES = ("apache-tvm", "apache-tvm-ffi", "numpy", "cloudpickle")
# tvm_ffi imports typing_extensions; requirements.txt leaves it to pip, so pin it here.
EXTRA_PINS = ("typing_extensions==4.15.0",)
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_24_aarch64",
                   "manylinux_2_17_aarch64", "manylinux2014_aarch64")
# Parts of the apache-tvm wheel a runtime-only TVM never loads (the 230 MB compiler, sources).
_NOT_NEEDED_IN_WHEELS = ("tvm/lib/libtvm_compiler.so", "tvm/3rdparty/", "tvm/include/",
                         "tvm/src/", "tvm/web/")
_MARKER = ".mcpruner.json"
_REPO = Path(__file__).resolve().parents[1]
SETUP_HINT = "run `bash .ci/setup_arm.sh` (as root) or `python -m tvm_mcpruner.arm_emulation setup`"


class ArmEmulationError(RuntimeError):
    """The aarch64 emulation is not set up, or the emulated RPC server failed."""


# --------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """``$MCPRUNER_ARM_CACHE`` if set, else ``<repo>/.cache/arm`` (read at every call)."""
    override = os.environ.get(CACHE_ENV)
    return Path(override).expanduser().resolve() if override else _REPO / ".cache" / "arm"


def _sysroot() -> Path:
    return cache_dir() / "sysroot"


def _site() -> Path:
    return cache_dir() / "site"


def _emulated_python() -> Path:
    return _sysroot() / "usr" / "bin" / "python3.11"


def _wrapper() -> Path:
    return cache_dir() / "bin" / "python3.11-aarch64"


def _qemu() -> str | None:
    return shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")


def wheel_pins() -> list[str]:
    """``name==version`` of every aarch64 wheel the site holds (versions from requirements.txt)."""
    requirements = _REPO / "requirements.txt"
    pinned = {}
    for line in requirements.read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep and name.lower() in PINNED_PACKAGES:
            pinned[name.lower()] = version
    missing = [name for name in PINNED_PACKAGES if name not in pinned]
    if missing:
        raise ArmEmulationError(f"{requirements} pins no version of {', '.join(missing)}")
    return [f"{name}=={pinned[name]}" for name in PINNED_PACKAGES] + list(EXTRA_PINS)


def _read_marker(directory: Path) -> Any:
    try:
        return json.loads((directory / _MARKER).read_text())
    except (OSError, ValueError):
        return None


def _write_marker(directory: Path, content: Any) -> None:
    (directory / _MARKER).write_text(json.dumps(content, indent=1))


def _wanted_cache() -> dict[str, Any]:
    """What a complete cache was built from; a change (new pin) makes setup rebuild."""
    return {"sysroot": list(SYSROOT_DEBS), "site": wheel_pins()}


def status() -> str | None:
    """None when the emulation is ready, else what is missing and how to fix it.

    Only looks at ``PATH`` and marker files: cheap enough for test collection.
    """
    wanted = _wanted_cache()
    missing = []
    if _qemu() is None:
        missing.append("qemu-aarch64 is not installed (apt-get install qemu-user)")
    if shutil.which(CROSS_COMPILER) is None:
        missing.append(_cross_compiler_missing())
    if _read_marker(_sysroot()) != wanted["sysroot"]:
        missing.append(f"no aarch64 sysroot in {_sysroot()}")
    if _read_marker(_site()) != wanted["site"]:
        missing.append(f"no aarch64 site-packages ({', '.join(wanted['site'])}) in {_site()}")
    elif _read_marker(cache_dir()) != wanted:
        missing.append(f"the emulated Python in {cache_dir()} was never checked to import tvm")
    if not missing:
        return None
    return f"aarch64 emulation is not set up: {'; '.join(missing)}. To fix it, {SETUP_HINT}."


def describe() -> str:
    """A few lines for humans: where the cache is and whether it is ready."""
    problem = status()
    return "\n".join([
        f"aarch64 emulation ({LABEL})",
        f"  cache: {cache_dir()}",
        f"  qemu: {_qemu() or 'missing'}; cross compiler: {shutil.which(CROSS_COMPILER) or 'missing'}",
        f"  {'NOT READY: ' + problem if problem else 'ready'}",
    ])


# --------------------------------------------------------------------------- setup


def _run(cmd: Sequence[str], *, cwd: Path | None = None, verbose: bool = False) -> str:
    if verbose:
        print("+", " ".join(map(str, cmd)), flush=True)
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ArmEmulationError(f"`{' '.join(map(str, cmd))}` failed with exit code {proc.returncode}:\n"
                                + (proc.stdout + proc.stderr)[-3000:])
    return proc.stdout


def _replace_dir(build: Callable[[Path], None], final: Path) -> None:
    """``build`` into a fresh temporary sibling of ``final``, then swap it in (no half caches)."""
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def _precompile(directory: Path) -> None:
    # The host's Python is also 3.11 (same .pyc format): compiling here spares the
    # emulated Python from compiling the stdlib and TVM at ~50x the cost on first import.
    compileall.compile_dir(str(directory), quiet=2, workers=0)


def _build_sysroot(verbose: bool) -> None:
    if subprocess.run(["apt-cache", "show", "libc6:arm64"], capture_output=True).returncode != 0:
        raise ArmEmulationError("apt knows no arm64 packages: as root, `dpkg --add-architecture arm64 "
                                "&& apt-get update` (`bash .ci/setup_arm.sh` does it)")

    def build(root: Path) -> None:
        with tempfile.TemporaryDirectory(dir=cache_dir()) as debs:
            # The sandbox option lets root download into a directory the _apt user cannot write.
            _run(["apt-get", "-o", "APT::Sandbox::User=root", "download",
                  *(f"{name}:arm64" for name in SYSROOT_DEBS)], cwd=Path(debs), verbose=verbose)
            for deb in sorted(Path(debs).glob("*.deb")):
                _run(["dpkg", "-x", deb, root])
        _precompile(root / "usr" / "lib" / "python3.11")
        _write_marker(root, list(SYSROOT_DEBS))

    _replace_dir(build, _sysroot())


def _build_site(verbose: bool) -> None:
    pins = wheel_pins()
    platforms = [arg for platform in WHEEL_PLATFORMS for arg in ("--platform", platform)]

    def build(site: Path) -> None:
        with tempfile.TemporaryDirectory(dir=cache_dir()) as wheels:
            _run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
                  "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
                  "--abi", "cp311", *platforms, "-d", wheels, *pins], verbose=verbose)
            for wheel in sorted(Path(wheels).glob("*.whl")):
                with zipfile.ZipFile(wheel) as archive:
                    archive.extractall(site, [member for member in archive.namelist()
                                              if not member.startswith(_NOT_NEEDED_IN_WHEELS)])
        _precompile(site)
        _write_marker(site, pins)

    _replace_dir(build, _site())


def _write_wrapper() -> Path:
    """The host script that runs the emulated python3.11 (becomes the server's ``sys.executable``)."""
    qemu = _qemu()
    if qemu is None:
        raise ArmEmulationError(f"qemu-aarch64 is not installed; {SETUP_HINT}")
    text = f'#!/bin/sh\n# {LABEL}\nexec "{qemu}" -L "{_sysroot()}" "{_emulated_python()}" "$@"\n'
    path = _wrapper()
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
    return path


def setup(verbose: bool = True) -> Path:
    """Build what is missing in the cache and check that the emulated Python imports TVM."""
    wanted = _wanted_cache()
    cache_dir().mkdir(parents=True, exist_ok=True)
    if _read_marker(_sysroot()) != wanted["sysroot"]:
        _build_sysroot(verbose)
    if _read_marker(_site()) != wanted["site"]:
        _build_site(verbose)
    _write_wrapper()
    _check_cross_link()
    if _read_marker(cache_dir()) != wanted:
        check = "import tvm, tvm.rpc, numpy, cloudpickle; print(tvm.__version__, numpy.__version__)"
        proc = subprocess.run([_wrapper(), "-c", check], env=_emulator_env(), capture_output=True,
                              text=True, timeout=600)
        if proc.returncode != 0:
            raise ArmEmulationError("the emulated python3.11 cannot import tvm:\n"
                                    + (proc.stdout + proc.stderr)[-3000:])
        _write_marker(cache_dir(), wanted)
    return cache_dir()


def _cross_compiler_missing() -> str:
    return f"{CROSS_COMPILER} is not installed (apt-get install gcc-aarch64-linux-gnu)"


def _check_cross_link() -> None:
    """Link an empty shared library with the cross compiler, as ``export_for_arm`` links.

    The cross gcc installs without the aarch64 C library's development files (a
    Recommends only): then every link fails on ``crti.o``, test after test.
    """
    if shutil.which(CROSS_COMPILER) is None:
        raise ArmEmulationError(_cross_compiler_missing())
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "empty.c"
        source.write_text("int mcpruner_link_check(void) { return 0; }\n")
        proc = subprocess.run([CROSS_COMPILER, "-shared", "-fPIC", "-o", str(Path(tmp) / "empty.so"), str(source)],
                              capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise ArmEmulationError(f"{CROSS_COMPILER} cannot link a shared library (apt-get install "
                                f"libc6-dev-arm64-cross):\n{(proc.stdout + proc.stderr)[-2000:]}")


# --------------------------------------------------------------------------- server


def _emulator_env() -> dict[str, str]:
    # The host's Python settings would point the aarch64 Python at x86 packages.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "LD_LIBRARY_PATH", "LD_PRELOAD")}
    env.update(QEMU_LD_PREFIX=str(_sysroot()), TVM_USE_RUNTIME_LIB="1", PYTHONPATH=str(_site()),
               PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1")
    return env


def parse_tracker(tracker: str | tuple[str, int], *, loopback_only: bool = True) -> tuple[str, int]:
    """``"127.0.0.1:9190"`` or ``(host, port)`` -> ``("127.0.0.1", 9190)``; loopback hosts only.

    ``loopback_only=False`` (``rpc_farm``: a real board farm's tracker may sit on another
    machine) accepts any host name and only maps ``localhost`` to 127.0.0.1.
    """
    if isinstance(tracker, tuple):
        host, port = tracker
    elif isinstance(tracker, str) and ":" in tracker:
        host, _, port = tracker.rpartition(":")
    else:
        raise ValueError(f"tracker must be 'HOST:PORT' (e.g. 127.0.0.1:9190), got {tracker!r}")
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"tracker port must be an integer, got {port!r} in {tracker!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"tracker port must be in 1..65535, got {port}")
    if not loopback_only:
        if not isinstance(host, str) or not host:
            raise ValueError(f"tracker must be 'HOST:PORT' (e.g. 127.0.0.1:9190), got {tracker!r}")
        return (LOOPBACK if host == "localhost" else host), port
    return _loopback(host), port


def _loopback(host: str) -> str:
    """The emulated server is a local stand-in: it must never talk to another machine."""
    if host == "localhost":
        return LOOPBACK
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise ValueError(f"the RPC tracker must be on a loopback address (127.0.0.1), got {host!r}")


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


class EmulatedRPCServer:
    """A ``tvm.exec.rpc_server`` on 127.0.0.1 in the emulated aarch64 Python.

    Emulated (qemu) — correctness only, not device timing. Made by
    :func:`start_rpc_server`; a context manager, or call :meth:`stop`.
    """

    def __init__(self, proc: subprocess.Popen, port: int, tracker: tuple[str, int] | None,
                 key: str, log_path: Path):
        self.proc = proc
        self.port = port
        self.tracker = tracker
        self.key = key
        self.log_path = log_path

    def __repr__(self) -> str:
        via = f" via tracker {self.tracker[0]}:{self.tracker[1]} key {self.key!r}" if self.tracker else ""
        return (f"<EmulatedRPCServer aarch64 {LOOPBACK}:{self.port}{via} "
                f"{'running' if self.alive else 'stopped'}; {LABEL}>")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def session(self, session_timeout: float = 300) -> Any:
        """A new ``tvm.rpc`` session on this server (through its tracker when it has one)."""
        from tvm import rpc

        if self.tracker is not None:
            return rpc.connect_tracker(*self.tracker).request(self.key, session_timeout=session_timeout)
        return rpc.connect(LOOPBACK, self.port, session_timeout=session_timeout)

    def stop(self) -> None:
        """Kill the server with its worker and sessions (its whole process group)."""
        _RUNNING.discard(self)
        for sig in (signal.SIGTERM, signal.SIGKILL):  # KILL too: the worker may outlive its leader
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        # The worker is not our child: wait until it has really gone and freed the port.
        deadline = time.monotonic() + 10
        while _process_group_alive(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def __enter__(self) -> EmulatedRPCServer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def _process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@atexit.register
def _stop_running_servers() -> None:
    for server in list(_RUNNING):
        server.stop()


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
    extra = _site() / "tvm" / "lib" / "libtvm_runtime_extra.so"
    if extra.is_file():
        args += ["--load-library", str(extra)]
    if tracker_address:
        args += ["--tracker", f"{tracker_address[0]}:{tracker_address[1]}", "--key", key]
    env = _emulator_env()
    env["MCPRUNER_ARM_WRAPPER"] = str(_write_wrapper())
    log_path = cache_dir() / "logs" / f"rpc_server-{port}.log"
    log_path.parent.mkdir(exist_ok=True)
    with open(log_path, "w") as log:
        log.write(f"# {LABEL}\n")
        log.flush()
        proc = subprocess.Popen([str(_wrapper()), "-c", _BOOTSTRAP, *args], env=env, cwd=cache_dir(),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group: stop() kills all
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
           func_name: str = "main") -> Any:
    """Run an exported Relax executable's ``func_name`` in a remote ``relax.VirtualMachine``.

    Returns numpy (a tuple of them for a tuple result).
    Emulated (qemu) — correctness only, not device timing.
    """
    import numpy as np
    import tvm
    from tvm import relax

    def to_numpy(value: Any) -> Any:
        return value.numpy() if hasattr(value, "numpy") else tuple(map(to_numpy, value))

    def call(remote: Any) -> Any:
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
    parser = argparse.ArgumentParser(
        prog="python -m tvm_mcpruner.arm_emulation",
        description=f"aarch64 (HiKey970 CPU class) under qemu-user over TVM RPC: {LABEL}.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("setup", help="build the cache (sysroot, aarch64 wheels) and check it")
    commands.add_parser("status", help="say whether the emulation is ready (exit code 1 if not)")
    serve = commands.add_parser("server", help="run an emulated RPC server on 127.0.0.1 until killed")
    serve.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    serve.add_argument("--tracker", default=None, help="loopback tracker HOST:PORT to register with")
    serve.add_argument("--key", default=RPC_KEY, help=f"key at the tracker (default {RPC_KEY})")
    args = parser.parse_args(argv)
    try:
        if args.command == "setup":
            setup()
        if args.command in ("setup", "status"):
            print(describe())
            return 0 if status() is None else 1
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
