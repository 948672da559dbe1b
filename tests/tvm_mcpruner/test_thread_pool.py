"""tvm_mcpruner.thread_pool: the HiKey970 preset runs on its big cluster; the configuration
call works here and, over RPC, on the emulated aarch64 server (qemu: correctness only,
nothing timed; the emulated cores all look alike, so which ones are "big" is not tested)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tvm_mcpruner as mcp
from tests._resources import require_arm_emulation
from tvm_mcpruner import arm_emulation
from tvm_mcpruner.compiler import set_tvm_threads
from tvm_mcpruner.thread_pool import CLUSTERS, configure_for_preset, configure_thread_pool


def test_hikey970_cpu_runs_four_threads_on_the_big_cluster_and_x86_names_none():
    hikey = mcp.get_preset("hikey970-cpu")
    assert (hikey.cpu_cluster, hikey.threads) == ("big", 4)
    assert mcp.get_preset("host").cpu_cluster is None
    assert configure_for_preset(mcp.get_preset("host")) is False  # nothing to configure


@pytest.mark.parametrize("cluster, threads, says", [
    ("medium", 4, "cluster must be one of"), ("big", 0, "threads must be an int >= 1"),
    ("big", 2.0, "threads must be an int >= 1"), ("all", True, "threads must be an int >= 1"),
])
def test_bad_arguments_are_named(cluster, threads, says):
    with pytest.raises(ValueError, match=says):
        configure_thread_pool(cluster, threads)


@pytest.mark.parametrize("cluster", sorted(CLUSTERS))
def test_every_cluster_configures_this_process(cluster):
    try:
        configure_thread_pool(cluster, 1)
    finally:
        set_tvm_threads(mcp.get_preset("host").threads)


@pytest.mark.arm
def test_the_preset_configures_the_emulated_board_and_a_model_runs_after_it(tmp_path):
    require_arm_emulation()
    hikey = mcp.get_preset("hikey970-cpu")
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU()).eval()
    x = torch.randn(1, 8, 10, 10)
    cm = mcp.compile(mcp.from_torch(model, (x,)), target=hikey, tuning_log=None)
    lib = arm_emulation.export_for_arm(cm, tmp_path / "model.so")
    with arm_emulation.start_rpc_server() as server:
        remote = server.session()
        for cluster, threads in (("big", 4), ("little", 2), ("all", 3)):
            configure_thread_pool(cluster, threads, session=remote)  # raises if the call fails there
        del remote
        y = arm_emulation.run_vm(server, lib, [x.numpy()], preset=hikey)
    with torch.no_grad():
        np.testing.assert_allclose(y, model(x).numpy(), rtol=1e-4, atol=1e-5)
