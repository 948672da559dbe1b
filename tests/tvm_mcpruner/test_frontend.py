"""Frontends: torch.export and ONNX import into Relax, BN folded, weights constant, exact zeros.

Untuned TVM convs are slow, so models are narrow and inputs 32x32; each imported module
is built once (module-scoped cache) and shared by the numeric and structural checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import tvm
from torch import nn
from torch.nn.utils import prune
from tvm import relax

from tvm_mcpruner.frontend import export_onnx, from_onnx, from_torch
from tvm_mcpruner.models import get_model

TARGET = tvm.target.Target({"kind": "llvm"})

CONFIGS = {
    "vgg11": ("vgg11", {"width": 0.25}),
    "resnet18_cifar": ("resnet18", {"width": 0.25, "stem": "cifar"}),
    "resnet18_imagenet": ("resnet18", {"width": 0.25, "stem": "imagenet"}),
    "mobilenet_v2": ("mobilenet_v2", {"width": 0.35}),
}


# --------------------------------------------------------------------------- helpers


def _calibrate_bn(model: nn.Module, in_channels: int = 3) -> nn.Module:
    """Give every BN non-trivial gamma/beta (some negative) and data-derived running stats.

    Fresh BN layers are identities (mean 0, var 1, gamma 1, beta 0): folding them would
    prove nothing, and deep nets then squash activations towards zero.
    """
    gen = torch.Generator().manual_seed(1)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        sign = torch.where(torch.rand(bn.num_features, generator=gen) < 0.2, -1.0, 1.0)
        bn.weight.data = sign * (0.5 + torch.rand(bn.num_features, generator=gen))
        bn.bias.data = 0.2 * torch.randn(bn.num_features, generator=gen)
        bn.momentum = None  # cumulative average over the calibration batch
        bn.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.randn(8, in_channels, 32, 32, generator=gen))
    return model.eval()


def _model(key: str) -> nn.Module:
    name, kw = CONFIGS[key]
    torch.manual_seed(0)
    return _calibrate_bn(get_model(name, **kw))


def _run(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    ex = tvm.compile(mod, target=TARGET)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x, tvm.cpu())).numpy()


def _assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    scale = float(np.abs(expected).max())
    assert scale > 1e-3, "reference output is degenerate"
    assert float(np.abs(actual - expected).max()) <= 1e-4 * scale


def _calls(mod: tvm.IRModule, op_name: str) -> list[relax.Call]:
    """All calls of ``op_name`` in ``main``, in post order (= execution order)."""
    op = tvm.ir.Op.get(op_name)
    found: list[relax.Call] = []

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and expr.op.same_as(op):
            found.append(expr)

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return found


def _conv_weights(mod: tvm.IRModule) -> list[np.ndarray]:
    """Every conv2d weight as numpy; fails if one is not a Relax constant."""
    weights = []
    for call in _calls(mod, "relax.nn.conv2d"):
        assert isinstance(call.args[1], tvm.ir.GenericConst), f"non-constant weight: {call.args[1]}"
        weights.append(call.args[1].value.numpy())
    return weights


def _assert_clean(mod: tvm.IRModule, n_convs: int) -> None:
    """No BN left, every conv weight constant, one tensor in, one tensor out."""
    assert not _calls(mod, "relax.nn.batch_norm")
    assert not _calls(mod, "relax.call_tir"), "opaque call_tir left by the importer"
    assert len(_conv_weights(mod)) == n_convs
    main = mod["main"]
    assert len(main.params) == 1 and main.params[0].name == "x"
    assert isinstance(main.ret_ty, relax.TensorType)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory):
    """(config, batch) -> (torch model, x, y_torch, {"torch": mod, "onnx": mod}, onnx path)."""
    cache: dict = {}
    tmp = tmp_path_factory.mktemp("onnx")

    def get(key: str, batch: int):
        if (key, batch) not in cache:
            model = _model(key)
            x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
            with torch.no_grad():
                y = model(x).numpy()
            path = export_onnx(model, (x,), tmp / f"{key}_{batch}.onnx")
            mods = {"torch": from_torch(model, (x,)), "onnx": from_onnx(path)}
            cache[key, batch] = (model, x, y, mods, path)
        return cache[key, batch]

    return get


# --------------------------------------------------------------------------- whole models


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("key", list(CONFIGS))
def test_matches_torch(imported, key: str, batch: int) -> None:
    model, x, y, mods, path = imported(key, batch)
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    for kind, mod in mods.items():
        _assert_clean(mod, n_convs)
        _assert_close(_run(mod, x.numpy()), y)


@pytest.mark.parametrize("key", ["resnet18_cifar", "mobilenet_v2"])
def test_onnx_path_matches_onnxruntime(imported, key: str) -> None:
    import onnxruntime as ort

    _, x, y, mods, path = imported(key, 1)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y_ort = session.run(None, {"x": x.numpy()})[0]
    _assert_close(y_ort, y)
    _assert_close(_run(mods["onnx"], x.numpy()), y_ort)


def _bound_values(mod: tvm.IRModule) -> dict:
    """Var -> the expression bound to it, over all blocks of ``main``."""
    return {b.var: b.value for block in mod["main"].body.blocks for b in block.bindings}


def test_conv_bn_relu_is_folded_into_conv_add_relu(imported) -> None:
    """The stem reads relu(add(conv2d(x, const), const (1, C, 1, 1))) on both paths."""
    for mod in imported("resnet18_cifar", 1)[3].values():
        values = _bound_values(mod)
        relu = _calls(mod, "relax.nn.relu")[0]
        add = values[relu.args[0]]
        assert add.op.name == "relax.add"
        conv = values[add.args[0]]
        assert conv.op.name == "relax.nn.conv2d" and conv.args[0].same_as(mod["main"].params[0])
        assert isinstance(conv.args[1], tvm.ir.GenericConst)
        assert isinstance(add.args[1], tvm.ir.GenericConst)
        assert tuple(add.args[1].value.shape) == (1, 16, 1, 1)
    text = imported("resnet18_cifar", 1)[3]["torch"].script(show_meta=False)
    assert "R.nn.conv2d(x, metadata" in text and "batch_norm" not in text


def test_relu6_imports_as_clip_on_both_paths(imported) -> None:
    mods = imported("mobilenet_v2", 1)[3]
    assert len(_calls(mods["torch"], "relax.clip")) == len(_calls(mods["onnx"], "relax.clip")) > 0


# --------------------------------------------------------------------------- pruning


def _pruned_resnet() -> nn.Module:
    model = _model("resnet18_cifar")
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            prune.l1_unstructured(module, "weight", amount=0.6)
    return model


def _zero_masks(arrays: list[np.ndarray]) -> list[tuple]:
    """Order-free fingerprint of where the zeros are in each weight."""
    return sorted((a.shape, np.packbits(a == 0).tobytes()) for a in arrays)


def test_pruned_zeros_survive_bn_folding(tmp_path: Path) -> None:
    model = _pruned_resnet()
    x = torch.randn(1, 3, 32, 32)
    expected = [m.weight.detach().numpy() for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sum(int((w == 0).sum()) for w in expected) > 0
    with torch.no_grad():
        y = model(x).numpy()

    mod = from_torch(model, (x,))
    weights = _conv_weights(mod)
    assert _zero_masks(weights) == _zero_masks(expected)
    assert not any(np.signbit(w[w == 0]).any() for w in weights), "-0.0 left in a weight"
    assert hasattr(model.layers[0].conv1, "weight_orig"), "caller's model was modified"
    _assert_close(_run(mod, x.numpy()), y)

    onnx_weights = _conv_weights(from_onnx(export_onnx(model, (x,), tmp_path / "p.onnx")))
    assert _zero_masks(onnx_weights) == _zero_masks(expected)


def test_orphan_orig_mask_pair_is_baked() -> None:
    """A weight_orig/weight_mask pair without its hook is still applied."""
    conv = nn.Conv2d(2, 4, 3, padding=1)
    mask = (torch.rand_like(conv.weight) < 0.5).float()
    orig = conv.weight.detach().clone()
    del conv._parameters["weight"]
    conv.register_parameter("weight_orig", nn.Parameter(orig))
    conv.register_buffer("weight_mask", mask)
    conv.weight = orig * mask  # what the hook would have computed

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = conv

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    mod = from_torch(Net(), (torch.randn(1, 2, 6, 6),))
    (weight,) = _conv_weights(mod)
    np.testing.assert_array_equal(weight == 0, (orig * mask).numpy() == 0)


# --------------------------------------------------------------------------- BN corner cases


class _BiasedConvBN(nn.Module):
    """Conv with its own bias before BN, and a BN that follows no conv at all."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.bn_alone = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn_alone(self.pool(torch.relu(self.bn(self.conv(x)))))


