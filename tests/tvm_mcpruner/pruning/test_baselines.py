"""The equal-MAC alternatives: unstructured magnitude and filter pruning."""

from __future__ import annotations

import torch

from tvm_mcpruner.models import get_model
from tvm_mcpruner.pruning import prune
from tvm_mcpruner.pruning.baselines import filter_prune, live_conv_macs, unstructured_like


def model_and_input():
    torch.manual_seed(0)
    return get_model("vgg11_small").eval(), torch.randn(8, 1, 28, 28)


def test_unstructured_keeps_as_many_weights_as_we_issue_macs():
    model, x = model_and_input()
    _, report = prune(model, target="host", keep_kernels=0.25, example_input=x[:1])
    other = unstructured_like(model, report)
    modules = dict(other.named_modules())
    for layer in report.pruned_layers:
        weight = modules[layer.name].weight
        assert int((weight != 0).sum()) == layer.sparse_macs_per_pixel
        kept = weight[weight != 0].abs().min()
        assert kept >= modules[layer.name].weight_orig[weight == 0].abs().max(), "largest magnitudes kept"


def test_filter_pruning_reaches_the_ratio_with_whole_channels():
    model, x = model_and_input()
    pruned, reached = filter_prune(model, 4.0, x)
    dense, live = live_conv_macs(pruned, x)
    assert reached >= 4.0 and dense / live == reached
    convs = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert not hasattr(convs[0], "weight_mask"), "the stem keeps its filters"
    for conv in convs[1:]:
        rows = conv.weight.detach().flatten(1).abs().sum(dim=1)
        per_row_zero = (conv.weight.detach().flatten(1) == 0).all(dim=1)
        assert ((rows == 0) == per_row_zero).all() and per_row_zero.any()
    with torch.no_grad():
        features = pruned.features[:7](x)  # conv 16->32 after BN + ReLU
    removed = convs[1].weight_mask.flatten(1).sum(dim=1) == 0
    assert (features[:, removed] == 0).all(), "a removed channel is exactly zero (BN shift masked too)"


def test_live_macs_of_a_dense_model_equal_dense():
    model, x = model_and_input()
    dense, live = live_conv_macs(model, x)
    assert dense == live > 0
