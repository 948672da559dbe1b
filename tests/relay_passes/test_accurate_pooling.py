"""AccuratePooling: large global average pooling -> blocked fp32 sums.

Expected modules are written out by hand (block sizes worked out here, not by the pass), as
TVM's own pass tests do; the numeric tests compare against the model run in float64 and
show that the same pipeline without the pass misses by orders of magnitude on a large input.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax

import relay_passes.pipeline
import tvm_mcpruner as mcp
from relay_passes import AccuratePooling
from tests._models import assert_close_to_exact

C = 4


def _function(shape, body) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def _blocked(blocks, axis, count, out_shape, pad=None):
    """The expected body: optional flatten + zero pad; per shape in ``blocks`` a reshape to
    it and a sum over its block axis (``axis + 1``); a last sum over ``axis``; a reshape to
    ``out_shape`` (None: none); the division by ``count``."""

    def body(bb, x):
        y = x
        if pad is not None:
            flat, widths = pad
            y = bb.emit(relax.op.reshape(y, flat))
            y = bb.emit(relax.op.nn.pad(y, widths))
        for shape in blocks:
            y = bb.emit(relax.op.reshape(y, shape))
            y = bb.emit(relax.op.sum(y, axis=[axis + 1]))
        y = bb.emit(relax.op.sum(y, axis=[axis]))
        if out_shape is not None:
            y = bb.emit(relax.op.reshape(y, out_shape))
        return relax.op.divide(y, relax.const(float(count), "float32"))

    return body


# (name, input shape, the op, expected body): 128 x 128 = 16384 = 64 blocks of 256.
CASES = [
    ("mean keepdims (torch adaptive pool)", (1, C, 128, 128),
     lambda bb, x: relax.op.mean(x, [-1, -2], keepdims=True),
     _blocked([(1, C, 64, 256)], 2, 16384, (1, C, 1, 1))),
    ("mean (ONNX ReduceMean)", (1, C, 128, 128),
     lambda bb, x: relax.op.mean(x, [2, 3], keepdims=False),
     _blocked([(1, C, 64, 256)], 2, 16384, None)),
    ("adaptive_avg_pool2d 1x1", (1, C, 128, 128),
     lambda bb, x: relax.op.nn.adaptive_avg_pool2d(x, 1),
     _blocked([(1, C, 64, 256)], 2, 16384, (1, C, 1, 1))),
    ("global avg_pool2d NHWC", (1, 128, 128, C),
     lambda bb, x: relax.op.nn.avg_pool2d(x, (128, 128), layout="NHWC"),
     _blocked([(1, 64, 256, C)], 1, 16384, (1, 1, 1, C))),
    # 2048^2 = 2^22: three levels of 256, 256 and 64
    ("three levels", (1, 1, 2048, 2048),
     lambda bb, x: relax.op.mean(x, [2, 3], keepdims=True),
     _blocked([(1, 1, 16384, 256), (1, 1, 64, 256)], 2, 2048 * 2048, (1, 1, 1, 1))),
    # 127^2 = 16129 has no divisor in (128, 256]: zeros pad it to 16384
    ("zero padded", (1, C, 127, 127),
     lambda bb, x: relax.op.mean(x, [2, 3], keepdims=True),
     _blocked([(1, C, 64, 256)], 2, 16129, (1, C, 1, 1),
              pad=((1, C, 16129), [0, 0, 0, 0, 0, 255]))),
]


def _tidy(mod: tvm.IRModule) -> tvm.IRModule:
    mod = relax.transform.CanonicalizeBindings()(mod)
    return relax.transform.DeadCodeElimination(["main"])(mod)


@pytest.mark.parametrize("name, shape, op, body", CASES, ids=[c[0] for c in CASES])
def test_global_pooling_becomes_blocked_sums(name, shape, op, body):
    after = _tidy(AccuratePooling()(_function(shape, op)))
    tvm.ir.assert_structural_equal(after, _tidy(_function(shape, body)), map_free_vars=True)


@pytest.mark.parametrize("name, shape, op, body", CASES, ids=[c[0] for c in CASES])
def test_blocked_sums_compute_the_mean(name, shape, op, body):
    before = _function(shape, op)
    x = np.abs(np.random.default_rng(0).standard_normal(shape)).astype(np.float32)
    runs = {}
    for label, mod in (("before", before), ("after", AccuratePooling()(before))):
        vm = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
        runs[label] = vm["main"](tvm.runtime.tensor(x)).numpy().astype(np.float64)
    axes = (1, 2) if "NHWC" in name else (2, 3)
    exact = x.astype(np.float64).mean(axis=axes).reshape(runs["before"].shape)
    errors = {k: float(np.abs(v - exact).max() / exact.max()) for k, v in runs.items()}
    assert errors["after"] <= 1e-6, errors  # blocks of <= 256 terms: ~1e-7
    assert errors["after"] <= errors["before"], errors


@pytest.mark.parametrize("shape, op", [
    ((1, C, 16, 16), lambda x: relax.op.mean(x, [2, 3], keepdims=True)),  # 256 terms: one block
    ((1, C, 32, 32), lambda x: relax.op.nn.avg_pool2d(x, (8, 8))),  # windowed, not global
    ((1, C, 32, 32), lambda x: relax.op.nn.adaptive_avg_pool2d(x, 2)),  # 2x2 output
    ((1, C, 32, 32), lambda x: relax.op.mean(x, [1, 3])),  # axes not contiguous
], ids=["256 elements", "8x8 window", "adaptive 2x2", "axes 1 and 3"])
def test_small_or_non_global_pooling_is_left_alone(shape, op):
    before = _function(shape, lambda bb, x: op(x))
    tvm.ir.assert_structural_equal(AccuratePooling()(before), before)


class _ConvPool(nn.Module):
    """conv + ReLU + global average pool (adaptive pool, or mean as ONNX ReduceMean) + Linear."""

    def __init__(self, pool: str):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc, self.pool = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 4), pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        if self.pool == "adaptive":
            return self.fc(nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))
        return self.fc(y.mean((2, 3)))


def _import(model: nn.Module, x: torch.Tensor, frontend: str, tmp_path) -> tvm.IRModule:
    if frontend == "torch":
        return mcp.from_torch(model, (x,))
    return mcp.from_onnx(mcp.export_onnx(model, (x,), tmp_path / "model.onnx"))


def _no_pass() -> tvm.transform.Pass:
    """Stands in for ``AccuratePooling()`` in the pipeline: TVM's own pooling lowering."""
    return tvm.transform.Sequential([])