def test_biased_conv_bn_folds_and_lone_bn_decomposes() -> None:
    torch.manual_seed(0)
    model = _calibrate_bn(_BiasedConvBN())
    x = torch.randn(2, 3, 32, 32)
    mod = from_torch(model, (x,))
    assert not _calls(mod, "relax.nn.batch_norm")
    assert len(_calls(mod, "relax.add")) == 2  # folded conv bias + lone BN's shift
    with torch.no_grad():
        _assert_close(_run(mod, x.numpy()), model(x).numpy())


# --------------------------------------------------------------------------- ONNX errors


def test_from_onnx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        from_onnx(tmp_path / "nope.onnx")


def test_from_onnx_garbage_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\xff")
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        from_onnx(bad)


def test_from_onnx_invalid_model(tmp_path: Path) -> None:
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(onnx.ModelProto().SerializeToString())
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        from_onnx(empty)
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        from_onnx(onnx.ModelProto())


def _dynamic_batch_onnx(path: Path) -> tuple[nn.Module, torch.Tensor]:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    x = torch.randn(2, 3, 8, 8)
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}})
    return model, x


def test_from_onnx_dynamic_dims(tmp_path: Path) -> None:
    model, x = _dynamic_batch_onnx(tmp_path / "dyn.onnx")
    with pytest.raises(ValueError, match="dynamic dims.*input_shapes"):
        from_onnx(tmp_path / "dyn.onnx")
    with pytest.raises(ValueError, match="model's inputs are \\['x'\\]"):
        from_onnx(tmp_path / "dyn.onnx", input_shapes={"images": [2, 3, 8, 8]})
    mod = from_onnx(tmp_path / "dyn.onnx", input_shapes={"x": [2, 3, 8, 8]})
    with torch.no_grad():
        _assert_close(_run(mod, x.numpy()), model(x).numpy())
