"""The two obvious alternatives to aligned pattern pruning, at equal MACs (torch only).

* **Unstructured magnitude pruning** keeps, in every layer, exactly as many weights as
  our aligned kernel issues MACs there (so "equal MACs" means equal non-zeros), chosen
  freely by magnitude: the best accuracy a MAC budget can buy, with no speed-up on
  CPUs / GPUs because its zeros have no structure.
* **Filter (channel) pruning** removes whole output channels by L1 norm (the conv's
  filter and its BatchNorm scale and shift, so the channel is exactly zero), with one
  kept share for every conv but the stem, found by bisection so the network issues as
  few MACs as ours. Dense and fast, but coarse.

Both produce the same ``torch.nn.utils.prune``-style masks as :func:`~.api.prune`, so the
same fine-tuning loop (:func:`~.train.fit`) trains them.
"""

from __future__ import annotations

import torch
from torch import nn

from .plan import ExampleInput, conv_output_pixels
from .masks import apply_mask, deepcopy_model
from .report import PruneReport

__all__ = ["unstructured_like", "filter_prune", "live_conv_macs"]


def unstructured_like(model: nn.Module, report: PruneReport, inplace: bool = False) -> nn.Module:
    """Per layer of ``report`` that was pruned, keep the ``sparse_macs_per_pixel`` largest weights."""
    model = model if inplace else deepcopy_model(model)
    modules = dict(model.named_modules())
    for layer in report.pruned_layers:
        weight = modules[layer.name].weight.detach()
        keep = min(layer.sparse_macs_per_pixel, weight.numel())
        threshold_index = torch.topk(weight.abs().flatten(), keep).indices
        mask = torch.zeros(weight.numel(), dtype=weight.dtype)
        mask[threshold_index] = 1
        apply_mask(modules[layer.name], "weight", mask.reshape(weight.shape))
    return model


def _conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """Each conv directly followed (in registration order) by the BatchNorm of its outputs."""
    modules = list(model.modules())
    pairs = []
    for conv, bn in zip(modules, modules[1:]):
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels:
            pairs.append((conv, bn))
    return pairs


def _filter_masks(model: nn.Module, keep: float) -> None:
    """Mask the lowest-L1 output channels of every conv + BN pair but the first (the stem)."""
    for conv, bn in _conv_bn_pairs(model)[1:]:
        weight = conv.weight.detach()
        kept = max(1, round(keep * weight.shape[0]))
        channels = torch.topk(weight.abs().sum(dim=(1, 2, 3)), kept).indices
        alive = torch.zeros(weight.shape[0], dtype=weight.dtype)
        alive[channels] = 1
        apply_mask(conv, "weight", alive.view(-1, 1, 1, 1).expand_as(weight).clone())
        apply_mask(bn, "weight", alive.clone())
        apply_mask(bn, "bias", alive.clone())


@torch.no_grad()
def live_conv_macs(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """(dense, live) conv MACs per image: live counts only non-zero filters times input
    channels that are not exactly zero on ``example_input`` with activations bypassed
    (so removed channels count wherever the architecture routes them)."""
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    live_inputs: dict[str, int] = {}

    def hook(name: str):
        def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            live_inputs[name] = int((inputs[0].abs().sum(dim=(0, 2, 3)) > 0).sum())
        return record

    handles = [conv.register_forward_pre_hook(hook(name)) for name, conv in convs.items()]
    # Activations pass through unchanged while counting: a ReLU that happens to output
    # zeros on this batch is not a removed channel; a removed one is zero before it.
    activations = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    for act in activations:
        act.forward = _identity
    try:
        pixels = conv_output_pixels(model, convs, example_input)
    finally:
        for handle in handles:
            handle.remove()
        for act in activations:
            del act.forward
    dense = live = 0
    for name, conv in convs.items():
        o, c, kh, kw = conv.weight.shape
        filters = int((conv.weight.detach().abs().sum(dim=(1, 2, 3)) > 0).sum())
        per_group_inputs = live_inputs[name] // conv.groups if conv.groups > 1 else live_inputs[name]
        dense += o * c * kh * kw * pixels[name]
        live += filters * min(per_group_inputs, c) * kh * kw * pixels[name]
    return dense, live


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def filter_prune(model: nn.Module, ratio: float, example_input: ExampleInput, steps: int = 20) -> tuple[nn.Module, float]:
    """Filter-prune a copy of ``model`` to at least ``ratio``x fewer live conv MACs.

    ``example_input`` must be real data (a batch): liveness is measured on it. Returns
    ``(model, reduction reached)``; the kept share is the largest one reaching ``ratio``.
    """
    low, high = 0.0, 1.0  # kept share: high reaches the ratio? (checked below)
    best = None
    for _ in range(steps):
        keep = (low + high) / 2
        candidate = deepcopy_model(model)
        _filter_masks(candidate, keep)
        dense, live = live_conv_macs(candidate, example_input)
        if dense / max(live, 1) >= ratio:
            best, low = (candidate, dense / max(live, 1)), keep
        else:
            high = keep
    if best is None:
        raise ValueError(f"filter pruning cannot reach {ratio:g}x fewer conv MACs on this model")
    return best
