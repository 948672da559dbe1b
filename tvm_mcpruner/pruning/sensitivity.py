"""Per-layer keep ratios from one global conv-MAC reduction target, by layer sensitivity.

A global target ("8x fewer conv multiply-adds") says nothing about *where* to cut.
Layers differ: the wide late layers hold most MACs and tolerate heavy pruning, early
layers are small and fragile. The allocation here is greedy over discrete keep levels:

1. every eligible layer starts with all its kernels kept (only its pattern applied);
2. each layer's *sensitivity* is measured at every keep level -- the loss increase on
   one batch of training data with that layer alone pruned to that level, or, without
   data, the share of the layer's weight energy the aligned mask removes;
3. repeatedly lower the keep of the layer whose next level costs the least sensitivity
   per MAC saved, until the whole model issues ``dense / ratio`` MACs or less.

MACs are counted as the aligned kernel issues them (groups of V filters, the padding
lanes of a short last group included) times each layer's output pixels, so the target
refers to the same number the report prints. Layers left dense (the RGB / grey stem,
depthwise convs) count with their full MACs; the classifier counts only when it is
pruned (``keep_linear``), as the report does.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .masks import kept_kernel_count
from .plan import ExampleInput, PrunePlan, conv_output_pixels

__all__ = ["KEEP_LEVELS", "allocate_keeps", "issued_macs_per_pixel", "lowest_keep_level", "sensitivity_table"]

# Kept shares of input channels a layer may get. 1/8 is the floor: single-layer
# sensitivities do not see how cuts compound, and with less a narrow layer keeps two to
# four channels, which costs more accuracy than the MACs saved elsewhere are worth
# (benchmarks/results/accuracy.md).
KEEP_LEVELS = (1.0, 0.875, 0.75, 0.625, 0.5, 0.4375, 0.375, 0.3125, 0.25, 0.1875, 0.125)


def issued_macs_per_pixel(weight_shape: torch.Size | tuple[int, ...], lanes: int, pattern_k: int, keep: float) -> int:
    """MACs per output pixel the aligned kernel issues for a layer pruned to ``keep``."""
    o, c = weight_shape[:2]
    taps = pattern_k if len(weight_shape) == 4 and weight_shape[2] * weight_shape[3] == 9 else 1
    groups = -(-o // lanes)
    return groups * lanes * kept_kernel_count(c, keep) * taps


def _dense_macs_per_pixel(layer: nn.Module) -> int:
    return int(layer.weight.numel())


def sensitivity_table(
    model: nn.Module, plan: PrunePlan, batch: tuple[torch.Tensor, torch.Tensor] | None,
) -> dict[str, list[float]]:
    """Per eligible layer, its sensitivity at each of :data:`KEEP_LEVELS` (non-decreasing).

    With ``batch``: cross-entropy on it with only that layer masked, minus the unpruned
    loss. Without: the share of the layer's squared weights the mask removes.
    """
    base_loss = _loss(model, batch) if batch is not None else 0.0
    table = {}
    for name in plan.eligible:
        layer = plan.layers[name]
        scores = []
        for keep in KEEP_LEVELS:
            mask, _ = plan.mask(name, layer.weight, keep)
            if batch is None:
                weight = layer.weight.detach()
                scores.append(float(1 - (weight * mask).square().sum() / weight.square().sum().clamp_min(1e-30)))
            else:
                scores.append(_masked_loss(model, layer, mask, batch) - base_loss)
        # A noisy batch can make a smaller keep look harmless; more pruning never helps.
        table[name] = torch.tensor(scores).cummax(0).values.tolist()
    return table


@torch.no_grad()
def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    images, labels = batch
    was_training = model.training
    model.eval()
    try:
        return float(nn.functional.cross_entropy(model(images), labels))
    finally:
        model.train(was_training)


@torch.no_grad()
def _masked_loss(model: nn.Module, layer: nn.Module, mask: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    # A reparametrized layer recomputes ``weight`` from ``weight_orig`` at each forward.
    param = getattr(layer, "weight_orig", None)
    param = layer.weight if param is None else param
    saved = param.detach().clone()
    param.mul_(mask)
    try:
        return _loss(model, batch)
    finally:
        param.copy_(saved)


def allocate_keeps(
    model: nn.Module, plan: PrunePlan, ratio: float,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None, example_input: ExampleInput | None = None,
    min_keep: float | None = None,
) -> dict[str, float]:
    """Keeps per eligible layer reaching ``ratio``x fewer issued conv MACs (module docstring).

    No layer goes below the lowest of :data:`KEEP_LEVELS` that is ``>= min_keep`` (default:
    the lowest level; a higher floor spreads the cut more evenly). Raises ``ValueError`` when even that
    level everywhere cannot reach ``ratio``.
    """
    floor = lowest_keep_level(min_keep)

    pixels = conv_output_pixels(model, plan.layers, example_input) if example_input is not None else {}
    scale = {name: pixels.get(name, 1) for name in plan.layers}
    level = {name: 0 for name in plan.eligible}

    def layer_macs(name: str, index: int) -> int:
        keep = KEEP_LEVELS[index]
        return issued_macs_per_pixel(plan.layers[name].weight.shape, plan.lanes, plan.pattern_k, keep) * scale[name]

    fixed = sum(_dense_macs_per_pixel(layer) * scale[name] for name, layer in plan.layers.items()
                if name not in level)
    dense = sum(_dense_macs_per_pixel(layer) * scale[name] for name, layer in plan.layers.items())
    budget = dense / ratio
    lowest = fixed + sum(layer_macs(name, floor) for name in level)
    if lowest > budget:
        raise ValueError(
            f"ratio {ratio:g} is out of reach: keeping {KEEP_LEVELS[floor]:g} of every prunable layer's "
            f"kernels gives {dense / max(lowest, 1):.2f}x (dense layers: {fixed / dense:.1%} of the MACs)")
    batch = next(iter(data), None) if data is not None else None
    if data is not None and batch is None:
        raise ValueError("data holds no batch: give an iterable of (images, labels) batches, or data=None")
    table = sensitivity_table(model, plan, batch)
    total = fixed + sum(layer_macs(name, 0) for name in level)
    while total > budget:
        name = min(
            (n for n in level if level[n] < floor),
            key=lambda n: _cost_per_mac(table[n], level[n], layer_macs(n, level[n]) - layer_macs(n, level[n] + 1)),
        )
        total -= layer_macs(name, level[name]) - layer_macs(name, level[name] + 1)
        level[name] += 1
    return {name: KEEP_LEVELS[index] for name, index in level.items()}


def lowest_keep_level(min_keep: float | None) -> int:
    """Index in :data:`KEEP_LEVELS` of the lowest level ``>= min_keep`` (None: the lowest level)."""
    if min_keep is None:
        return len(KEEP_LEVELS) - 1
    if isinstance(min_keep, bool) or not isinstance(min_keep, (int, float)) or not KEEP_LEVELS[-1] <= min_keep <= 1:
        raise ValueError(f"min_layer_keep must be a number in [{KEEP_LEVELS[-1]:g}, 1], got {min_keep!r}")
    return max(i for i, keep in enumerate(KEEP_LEVELS) if keep >= min_keep - 1e-12)


def _cost_per_mac(scores: list[float], index: int, saved: int) -> float:
    if saved <= 0:  # the level rounds to the same channel count: free to take
        return 0.0 if scores[index + 1] <= scores[index] else float("inf")
    return (scores[index + 1] - scores[index]) / saved
