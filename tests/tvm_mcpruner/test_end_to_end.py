"""Issue acceptance: prune -> import (torch.export or ONNX) -> compile -> run == pruned torch.

For a VGG, a ResNet-18 and a MobileNetV2, on 224x224 and 32x32 inputs, batch 1 and 4:
``mcp.prune(model, target="host", pattern_k=4, keep_kernels=0.5)`` ->
``mcp.from_torch`` (or ``mcp.export_onnx`` -> ``mcp.from_onnx``) -> ``mcp.compile`` ->
``cm(x)`` equals the pruned torch model (its error against the model run in float64 is
within a small multiple of torch fp32's own: ``tests._models.assert_close_to_exact``), and
``cm.sparse_layers`` tells, one record per conv, which layers run sparse.

BN statistics are measured on data after pruning (``randomize_bn``), so outputs depend
on the input (asserted) and the error checks mean something. 224x224 cases are slow.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import tvm_mcpruner as mcp
from tests._models import assert_close_to_exact, assert_input_sensitive, randomize_bn, torch_output
from tvm_mcpruner.models import get_model

SIZES = [pytest.param(32, id="32"), pytest.param(224, id="224", marks=pytest.mark.slow)]
BATCHES = [1, 4]


def _build(family: str, size: int) -> nn.Module:
    """The model of ``family`` for ``size`` inputs: full width ResNet-18 / MobileNetV2 at 224,
    narrower nets at 32 (and a half-width VGG-11 at 224, where torch's dense reference is the
    slow part)."""
    if family == "vgg":
        return get_model("vgg11", width=0.5 if size == 224 else 0.25)
    if family == "resnet18":
        if size == 224:
            return get_model("resnet18", width=1.0, stem="imagenet")
        return get_model("resnet18", width=0.5, stem="cifar")
    if family == "mobilenet_v2":
        return get_model("mobilenet_v2", width=1.0 if size == 224 else 0.5)
    raise KeyError(family)


FAMILIES = ["vgg", "resnet18", "mobilenet_v2"]
HOST_LANES = mcp.get_preset("host").vector_width


@functools.lru_cache(maxsize=None)
def _pruned(family: str, size: int):
    """(pruned model with data-calibrated BN, PruneReport); cached per (family, size)."""
    torch.manual_seed(0)
    model = _build(family, size)
    pruned, report = mcp.prune(model, target="host", pattern_k=4, keep_kernels=0.5)
    calib = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(100 + size))
    randomize_bn(pruned, seed=7, example_input=calib)
    return pruned, report


def _inputs(batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(batch * 1000 + size)
    return torch.randn(batch, 3, size, size, generator=gen), torch.randn(batch, 3, size, size, generator=gen)


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def _check_records(cm, pruned: nn.Module, report, family: str) -> None:
    convs, linears = _convs(pruned), [m for m in pruned.modules() if isinstance(m, nn.Linear)]
    assert len(cm.sparse_layers) == len(convs) + len(linears) and len(report.layers) == len(convs)
    n = len(convs)  # the classifier (not pruned by default) comes last, run as a 1x1 conv
    assert [r.name for r in cm.sparse_layers] == [f"conv2d_{i}" for i in range(n)] + [
        f"dense_{n + i}" for i in range(len(linears))
    ]
    assert not any(r.sparse for r in cm.sparse_layers[n:])
    records = cm.sparse_layers[:n]
    for r in records:
        assert isinstance(r.name, str) and isinstance(r.sparse, bool)
        assert isinstance(r.reason, str) and r.reason
    assert cm.num_sparse_layers == sum(r.sparse for r in records) == len(report.pruned_layers)
    # layer by layer, in model order: what was pruned runs sparse, nothing else does
    assert [r.weight_shape for r in records] == [tuple(c.weight.shape) for c in convs]
    assert [r.sparse for r in records] == [layer.pruned for layer in report.layers]
    for r, layer in zip(records, report.layers):
        if r.sparse:  # the compiler issues exactly what the pruner's report promised
            assert r.kernel == "pattern_conv2d" and r.mac_reduction == pytest.approx(layer.mac_reduction), r
            # keep 0.5: 3x3 4-of-9 gives 4.5x, 1x1 (connectivity only) 2x, less only
            # where a filter count is not a multiple of the vector width (padding lanes)
            full = 2.0 if r.weight_shape[2:] == (1, 1) else 4.5
            assert r.mac_reduction == full or r.weight_shape[0] % HOST_LANES, r
    if family == "mobilenet_v2":
        depthwise = [r for r, c in zip(records, convs) if c.groups > 1]
        pointwise = [r for r in records if r.weight_shape[2:] == (1, 1)]
        assert depthwise and pointwise
        for r in depthwise:
            assert not r.sparse and r.kernel == "relax.nn.conv2d" and "groups=" in r.reason, r
        for r in pointwise:  # connectivity-pruned 1x1 convs run sparse (those with fewer
            assert r.kernel == "pattern_conv2d", r  # filters than lanes stay dense)
        assert any(r.sparse for r in pointwise)
    else:
        assert report.pruned_layers, "this net has 3x3 convs to prune"
    if family == "resnet18":
        strided = [c for c in convs if c.stride == (2, 2)]
        assert any(c.kernel_size == (1, 1) for c in strided), "downsampling projections present"


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("family", FAMILIES)
def test_torch_path_matches_pruned_model(family, size, batch):
    pruned, report = _pruned(family, size)
    x, x2 = _inputs(batch, size)
    mod = mcp.from_torch(pruned, (x,))
    cm = mcp.compile(mod, target="host")

    assert_input_sensitive(lambda a: torch_output(pruned, a), x.numpy(), x2.numpy())
    assert_close_to_exact(cm(x.numpy()), pruned, x)
    assert_close_to_exact(cm(x2), pruned, x2)  # a torch tensor works too
    _check_records(cm, pruned, report, family)


@pytest.fixture(scope="module")
def onnx_compiled(tmp_path_factory):
    """``get(family, size, batch)`` -> (pruned, report, x, onnx path, CompiledModel), cached."""
    cache: dict = {}

    def get(family: str, size: int, batch: int):
        key = (family, size, batch)
        if key not in cache:
            pruned, report = _pruned(family, size)
            x, _ = _inputs(batch, size)
            path = mcp.export_onnx(pruned, (x,), tmp_path_factory.mktemp("onnx") / "m.onnx")
            cache[key] = pruned, report, x, path, mcp.compile(mcp.from_onnx(path), target="host")
        return cache[key]

    return get


# 224x224 batch-4 through ONNX adds minutes of compile for no new coverage:
# at 224 only batch 1 is checked.
ONNX_CASES = [
    pytest.param(32, 1, id="32-1"),
    pytest.param(32, 4, id="32-4"),
    pytest.param(224, 1, id="224-1", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("size, batch", ONNX_CASES)
@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_path_matches_torch_and_onnxruntime(family, size, batch, onnx_compiled):
    import onnxruntime as ort

    pruned, _, x, path, cm = onnx_compiled(family, size, batch)
    y = cm(x.numpy())
    assert_close_to_exact(y, pruned, x)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (ort_y,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert_close_to_exact(ort_y, pruned, x)  # the ONNX file is the model we compiled
    linears = [m for m in pruned.modules() if isinstance(m, nn.Linear)]
    assert len(cm.sparse_layers) == len(_convs(pruned)) + len(linears)  # + the classifier


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_path_runs_the_pruned_layers_sparse(family, onnx_compiled):
    pruned, report, _, _, cm = onnx_compiled(family, 32, 1)
    _check_records(cm, pruned, report, family)
