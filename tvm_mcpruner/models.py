"""CNN definitions used by the demo, the tests and the benchmarks (torch only).

torchvision from PyPI does not import beside the pinned torch (its ``torchvision::nms``
operator is missing), so the three
families the MCPruner / PatDNN papers evaluate -- VGG, ResNet, MobileNetV2 -- are
defined here with plain ``Conv2d`` / ``BatchNorm2d`` / ``ReLU`` / ``Linear`` / pooling
layers only.  Keeping to standard layers matters: the pruner walks ``nn.Conv2d`` modules
and both importers (torch.export, ONNX) map them to ``relax.nn.conv2d`` one to one.

Every model ends in adaptive pooling, so the same constructor serves 32x32 (CIFAR),
224x224 (ImageNet) and 28x28 one-channel (Fashion-MNIST, ``in_channels=1``) inputs.
Constructors are deterministic given the torch RNG state; seeding is the caller's job.
The layer layout follows torchvision so parameter counts match its published figures.
"""

from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor, nn

__all__ = [
    "vgg",
    "resnet",
    "mobilenet_v2",
    "get_model",
    "model_names",
    "VGG",
    "ResNet",
    "MobileNetV2",
]

# "M" = 2x2 max pool; numbers = 3x3 conv output channels (torchvision's cfgs A, B, D).
_VGG_CFGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def _scale(channels: int, width: float, divisor: int = 1) -> int:
    """Scale a channel count by ``width``; never below 1 (or ``divisor``), rounded to it.

    Rounding to a divisor keeps scaled MobileNet channel counts friendly to vector
    widths, as the reference implementation does.
    """
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    scaled = channels * width
    if divisor == 1:
        return max(1, int(round(scaled)))
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:  # do not round down by more than 10 %
        rounded += divisor
    return rounded


def _conv_bn_relu(
    cin: int,
    cout: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    batch_norm: bool = True,
    act: Callable[[], nn.Module] = lambda: nn.ReLU(inplace=True),
) -> list[nn.Module]:
    """Conv (bias only without BN, as BN makes it redundant) + optional BN + activation."""
    conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=not batch_norm)
    layers: list[nn.Module] = [conv]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(act())
    return layers


# --------------------------------------------------------------------------- VGG