@pytest.mark.parametrize("pool, frontend", [("adaptive", "torch"), ("mean", "onnx")])
def test_large_input_keeps_fp32_accuracy(pool, frontend, tmp_path, monkeypatch):
    """2048 x 2048: a single running fp32 sum over 4M terms is off by ~1e-4 of max|y| at the
    output (~1e-3 on the pooled features); the blocked sums are as close as torch's fp32."""
    model = _ConvPool(pool).eval()
    x = torch.randn(1, 3, 2048, 2048, generator=torch.Generator().manual_seed(1))
    mod = _import(model, x, frontend, tmp_path)
    assert "R.mean" in mod.script()
    assert_close_to_exact(mcp.compile(mod, "host", tuning_log=None)(x.numpy()), model, x)
    monkeypatch.setattr(relay_passes.pipeline, "AccuratePooling", _no_pass)
    with pytest.raises(AssertionError, match="max abs error against float64"):
        assert_close_to_exact(mcp.compile(mod, "host", tuning_log=None)(x.numpy()), model, x)


def test_small_input_is_not_rewritten(tmp_path):
    model = _ConvPool("adaptive").eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    mod = _import(model, x, "torch", tmp_path)
    tvm.ir.assert_structural_equal(AccuratePooling()(mod), mod)
    assert_close_to_exact(mcp.compile(mod, "host", tuning_log=None)(x.numpy()), model, x)
