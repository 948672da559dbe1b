"""The narrow 28x28 / 32x32 models the accuracy benchmark trains."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tvm_mcpruner.models import get_model


@pytest.mark.parametrize("name", ["vgg11_small", "resnet18-small", "VGG11_Small"])
def test_small_models_take_fashion_mnist_by_default(name):
    model = get_model(name).eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].in_channels == 1 and max(c.out_channels for c in convs) == 128
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_small_model_defaults_can_be_overridden():
    model = get_model("resnet18_small", in_channels=3, width=0.5, num_classes=7).eval()
    assert model.stem[0].in_channels == 3 and model.stem[0].kernel_size == (3, 3)
    assert model.fc.in_features == 256
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)
