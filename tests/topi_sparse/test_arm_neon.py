"""The sparse kernels built for ``hikey970-cpu`` (aarch64 + NEON, vector width 4).

For every kernel variant: the generated assembly's hot loop multiplies with NEON
``fmla ... .4s`` (and nothing scalar), and the cross-compiled library, run on the
emulated aarch64 RPC server over a real ``tvm.rpc`` session, equals torch's
``F.conv2d`` on the same dense weight (max error <= 1e-4 * max|y|). One whole model
(a pruned ResNet-18) runs the same way through the Relax VM.

Emulated (qemu) — correctness only, not device timing: nothing here is timed. Besides
the listed variants, ``EMULATED_SWEEP`` random layers (the CPU kernel sweep's strategy,
built with 4 lanes) run there too.

Adding a kernel variant: write a builder ``(case) -> BuiltKernel`` and list its cases in
``VARIANTS``; both checks then run on it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import numpy as np
import pytest
import torch
import tvm
from hypothesis import HealthCheck, assume, given, settings

import topi_sparse
import tvm_mcpruner as mcp
from tests._resources import require_arm_emulation
from tests.benchmarks import load_benchmark
from tests._models import assert_close, assert_close_to_exact, randomize_bn, torch_output
from tests.topi_sparse.test_pattern_conv2d import assert_close as assert_kernel_close  # zero outputs allowed
from tests.topi_sparse.test_pattern_conv2d import conv_cases, make_weight, out_size, torch_reference
from tvm_mcpruner import arm_emulation
from tvm_mcpruner.sparse_format import pack_pattern_weights

pytestmark = pytest.mark.arm

PRESET = mcp.get_preset("hikey970-cpu")
LANES = PRESET.vector_width


@dataclass(frozen=True)
class ConvCase:
    """One layer: NCHW input, O filters of ``kernel`` x ``kernel``, fused epilogue, weight kind."""

    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    with_bias: bool
    clip: tuple[float | None, float | None] | None
    weight: str = "aligned"  # or "dense" (see make_weight)
    keep: float = 0.5


@dataclass(frozen=True)
class BuiltKernel:
    """A variant built for the preset, with the data to run it and torch's answer."""

    lib: tvm.runtime.Executable
    inputs: tuple[np.ndarray, ...]
    output_shape: tuple[int, ...]
    expected: np.ndarray
    accumulators: int  # output vectors one hot-loop iteration updates (fmla count)


def pattern_conv2d_variant(case: ConvCase) -> BuiltKernel:
    """``topi_sparse.build_pattern_conv2d(family="cpu")`` on a packed random weight."""
    rng = np.random.default_rng(0)
    k = case.kernel
    x = rng.standard_normal((case.batch, case.in_channels, case.height, case.width), np.float32)
    w = make_weight(rng, case.out_channels, case.in_channels, k, k, LANES, case.weight, case.keep)
    bias = rng.standard_normal(case.out_channels).astype(np.float32) if case.with_bias else None
    packed = pack_pattern_weights(w, LANES)
    kernel = topi_sparse.build_pattern_conv2d(
        x.shape, w.shape, packed.row_ptr, *packed.row_channels_and_taps(), packed.values,
        stride=case.stride, padding=(case.padding,) * 4, family=PRESET.family,
        with_bias=case.with_bias, clip=case.clip,
    )
    lib = tvm.compile(tvm.IRModule({"main": kernel.func}), target=PRESET.tvm_target())
    expected = torch_reference(x, w, bias, stride=case.stride, padding=case.padding, clip=case.clip)
    inputs = (x.reshape(kernel.input_shape), kernel.values, kernel.offsets) + ((bias,) if case.with_bias else ())
    return BuiltKernel(lib, inputs, kernel.output_shape, expected, accumulators=kernel.knobs.tile_w)


RELU, RELU6 = (0.0, None), (0.0, 6.0)
PATTERN_CONV2D_CASES = {
    "3x3-s1-p1-bias-relu": ConvCase(1, 16, 12, 12, 32, 3, 1, 1, True, RELU),
    "3x3-s2-p1-relu6": ConvCase(1, 16, 13, 13, 16, 3, 2, 1, False, RELU6),
    "3x3-s1-p0-C6-O10-bias": ConvCase(1, 6, 10, 9, 10, 3, 1, 0, True, None),
    "3x3-s2-p0-batch2-bias-relu6": ConvCase(2, 8, 11, 9, 12, 3, 2, 0, True, RELU6),
    "3x3-s1-p1-dense-rgb-stem": ConvCase(1, 3, 16, 16, 16, 3, 1, 1, True, RELU, weight="dense"),
    "1x1-s1-p0-C30-O20-bias-relu": ConvCase(1, 30, 8, 8, 20, 1, 1, 0, True, RELU),
    "1x1-s2-p0-C18-batch2": ConvCase(2, 18, 7, 7, 8, 1, 2, 0, False, None, keep=0.75),
}
VARIANTS = [
    pytest.param(pattern_conv2d_variant, case, id=f"pattern_conv2d-{name}")
    for name, case in PATTERN_CONV2D_CASES.items()
]


