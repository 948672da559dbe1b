"""tvm_mcpruner.arm_emulation and arm_sysroot: tracker parsing, cache checks, the emulated RPC server's life.

Tests that start a server need the emulation (``bash .ci/setup_arm.sh``): they skip
without it, or fail with ``CI=true``. The rest run anywhere.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from importlib.metadata import version

import pytest

from tests._resources import require_arm_emulation
from tvm_mcpruner import arm_emulation, arm_sysroot
from tvm_mcpruner.arm_emulation import ArmEmulationError, parse_tracker
from tvm_mcpruner.process_group import group_alive


# ---------------------------------------------------------------------------------
# tracker addresses
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "tracker, expected",
    [
        ("127.0.0.1:9190", ("127.0.0.1", 9190)),
        ("localhost:9191", ("127.0.0.1", 9191)),
        ("127.0.0.2:65535", ("127.0.0.2", 65535)),
        ("::1:9190", ("::1", 9190)),
        (("127.0.0.1", "9192"), ("127.0.0.1", 9192)),
    ],
)
def test_parse_tracker_accepts_loopback(tracker, expected):
    assert parse_tracker(tracker) == expected


@pytest.mark.parametrize(
    "tracker, message",
    [
        ("127.0.0.1", "HOST:PORT"),
        (9190, "HOST:PORT"),
        (None, "HOST:PORT"),
        ("127.0.0.1:rpc", "integer"),
        ("127.0.0.1:", "integer"),
        ("127.0.0.1:0", "1..65535"),
        ("127.0.0.1:70000", "1..65535"),
        ("10.0.0.5:9190", "loopback"),
        ("hikey970.lan:9190", "loopback"),
        ("0.0.0.0:9190", "loopback"),
    ],
)
def test_parse_tracker_rejects_bad_or_remote_addresses(tracker, message):
    with pytest.raises(ValueError, match=message):
        parse_tracker(tracker)


def test_server_refuses_a_remote_tracker_before_starting_anything():
    with pytest.raises(ValueError, match="loopback"):
        arm_emulation.start_rpc_server(tracker="192.168.1.20:9190")


# ---------------------------------------------------------------------------------
# the cache
# ---------------------------------------------------------------------------------
def test_aarch64_wheels_pin_the_host_versions():
    # The host compiles with one TVM; the emulated runtime must be the same release.
    pins = dict(pin.split("==") for pin in arm_emulation.wheel_pins())
    for package in ("apache-tvm", "apache-tvm-ffi", "numpy"):
        assert pins[package] == version(package), package


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "no-arm-cache"
    monkeypatch.setenv(arm_emulation.CACHE_ENV, str(cache))
    return cache


def test_missing_cache_is_reported_with_the_fix(empty_cache):
    assert arm_emulation.cache_dir() == empty_cache
    problem = arm_emulation.status()
    assert problem is not None
    assert f"no aarch64 sysroot in {empty_cache}" in problem
    assert "no aarch64 site-packages" in problem
    assert "bash .ci/setup_arm.sh" in problem


def test_starting_a_server_without_cache_raises_clear_error(empty_cache):
    with pytest.raises(ArmEmulationError, match=r"not set up: .*setup_arm\.sh"):
        arm_emulation.start_rpc_server()
    assert not empty_cache.exists()  # a failed start leaves nothing behind


def test_cli_status_says_not_ready(empty_cache, capsys):
    for main in (arm_emulation.main, arm_sysroot.main):  # arm_emulation's setup/status are arm_sysroot's
        assert main(["status"]) == 1
        out = capsys.readouterr().out
        assert "NOT READY" in out and str(empty_cache) in out
        assert arm_emulation.LABEL in out


def test_unset_up_emulation_skips_locally_and_fails_in_ci(empty_cache, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not set up"):
        require_arm_emulation()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true.*not set up"):
        require_arm_emulation()


def test_a_cross_compiler_that_cannot_link_is_named_with_the_fix(monkeypatch, tmp_path):
    # a stand-in for aarch64-linux-gnu-gcc without the aarch64 libc6-dev: the linker fails
    failing = tmp_path / "cross-gcc"
    failing.write_text("#!/bin/sh\necho 'ld: cannot find crti.o: No such file or directory' >&2\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setattr(arm_sysroot, "CROSS_COMPILER", str(failing))
    with pytest.raises(ArmEmulationError, match="(?s)cannot link a shared library.*libc6-dev-arm64-cross.*crti.o"):
        arm_sysroot._check_cross_link()


@pytest.mark.arm
def test_the_cross_compiler_links_a_shared_library():
    require_arm_emulation()
    arm_sysroot._check_cross_link()  # raises with the fix when it cannot


# ---------------------------------------------------------------------------------
# the server (needs the emulation)
# ---------------------------------------------------------------------------------
@pytest.mark.arm
def test_server_starts_serves_and_stops():
    require_arm_emulation()
    server = arm_emulation.start_rpc_server()
    try:
        assert server.alive and arm_emulation._listening(server.port)
        assert "running" in repr(server) and arm_emulation.LABEL in repr(server)
        remote = server.session()
        assert remote.cpu(0).exist
        del remote
    finally:
        server.stop()
    assert not server.alive
    assert not arm_emulation._listening(server.port)
    assert not group_alive(server.proc.pid)  # worker and sessions are gone too (zombies hold nothing)
    server.stop()  # stopping twice is harmless
    assert "stopped" in repr(server)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.arm
def test_server_registers_with_a_loopback_tracker():
    require_arm_emulation()
    port = _free_port()
    tracker = subprocess.Popen(
        [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
         "--port-end", str(port + 1)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not arm_emulation._listening(port):
            assert tracker.poll() is None and time.monotonic() < deadline, "tracker did not start"
            time.sleep(0.2)
        with arm_emulation.start_rpc_server(tracker=f"127.0.0.1:{port}", key="arm-test") as server:
            assert f"tracker 127.0.0.1:{port} key 'arm-test'" in repr(server)
            remote = server.session()  # requested from the tracker by key
            assert remote.cpu(0).exist
            del remote
    finally:
        tracker.kill()
        tracker.wait()
