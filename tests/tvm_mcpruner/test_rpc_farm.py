"""tvm_mcpruner.rpc_farm: a real TVM RPC tracker and servers on 127.0.0.1 (random free ports).

MetaSchedule's own ``RPCRunner`` measures through the tracker, and with two servers on
one key both serve sessions: the tracker spreads the work, nothing of ours schedules it.
The ``arm`` test does the same with one emulated aarch64 server (qemu; needs
``bash .ci/setup_arm.sh``; emulated times are not device timings).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests._resources import require_arm_emulation
from tvm_mcpruner import arm_emulation, arm_sysroot, rpc_farm, rpc_tracker
from tvm_mcpruner.rpc_farm import TrackerUnreachableError

KEY = "farm-test"
AARCH64 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}


@pytest.fixture(scope="module")
def farm():
    """One tracker with two host-CPU servers under ``KEY`` (started side by side)."""
    with rpc_farm.start_tracker() as tracker:
        servers = [rpc_farm.start_server(tracker.address, KEY, wait=False) for _ in range(2)]
        try:
            rpc_farm.wait_for_servers(tracker.address, KEY, count=2, timeout=90)
            yield tracker, servers
        finally:
            for server in servers:
                server.stop()


def _add_kernel(target):
    """A 1024-element TE add built by MetaSchedule's LocalBuilder: (artifact path, args_info)."""
    import tvm
    from tvm import te
    from tvm.s_tir import meta_schedule as ms

    a = te.placeholder((1024,), "float32", name="a")
    b = te.placeholder((1024,), "float32", name="b")
    c = te.compute((1024,), lambda i: a[i] + b[i], name="c")
    func = te.create_prim_func([a, b, c])
    export = {"f_export": rpc_farm.export_aarch64_shared_library} if target == AARCH64 else {}
    # The default build imports tvm.s_tir.tensor_intrin in each fresh worker: ~30 s of CPU.
    builder = ms.builder.LocalBuilder(max_workers=1, f_build=rpc_farm.build_without_tensor_intrinsics, **export)
    (built,) = builder.build([ms.builder.BuilderInput(tvm.IRModule({"main": func}), tvm.target.Target(target))])
    assert built.error_msg is None, built.error_msg
    return built.artifact_path, ms.arg_info.ArgInfo.from_prim_func(func)


def _measure(tracker, key, artifact_path, args_info, count, max_workers):
    """``count`` runs of the artifact through ``ms.runner.RPCRunner``, all submitted at once."""
    from tvm.s_tir import meta_schedule as ms

    host, port = rpc_farm.parse_tracker(tracker.address)
    runner = ms.runner.RPCRunner(
        ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key, session_timeout_sec=60),
        evaluator_config=ms.runner.EvaluatorConfig(number=1, repeat=1),
        max_workers=max_workers,
    )
    inputs = [ms.runner.RunnerInput(artifact_path, "cpu", args_info) for _ in range(count)]
    results = [future.result() for future in runner.run(inputs)]
    del runner
    for result in results:
        assert result.error_msg is None, result.error_msg
        assert len(result.run_secs) == 1 and float(result.run_secs[0]) > 0
    return results


# ---------------------------------------------------------------------------------
# a farm of host servers
# ---------------------------------------------------------------------------------
def test_two_servers_on_one_key_are_registered(farm):
    tracker, servers = farm
    assert tracker.alive and f"127.0.0.1:{tracker.port}" == tracker.address
    summary = rpc_farm.tracker_summary(tracker.address)
    assert summary["queue_info"][KEY] == {"free": 2, "pending": 0}
    listed = {port for _, port in rpc_farm.wait_for_servers(tracker.address, KEY, 2, timeout=1)}
    assert listed == {server.port for server in servers}
    with pytest.raises(rpc_farm.RPCFarmError, match="already answers"):
        rpc_farm.start_tracker(tracker.port)  # never a second tracker on a taken port
    for server in servers:
        assert server.registered() and server.sessions_served() == 0
        assert f"host 127.0.0.1:{server.port} key '{KEY}'" in repr(server) and "running" in repr(server)
        assert arm_emulation.LABEL not in repr(server)  # host timings are real timings


