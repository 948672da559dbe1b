"""Model definitions: output shapes at CIFAR / ImageNet / MNIST sizes, torchvision sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tvm_mcpruner import models
from tvm_mcpruner.models import get_model, mobilenet_v2, model_names, resnet, vgg

SMALL = [
    ("vgg11", {"width": 0.25}),
    ("vgg16", {"width": 0.125}),
    ("vgg16", {"width": 0.125, "head": "full"}),
    ("resnet18", {"width": 0.25}),
    ("resnet18", {"width": 0.25, "stem": "cifar"}),
    ("resnet50", {"width": 0.125}),
    ("mobilenet_v2", {"width": 0.35}),
]


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,kw", SMALL, ids=lambda v: str(v))
@pytest.mark.parametrize("size", [32, 224])
def test_output_shape(name: str, kw: dict, size: int) -> None:
    torch.manual_seed(0)
    model = get_model(name, num_classes=7, **kw).eval()
    batch = 2 if size == 32 else 1  # keep the 224x224 forward passes cheap
    with torch.no_grad():
        y = model(torch.randn(batch, 3, size, size))
    assert y.shape == (batch, 7)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["vgg11", "resnet18", "mobilenet_v2"])
def test_one_channel_28x28(name: str) -> None:
    """Fashion-MNIST shaped input works thanks to in_channels and adaptive pooling."""
    model = get_model(name, in_channels=1, width=0.25).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 28, 28)).shape == (1, 10)


@pytest.mark.parametrize(
    "build,expected",
    [
        (lambda: resnet(18, num_classes=1000), 11.69e6),
        (lambda: resnet(50, num_classes=1000), 25.56e6),
        (lambda: vgg(16, num_classes=1000, head="full"), 138.4e6),
        (lambda: mobilenet_v2(num_classes=1000), 3.50e6),
    ],
    ids=["resnet18", "resnet50", "vgg16", "mobilenet_v2"],
)
def test_parameter_count_matches_torchvision(build, expected: float) -> None:
    """Built only (no forward pass), counted, compared with torchvision's published sizes."""
    assert abs(_params(build()) - expected) <= 0.02 * expected


def test_layers_are_standard() -> None:
    """The pruner and both importers see plain Conv2d / BatchNorm2d / ReLU layers only."""
    model = resnet(18, width=0.25)
    kinds = {type(m) for m in model.modules()}
    assert nn.Conv2d in kinds and nn.BatchNorm2d in kinds and nn.ReLU in kinds
    assert models.Bottleneck in {type(m) for m in resnet(50, width=0.125).modules()}


def test_mobilenet_v2_structure() -> None:
    model = mobilenet_v2(width=1.0)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [c for c in convs if c.groups > 1]
    assert depthwise and all(c.groups == c.in_channels == c.out_channels for c in depthwise)
    assert any(isinstance(m, nn.ReLU6) for m in model.modules())
    blocks = [m for m in model.modules() if isinstance(m, models.InvertedResidual)]
    assert len(blocks) == 17 and sum(b.use_residual for b in blocks) == 10


def test_resnet_downsample_shortcut() -> None:
    model = resnet(18, width=0.25)
    projections = [b.downsample for b in model.layers if not isinstance(b.downsample, nn.Identity)]
    assert len(projections) == 3  # first block of stages 2, 3, 4
    for proj in projections:
        conv = proj[0]
        assert conv.kernel_size == (1, 1) and conv.stride == (2, 2)
        assert isinstance(proj[1], nn.BatchNorm2d)


def test_stems() -> None:
    assert resnet(18, stem="imagenet").stem[0].kernel_size == (7, 7)
    assert resnet(18, stem="cifar").stem[0].kernel_size == (3, 3)
    with pytest.raises(ValueError, match="stem"):
        resnet(18, stem="bogus")


def test_vgg_width_and_batch_norm() -> None:
    convs = [m for m in vgg(16, width=0.25).modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and convs[0].out_channels == 16 and convs[-1].out_channels == 128
    assert not any(isinstance(m, nn.BatchNorm2d) for m in vgg(11, batch_norm=False).modules())
    with pytest.raises(ValueError, match="head"):
        vgg(11, head="huge")


def test_deterministic_given_seed() -> None:
    torch.manual_seed(3)
    a = get_model("resnet18", width=0.25).state_dict()
    torch.manual_seed(3)
    b = get_model("resnet18", width=0.25).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_get_model_names_and_errors() -> None:
    for name in ["vgg11", "vgg16", "resnet18", "resnet50", "mobilenet_v2"]:
        assert name in model_names()
    assert isinstance(get_model("ResNet-18", width=0.25), models.ResNet)
    with pytest.raises(ValueError, match="known models: .*resnet18"):
        get_model("alexnet")
    with pytest.raises(ValueError, match="depth"):
        resnet(101)