@functools.cache
def built(builder: Callable[[ConvCase], BuiltKernel], case: ConvCase) -> BuiltKernel:
    return builder(case)


# ---------------------------------------------------------------------------------
# generated code
# ---------------------------------------------------------------------------------
_FP_MULTIPLY = re.compile(r"^(?:fmla|fmls|fmadd|fmsub|fmul)\s")
hot_loop = load_benchmark("perf_model").hot_loop  # the same loop the performance model reads


@pytest.mark.parametrize("builder, case", VARIANTS)
def test_hot_loop_is_neon_fmla_4s(builder, case):
    kernel = built(builder, case)
    asm = kernel.lib.mod.inspect_source("asm")
    body = hot_loop(asm)
    multiplies = [line for line in body if _FP_MULTIPLY.match(line)]
    neon = [line for line in multiplies if re.match(r"fmla\s+v\d+\.4s,\s*v\d+\.4s,", line)]
    assert neon == multiplies, "hot loop has non-NEON-4s multiplies:\n" + "\n".join(body)
    # One fmla per accumulator vector of the register tile, each iteration.
    assert len(neon) >= kernel.accumulators, "\n".join(body)


# ---------------------------------------------------------------------------------
# run on the emulated aarch64
# ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def arm_server():
    """One emulated aarch64 RPC server for the whole module (starting one takes ~5 s)."""
    require_arm_emulation()
    with arm_emulation.start_rpc_server() as server:
        yield server


@pytest.mark.parametrize("builder, case", VARIANTS)
def test_matches_torch_on_emulated_aarch64(builder, case, arm_server, tmp_path: Path):
    kernel = built(builder, case)
    lib_path = arm_emulation.export_for_arm(kernel.lib, tmp_path / "kernel.so")
    (y,) = arm_emulation.run_primfunc(arm_server, lib_path, kernel.inputs,
                                      [(kernel.output_shape, "float32")])
    assert_close(y, kernel.expected, rel=1e-4)


def test_pruned_resnet18_matches_torch_on_emulated_aarch64(arm_server, tmp_path: Path):
    torch.manual_seed(0)
    model = mcp.models.get_model("resnet18", width=0.25, stem="cifar")
    pruned, report = mcp.prune(model, target="hikey970-cpu", pattern_k=4, keep_kernels=0.5)
    randomize_bn(pruned, seed=3, example_input=torch.randn(4, 3, 32, 32))
    # Two different images in one batch: their outputs must differ, or the check is empty.
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    cm = mcp.compile(mcp.from_torch(pruned, (x,)), target="hikey970-cpu")
    assert cm.num_sparse_layers == len(report.pruned_layers) > 0
    convs = cm.sparse_layers[: len(report.layers)]  # then the classifier, as dense_<i>
    assert [r.sparse for r in convs] == [layer.pruned for layer in report.layers]

    lib_path = arm_emulation.export_for_arm(cm, tmp_path / "resnet18.so")
    y = arm_emulation.run_vm(arm_server, lib_path, [x.numpy()], preset=PRESET)  # on the big cluster, as on the board
    expected = torch_output(pruned, x)
    assert_close_to_exact(y, pruned, x)
    row_difference = float(np.abs(y[0] - y[1]).max())
    assert row_difference > 1e-2 * float(np.abs(expected).max()), "output ignores the input"


# Each example cross-compiles and runs under qemu (~1-2 s): a smaller sweep than the host's.
EMULATED_SWEEP = 30


@settings(max_examples=EMULATED_SWEEP, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_cases([1, 3]))
def test_random_layers_match_torch_on_emulated_aarch64(case, arm_server, tmp_path_factory):
    k = case["kernel"][0]
    assume(out_size(case["h"], k, case["stride"], case["padding"]) > 0)
    assume(out_size(case["wd"], k, case["stride"], case["padding"]) > 0)
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["wd"])).astype(np.float32)
    w = make_weight(rng, case["o"], case["c"], k, k, LANES, case["kind"], case["keep"])
    bias = rng.standard_normal(case["o"]).astype(np.float32) if case["with_bias"] else None
    packed = pack_pattern_weights(w, LANES)
    kernel = topi_sparse.build_pattern_conv2d(
        x.shape, w.shape, packed.row_ptr, *packed.row_channels_and_taps(), packed.values,
        stride=case["stride"], padding=(case["padding"],) * 4, family=PRESET.family,
        with_bias=bias is not None, clip=case["clip"],
    )
    lib = tvm.compile(tvm.IRModule({"main": kernel.func}), target=PRESET.tvm_target())
    lib_path = arm_emulation.export_for_arm(lib, tmp_path_factory.mktemp("sweep") / "kernel.so")
    inputs = (x.reshape(kernel.input_shape), kernel.values, kernel.offsets) + ((bias,) if bias is not None else ())
    (y,) = arm_emulation.run_primfunc(arm_server, lib_path, inputs, [(kernel.output_shape, "float32")])
    expected = torch_reference(x, w, bias, stride=case["stride"], padding=case["padding"], clip=case["clip"])
    assert_kernel_close(y, expected)  # keep 0 and ReLU may leave an all-zero output