def test_rpc_runner_measurements_are_spread_over_both_servers(farm):
    tracker, servers = farm
    artifact, args_info = _add_kernel({"kind": "llvm"})
    _measure(tracker, KEY, artifact, args_info, count=4, max_workers=2)
    served = [server.sessions_served() for server in servers]
    assert all(n >= 1 for n in served), f"sessions per server: {served}"
    assert sum(served) == 4  # one session per measurement, each counted once
    rpc_farm.wait_for_servers(tracker.address, KEY, count=2, timeout=30)  # both free again


# ---------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------
def test_unreachable_tracker_gives_a_clear_error_at_once():
    port = arm_emulation._free_port()  # nothing listens there
    address = f"127.0.0.1:{port}"
    running = set(rpc_farm._RUNNING)
    start = time.monotonic()
    with pytest.raises(TrackerUnreachableError, match=rf"no TVM RPC tracker answers at 127\.0\.0\.1:{port} .*"
                       rf"`mcpruner tracker --port {port}`"):
        rpc_farm.tracker_summary(address)
    with pytest.raises(ConnectionError, match="no TVM RPC tracker answers"):
        rpc_farm.wait_for_servers(address, KEY, 1, timeout=30)
    with pytest.raises(TrackerUnreachableError, match="python -m tvm.exec.rpc_server --tracker"):
        rpc_farm.start_server(address, KEY)  # refused before any process starts
    assert time.monotonic() - start < 10  # not TVM's 60 s retry loop
    assert rpc_farm._RUNNING == running


@pytest.mark.parametrize("key", ["", "two words", "a:b"])
def test_bad_keys_are_refused(key):
    with pytest.raises(ValueError, match="RPC key"):
        rpc_farm.start_server("127.0.0.1:9190", key)


def test_a_local_server_joins_only_a_loopback_tracker():
    with pytest.raises(ValueError, match="loopback"):
        rpc_farm.start_server("192.168.1.20:9190", KEY)
    # A real board farm's tracker may live elsewhere: asking it is allowed.
    assert rpc_farm.parse_tracker("hikey-host.lan:9190", loopback_only=False) == ("hikey-host.lan", 9190)


def test_tracker_wire_constants_are_tvms():
    from tvm.rpc import base

    assert rpc_tracker._TRACKER_MAGIC == base.RPC_TRACKER_MAGIC
    assert (rpc_tracker._CODE_SUCCESS, rpc_tracker._CODE_SUMMARY) == (base.TrackerCode.SUCCESS, base.TrackerCode.SUMMARY)


def test_board_join_command_is_tvms_own_server():
    assert rpc_farm.board_join_command() == ("python -m tvm.exec.rpc_server --tracker HOST:9190 --key hikey970 "
                                             "--host BOARD")  # bound to one interface, not 0.0.0.0


# ---------------------------------------------------------------------------------
# the CLI wrappers
# ---------------------------------------------------------------------------------
class _Output:
    """Collects a subprocess's stdout lines in a thread, so the test can wait for one."""

    def __init__(self, proc):
        self.proc, self.lines = proc, []
        threading.Thread(target=lambda: self.lines.extend(proc.stdout), daemon=True).start()

    def wait_for(self, text, timeout=90):
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {''.join(self.lines)}"
            assert time.monotonic() < deadline, f"no {text!r} in: {''.join(self.lines)}"
            time.sleep(0.1)
        return "".join(self.lines)