class VGG(nn.Module):
    """VGG feature extractor + either a small CIFAR head or the full ImageNet head."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential, pool: nn.Module):
        super().__init__()
        self.features = features
        self.avgpool = pool
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(x.flatten(1))


def vgg(
    depth: int = 16,
    num_classes: int = 10,
    in_channels: int = 3,
    width: float = 1.0,
    batch_norm: bool = True,
    head: str = "small",
) -> VGG:
    """VGG-11/13/16 with channels scaled by ``width``.

    ``head="small"``: AdaptiveAvgPool(1) -> Linear(c, 512) -> ReLU -> Linear(512, classes),
    the usual CIFAR head (keeps tests and the demo light).  ``head="full"``: torchvision's
    AdaptiveAvgPool(7) -> 4096 -> 4096 -> classes head (with dropout, inert in eval mode),
    so parameter counts match the paper's VGG-16 (138 M).
    """
    if depth not in _VGG_CFGS:
        raise ValueError(f"VGG depth must be one of {sorted(_VGG_CFGS)}, got {depth}")
    layers: list[nn.Module] = []
    cin = in_channels
    for item in _VGG_CFGS[depth]:
        if item == "M":
            # ceil_mode: 28x28 inputs shrink 28-14-7-4-2-1 instead of dying at 0x0;
            # identical to floor mode on the even sizes of 32x32 and 224x224 inputs
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            continue
        cout = _scale(int(item), width)
        layers += _conv_bn_relu(cin, cout, 3, batch_norm=batch_norm)
        cin = cout
    if head == "small":
        hidden = 512
        pool: nn.Module = nn.AdaptiveAvgPool2d(1)
        classifier = nn.Sequential(
            nn.Linear(cin, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
        )
    elif head == "full":
        hidden = _scale(4096, width)
        pool = nn.AdaptiveAvgPool2d(7)
        classifier = nn.Sequential(
            nn.Linear(cin * 49, hidden), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(hidden, num_classes),
        )
    else:
        raise ValueError(f"head must be 'small' or 'full', got {head!r}")
    return VGG(nn.Sequential(*layers), classifier, pool)


# --------------------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
    """Two 3x3 convs + identity (or 1x1 conv + BN projection) shortcut; ResNet-18/34."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here, as torchvision v1.5), 1x1 expand x4; ResNet-50."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.downsample(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    """Identity when shapes agree, else a strided 1x1 conv + BN projection."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


_RESNET_CFGS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], Sequence[int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """Stem -> four stages -> global average pool -> Linear."""

    def __init__(self, stem: nn.Sequential, stages: nn.Sequential, features: int, classes: int):
        super().__init__()
        self.stem = stem
        self.layers = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(features, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.layers(self.stem(x)))
        return self.fc(x.flatten(1))


def _resnet_stem(in_channels: int, cout: int, stem: str) -> nn.Sequential:
    """ImageNet: 7x7/2 conv + 3x3/2 max pool; CIFAR: one 3x3/1 conv (keeps 32x32 detail)."""
    if stem == "imagenet":
        return nn.Sequential(
            nn.Conv2d(in_channels, cout, 7, 2, 3, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
        )
    if stem == "cifar":
        return nn.Sequential(
            nn.Conv2d(in_channels, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )
    raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")


def resnet(
    depth: int = 18,
    num_classes: int = 10,
    in_channels: int = 3,
    width: float = 1.0,
    stem: str = "imagenet",
) -> ResNet:
    """ResNet-18/34 (BasicBlock) or ResNet-50 (Bottleneck) with channels scaled by ``width``."""
    if depth not in _RESNET_CFGS:
        raise ValueError(f"ResNet depth must be one of {sorted(_RESNET_CFGS)}, got {depth}")
    block, counts = _RESNET_CFGS[depth]
    cin = _scale(64, width)
    stem_mod = _resnet_stem(in_channels, cin, stem)
    stages: list[nn.Module] = []
    for i, count in enumerate(counts):
        planes = _scale(64 * 2**i, width)
        for j in range(count):
            stride = 2 if (i > 0 and j == 0) else 1
            stages.append(block(cin, planes, stride))
            cin = planes * block.expansion
    return ResNet(stem_mod, nn.Sequential(*stages), cin, num_classes)


# --------------------------------------------------------------------------- MobileNetV2

# (expansion t, output channels c, repeats n, first stride s), as in the paper's Table 2.
_MBV2_CFG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _relu6() -> nn.Module:
    return nn.ReLU6(inplace=True)


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t=1) -> 3x3 depthwise -> 1x1 linear project (+ residual)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += _conv_bn_relu(cin, hidden, 1, act=_relu6)
        layers += _conv_bn_relu(hidden, hidden, 3, stride, groups=hidden, act=_relu6)
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """Stem conv -> inverted residual stages -> 1x1 conv to 1280 -> pool -> Linear."""

    def __init__(self, features: nn.Sequential, last: int, num_classes: int):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(x.flatten(1))


def mobilenet_v2(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> MobileNetV2:
    """MobileNetV2 (ReLU6, depthwise groups=C); channels scaled by ``width``, rounded to 8.

    The stem is stride 2 as in the paper, so at 32x32 the last stage sees 1x1 maps; the
    adaptive pool makes that work unchanged.
    """
    cin = _scale(32, width, 8)
    last = _scale(1280, max(1.0, width), 8)
    layers: list[nn.Module] = _conv_bn_relu(in_channels, cin, 3, 2, act=_relu6)
    for t, c, n, s in _MBV2_CFG:
        cout = _scale(c, width, 8)
        for i in range(n):
            layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
            cin = cout
    layers += _conv_bn_relu(cin, last, 1, act=_relu6)
    return MobileNetV2(nn.Sequential(*layers), last, num_classes)


# --------------------------------------------------------------------------- registry

def _with_defaults(build: Callable[..., nn.Module], **defaults: object) -> Callable[..., nn.Module]:
    """``build`` with default keyword arguments that callers may still override."""
    return lambda **kw: build(**{**defaults, **kw})


# Narrow variants for small images (28x28 Fashion-MNIST, 32x32 CIFAR): a quarter of the
# channels (VGG: 16..128, ResNet: 16..128), CIFAR stem for ResNet (no early downsampling).
# The accuracy benchmark trains these on 2 CPU cores, so their cost is a design constraint.
_SMALL_DEFAULTS = {"width": 0.25, "in_channels": 1}

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "vgg11_small": _with_defaults(lambda **kw: vgg(11, **kw), **_SMALL_DEFAULTS),
    "resnet18_small": _with_defaults(lambda **kw: resnet(18, **kw), stem="cifar", **_SMALL_DEFAULTS),
    "vgg11": lambda **kw: vgg(11, **kw),
    "vgg13": lambda **kw: vgg(13, **kw),
    "vgg16": lambda **kw: vgg(16, **kw),
    "resnet18": lambda **kw: resnet(18, **kw),
    "resnet34": lambda **kw: resnet(34, **kw),
    "resnet50": lambda **kw: resnet(50, **kw),
    "mobilenet_v2": mobilenet_v2,
}


def model_names() -> list[str]:
    """Names accepted by :func:`get_model` (for CLI choices and error messages)."""
    return sorted(_REGISTRY)


def get_model(name: str, **kw: object) -> nn.Module:
    """Build a model by name, e.g. ``get_model("resnet18", width=0.25, stem="cifar")``.

    Keyword arguments go to the family's constructor (``num_classes``, ``in_channels``,
    ``width``, plus ``head``/``batch_norm`` for VGG and ``stem`` for ResNet). The
    ``*_small`` names are narrow 28x28/32x32 variants (width 0.25, one input channel and
    the CIFAR stem by default; any of these can be overridden).
    """
    # spelling-tolerant: "VGG-16", "resnet18-small", "mobilenetv2" find their entries
    by_bare_name = {k.replace("_", ""): k for k in _REGISTRY}
    key = by_bare_name.get(name.lower().replace("-", "").replace("_", ""), name)
    if key not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
    return _REGISTRY[key](**kw)
