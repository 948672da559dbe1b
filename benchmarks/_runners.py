"""Runners of the four frameworks the benchmarks compare, and the run's thread setup.

Each runner is a zero-argument callable over prepared inputs (see ``_timing``): torch
(oneDNN, denormals flushed), onnxruntime (denormals as zero), TVM dense (a Relax
executable, built by ``_dense_tuning.DenseTuner``) and mcpruner sparse
(``mcp.compile``). Also here: the MACs a model's convs compute, dense and non-zero.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (puts the repository on sys.path)
import numpy as np
import torch
import tvm
from _timing import Runner
from torch import nn
from tvm import relax

import tvm_mcpruner as mcp
from tvm_mcpruner.benchmark import flushed_denormals, onnxruntime_session, set_threads

DENSE_FRAMEWORKS = ("torch", "onnxruntime", "tvm-dense")


def same_isa_dense_frameworks() -> tuple[str, ...] | None:
    """The dense frameworks held to the ``host`` preset's ISA when that preset is built for
    a narrower CPU than this one (``MCPRUNER_HOST_CPU``); None when it is not.

    TVM dense is built for the preset itself; torch's oneDNN only when
    ``ONEDNN_MAX_CPU_ISA`` is set (read when torch loads); onnxruntime never: MLAS picks its
    kernels from CPUID and has no switch.
    """
    from tvm_mcpruner.targets import HOST_CPU_ENV

    if not os.environ.get(HOST_CPU_ENV):
        return None
    return ("tvm-dense", "torch") if os.environ.get("ONEDNN_MAX_CPU_ISA") else ("tvm-dense",)


def setup(threads: int, verbose: bool = False) -> None:
    """Same thread count for torch, TVM's runtime (and MetaSchedule's workers); quiet logs."""
    set_threads(threads)
    os.environ["TVM_NUM_THREADS"] = str(threads)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)


def host_target() -> tvm.target.Target:
    """The TVM target of the ``host`` preset (what every TVM build here is for)."""
    return mcp.get_preset("host").tvm_target()


def torch_runner(model: nn.Module, x: torch.Tensor) -> Runner:
    """``model(x)`` in eval mode, without autograd, denormals flushed."""
    model = model.eval()

    def run() -> torch.Tensor:
        with torch.inference_mode(), flushed_denormals():
            return model(x)

    return run


def onnxruntime_runner(model: nn.Module, x: torch.Tensor, threads: int, workdir: Path) -> Runner:
    """An ORT session on the CPU provider: ``threads`` intra-op threads, denormals as zero."""
    path = mcp.export_onnx(model, (x,), workdir / "model.onnx")
    session = onnxruntime_session(path, threads)
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


def vm_runner(executable: Any, x: np.ndarray) -> tuple[Runner, relax.VirtualMachine]:
    """Call ``main`` of a Relax executable on a prepared input (function looked up once)."""
    vm = relax.VirtualMachine(executable, tvm.cpu())
    arg = tvm.runtime.tensor(np.ascontiguousarray(x))
    main = vm["main"]
    return (lambda: main(arg)), vm


@dataclass
class SparseBuild:
    runner: Runner
    compiled: Any  # mcp.CompiledModel
    compile_s: float


def mcpruner_build(mod: tvm.IRModule, x: np.ndarray, threads: int, target: str = "host") -> SparseBuild:
    """``mcp.compile`` of ``mod`` for ``target``, timed, with a runner over ``x``."""
    start = time.perf_counter()
    compiled = mcp.compile(mod, target=target, threads=threads)
    compile_s = time.perf_counter() - start
    arg = tvm.runtime.tensor(np.ascontiguousarray(x))
    main = compiled.vm["main"]
    return SparseBuild(lambda: main(arg), compiled, compile_s)


def nonzero_conv_macs(model: nn.Module, x: torch.Tensor,
                      kinds: tuple[type, ...] = (nn.Conv2d, nn.Linear)) -> tuple[int, int]:
    """(dense, non-zero) MACs of the ``kinds`` layers in one forward pass, from the weights."""
    dense = nonzero = 0
    handles = []

    def hook(module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal dense, nonzero
        weight = _effective_weight(module)
        pixels = int(out.shape[-2] * out.shape[-1]) if isinstance(module, nn.Conv2d) else 1
        batch = int(out.shape[0])
        dense += weight.numel() * pixels * batch
        nonzero += int(torch.count_nonzero(weight)) * pixels * batch

    for module in model.modules():
        if isinstance(module, kinds):
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for handle in handles:
            handle.remove()
    return dense, nonzero


def _effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight the module computes with (a torch.nn.utils.prune mask applied)."""
    return module.weight.detach()