def _cli(*args):
    proc = subprocess.Popen([sys.executable, "-m", "tvm_mcpruner.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return proc, _Output(proc)


def _terminate(proc, timeout=30):
    """SIGTERM (the CLI stops its tracker/server like on Ctrl-C); its exit code."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def test_cli_tracker_and_server_run_until_terminated(farm):
    # Side by side to save time: `mcpruner tracker` on its own port, `mcpruner server`
    # joining the farm's tracker under a key of its own.
    farm_tracker, _ = farm
    port = arm_emulation._free_port()
    tracker, tracker_out = _cli("tracker", "--port", str(port))
    server, server_out = _cli("server", "--tracker", farm_tracker.address, "--key", "cli-test")
    try:
        text = tracker_out.wait_for("mcpruner server --tracker")
        assert f"python -m tvm.exec.rpc_server --tracker HOST:{port} --key hikey970 --host BOARD" in text
        assert rpc_farm.tracker_summary(f"127.0.0.1:{port}")["server_info"] == []
        assert _terminate(tracker) == 0
        with pytest.raises(TrackerUnreachableError):  # the CLI stopped the tracker it started
            rpc_farm.tracker_summary(f"127.0.0.1:{port}")

        assert "serving: <ServerProcess host 127.0.0.1:" in server_out.wait_for("serving:")
        assert len(rpc_farm.wait_for_servers(farm_tracker.address, "cli-test", 1, timeout=5)) == 1
        assert _terminate(server) == 0
        deadline = time.monotonic() + 20
        while any(info["key"] == "server:cli-test"
                  for info in rpc_farm.tracker_summary(farm_tracker.address)["server_info"]):
            assert time.monotonic() < deadline, "the tracker still lists the stopped server"
            time.sleep(0.2)
    finally:
        for proc in (server, tracker):
            if proc.poll() is None:
                _terminate(proc)


# ---------------------------------------------------------------------------------
# an emulated aarch64 server in the farm (qemu)
# ---------------------------------------------------------------------------------
@pytest.mark.arm
def test_emulated_aarch64_server_measures_through_the_tracker():
    require_arm_emulation()
    with rpc_farm.start_tracker() as tracker:
        with rpc_farm.start_server(tracker.address, arm_emulation.RPC_KEY, emulate_aarch64=True) as server:
            assert arm_emulation.LABEL in repr(server) and "aarch64 (qemu)" in repr(server)
            assert arm_emulation.LABEL in server.log_text().splitlines()[0]
            assert server.sessions_served() == 0  # its own readiness check is not counted
            artifact, args_info = _add_kernel(AARCH64)
            assert artifact.endswith(".so")
            _measure(tracker, arm_emulation.RPC_KEY, artifact, args_info, count=1, max_workers=1)
            assert server.sessions_served() == 1
        assert not server.alive


def test_emulated_servers_are_known_by_key_or_by_this_process(monkeypatch, tmp_path):
    assert rpc_farm.key_names_emulator(arm_emulation.RPC_KEY)
    assert not rpc_farm.key_names_emulator(rpc_farm.BOARD_KEY) and not rpc_farm.key_names_emulator(None)
    emulated = rpc_farm.ServerProcess(None, 1, tmp_path / "log", "127.0.0.1:9190", "board", emulated=object())
    host_cpu = rpc_farm.ServerProcess(None, 2, tmp_path / "log", "127.0.0.1:9190", "host")
    monkeypatch.setattr(rpc_farm, "_RUNNING", {emulated, host_cpu})
    assert rpc_farm.emulated_server_running("localhost:9190", "board")
    assert not rpc_farm.emulated_server_running("127.0.0.1:9191", "board")
    assert not rpc_farm.emulated_server_running("127.0.0.1:9190", "host")


def test_the_cross_compiler_is_named_by_the_target_preset_only(tmp_path):
    from pathlib import Path

    from tvm_mcpruner import get_preset

    preset = get_preset("hikey970-cpu")
    assert preset.cross_compiler == "aarch64-linux-gnu-gcc" and get_preset("host").cross_compiler is None
    assert arm_emulation.CROSS_COMPILER == preset.cross_compiler
    # .ci/setup_arm.sh runs arm_sysroot as a file, before numpy or TVM are installed
    script = Path(arm_sysroot.__file__)
    code = ("import runpy, sys; sys.path.insert(0, sys.argv[1]); ns = runpy.run_path(sys.argv[2]); "
            "loaded = {'numpy', 'tvm', 'tvm_mcpruner'} & set(sys.modules); "
            "assert not loaded, loaded; print(ns['CROSS_COMPILER'])")
    out = subprocess.run([sys.executable, "-c", code, str(script.parent), str(script)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == preset.cross_compiler, out.stderr
