"""The aarch64 emulation's cache: an aarch64 sysroot and site directory, built, checked and described.

**Emulated (qemu) — correctness only, not device timing.** The recipe: an aarch64
*sysroot* (Debian arm64 ``.deb`` files unpacked: python3.11, glibc, libstdc++
...) and a *site* directory with the aarch64 wheels of apache-tvm, apache-tvm-ffi and
numpy unpacked. :mod:`tvm_mcpruner.arm_emulation` runs TVM's RPC server from them under
``qemu-aarch64 -L <sysroot>``.

Cache: ``<repo>/.cache/arm/`` (gitignored; ``$MCPRUNER_ARM_CACHE`` overrides it) with
``sysroot/``, ``site/``, ``bin/`` (the host wrapper that runs the emulated Python),
``logs/`` (server logs) and ``ready.json`` (written once the emulated ``import tvm``
worked). ``bash .ci/setup_arm.sh`` (root) installs the host packages and builds it;
``python tvm_mcpruner/arm_sysroot.py setup`` (or ``python -m tvm_mcpruner.arm_emulation
setup``) builds only the cache. Both only check when it is already there.

Private module (not exported by ``tvm_mcpruner``). Stdlib only, and runnable as a file
(``python tvm_mcpruner/arm_sysroot.py setup|status``): ``.ci/setup_arm.sh`` runs it
before the project's requirements are installed, when the package's ``__init__`` (which
imports numpy) cannot load yet.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

try:
    from .targets import get_preset
except ImportError:  # run as a file (.ci/setup_arm.sh, before the requirements): its folder is sys.path[0]
    from targets import get_preset  # type: ignore[no-redef]  # stdlib-only, like this module

LABEL = "emulated (qemu) — correctness only, not device timing"
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


def site_dir() -> Path:
    """The aarch64 site directory (TVM, numpy ...) in the cache."""
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
    if _read_marker(site_dir()) != wanted["site"]:
        missing.append(f"no aarch64 site-packages ({', '.join(wanted['site'])}) in {site_dir()}")
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

    _replace_dir(build, site_dir())


def write_wrapper() -> Path:
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


def emulator_env() -> dict[str, str]:
    """The environment the emulated python3.11 runs in: the cache's sysroot and site, runtime-only TVM."""
    # The host's Python settings would point the aarch64 Python at x86 packages.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "LD_LIBRARY_PATH", "LD_PRELOAD")}
    env.update(QEMU_LD_PREFIX=str(_sysroot()), TVM_USE_RUNTIME_LIB="1", PYTHONPATH=str(site_dir()),
               PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1")
    return env


def setup(verbose: bool = True) -> Path:
    """Build what is missing in the cache and check that the emulated Python imports TVM."""
    wanted = _wanted_cache()
    cache_dir().mkdir(parents=True, exist_ok=True)
    if _read_marker(_sysroot()) != wanted["sysroot"]:
        _build_sysroot(verbose)
    if _read_marker(site_dir()) != wanted["site"]:
        _build_site(verbose)
    write_wrapper()
    _check_cross_link()
    if _read_marker(cache_dir()) != wanted:
        check = "import tvm, tvm.rpc, numpy, cloudpickle; print(tvm.__version__, numpy.__version__)"
        proc = subprocess.run([_wrapper(), "-c", check], env=emulator_env(), capture_output=True,
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


# --------------------------------------------------------------------------- CLI


def add_cache_commands(commands: Any) -> None:
    """The ``setup`` and ``status`` subcommands, for this module's CLI and ``arm_emulation``'s."""
    commands.add_parser("setup", help="build the cache (sysroot, aarch64 wheels) and check it")
    commands.add_parser("status", help="say whether the emulation is ready (exit code 1 if not)")


def main(argv: Sequence[str] | None = None) -> int:
    """``setup`` (build the cache, then describe it) or ``status``; exit code 0 when ready."""
    parser = argparse.ArgumentParser(
        prog="python tvm_mcpruner/arm_sysroot.py",
        description=f"The aarch64 emulation's cache (sysroot, aarch64 wheels): {LABEL}.")
    add_cache_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        if args.command == "setup":
            setup()
        print(describe())
        return 0 if status() is None else 1
    except ArmEmulationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
