"""The pruning plan: which layers ``prune`` prunes, to what, and how their masks are set.

A leaf of the pruning package (it imports no other pruning module but the mask and
pattern helpers), so the schedules, the sensitivity allocation and ``prune`` itself all
build on it without importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..sparse_format import MIN_MAC_REDUCTION, PatternSparseWeight, pack_pattern_weights
from ..targets import TargetPreset
from .masks import aligned_pattern_mask, apply_mask, group_energy
from .patterns import select_library

__all__ = ["ExampleInput", "PrunePlan", "apply_plan", "as_conv_weight", "conv_output_pixels", "dense_reason",
           "kernel_taps", "make_plan", "screen_plan", "set_mask"]

ExampleInput = torch.Tensor | Sequence[torch.Tensor]

# The "library" of a 1x1 conv: its only tap, so choosing channels is connectivity pruning.
_POINTWISE = torch.ones(1, 1, dtype=torch.bool)


def dense_reason(layer: nn.Conv2d | nn.Linear, min_in_channels: int, keep_pointwise: float = 1.0) -> str | None:
    """Why ``layer`` is left dense, or None when it gets pruned (3x3: pattern + connectivity,
    1x1 and Linear: connectivity)."""
    if isinstance(layer, nn.Linear):
        if layer.in_features < min_in_channels:
            return f"in_features={layer.in_features} < min_in_channels={min_in_channels} left dense"
        return None
    conv = layer
    kh, kw = conv.kernel_size
    if (kh, kw) == (1, 1) and keep_pointwise >= 1:
        return "kernel 1x1 left dense (keep_pointwise=1)"
    if (kh, kw) not in ((3, 3), (1, 1)):
        return f"kernel {kh}x{kw}: pattern pruning applies to 3x3 (and connectivity to 1x1)"
    if conv.groups != 1:
        kind = "depthwise" if conv.groups == conv.in_channels else "grouped"
        return f"groups={conv.groups} ({kind}) left dense"
    if conv.in_channels < min_in_channels:
        return f"in_channels={conv.in_channels} < min_in_channels={min_in_channels} (stem) left dense"
    return None


def conv_output_pixels(model: nn.Module, convs: dict[str, nn.Conv2d], example_input: ExampleInput) -> dict[str, int]:
    """Output pixels per image of each conv (summed over calls) from one eval-mode forward pass.

    Eval mode and no_grad so batch-norm running statistics are not disturbed; every
    module's training flag is restored afterwards.
    """
    pixels: dict[str, int] = {}

    def record(name: str):
        def hook(module: nn.Module, _inputs: object, out: torch.Tensor) -> None:
            # a conv's output pixels per image; a Linear's rows per sample (1 for [N, O])
            count = out[0].numel() // out.shape[-1] if isinstance(module, nn.Linear) else out.shape[-2] * out.shape[-1]
            pixels[name] = pixels.get(name, 0) + int(count)
        return hook

    handles = [conv.register_forward_hook(record(name)) for name, conv in convs.items()]
    modes = {module: module.training for module in model.modules()}
    inputs = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
    try:
        model.eval()
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    return pixels


@dataclass
class PrunePlan:
    """What ``prune`` decided before touching weights: eligible layers, library, keeps.

    The schedules reuse one plan for every mask they compute (iterative steps, ADMM
    projections), so the pattern library and per-layer ratios stay fixed while the
    weights move.
    """

    preset: TargetPreset
    pattern_k: int
    layers: dict[str, nn.Conv2d | nn.Linear]  # every conv (and Linear with keep_linear), model order
    reasons: dict[str, str | None]  # why a layer stays dense; None when it is pruned
    library: torch.Tensor  # [P, 9] bool
    keeps: dict[str, float]  # kept share of input channels per eligible layer
    # per layer: the last weight packed (as a float32 conv weight) and its packed form
    _packed: dict[str, tuple[torch.Tensor, PatternSparseWeight]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    @property
    def lanes(self) -> int:
        return self.preset.vector_width

    @property
    def eligible(self) -> list[str]:
        return [name for name, reason in self.reasons.items() if reason is None]

    def mask(self, name: str, weight: torch.Tensor, keep: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Aligned mask (weight's shape) and pattern ids ``[G, C]`` (-1: removed / no pattern)
        of layer ``name`` for ``weight`` (the projection onto the layer's sparsity set)."""
        keep = self.keeps[name] if keep is None else keep
        as_conv = as_conv_weight(weight)
        if as_conv.shape[2] * as_conv.shape[3] == 1:
            mask, ids = aligned_pattern_mask(as_conv, _POINTWISE, self.lanes, keep)
            return mask.reshape(weight.shape), torch.full_like(ids, -1)
        mask, ids = aligned_pattern_mask(as_conv, self.library, self.lanes, keep)
        return mask.reshape(weight.shape), ids

    def packed(self, name: str, weight: torch.Tensor) -> PatternSparseWeight:
        """Layer ``name``'s ``weight`` (masked or final) packed as the aligned kernel runs it.

        Packing is the costly step of both the mask check and the report, which usually
        see the same weight: the layer's last packing is reused while the values are
        equal (training in between changes them, and the weight is packed again).
        """
        weight = as_conv_weight(weight.detach()).to("cpu", torch.float32, copy=True)
        last = self._packed.get(name)
        if last is None or not torch.equal(last[0], weight):
            last = self._packed[name] = (weight, pack_pattern_weights(weight.numpy(), self.lanes))
        return last[1]


def make_plan(
    model: nn.Module, preset: TargetPreset, pattern_k: int, keep_kernels: float, num_patterns: int,
    min_in_channels: int, keep_pointwise: float | None, keep_linear: float | None,
) -> PrunePlan:
    """Eligible layers, their uniform keeps, and the library voted from the current weights."""
    lanes = preset.vector_width
    keep_pointwise = keep_kernels if keep_pointwise is None else keep_pointwise
    kinds = (nn.Conv2d, nn.Linear) if keep_linear is not None else (nn.Conv2d,)
    layers = {name: m for name, m in model.named_modules() if isinstance(m, kinds)}
    reasons = {name: dense_reason(layer, min_in_channels, keep_pointwise) for name, layer in layers.items()}
    eligible = [name for name, reason in reasons.items() if reason is None]
    energies = [group_energy(layers[name].weight, lanes) for name in eligible if kernel_taps(layers[name]) == 9]
    library = select_library(energies, pattern_k, num_patterns)
    keeps = {}
    for name in eligible:
        layer = layers[name]
        keeps[name] = keep_linear if isinstance(layer, nn.Linear) else (
            keep_pointwise if kernel_taps(layer) == 1 else keep_kernels)
    return PrunePlan(preset, pattern_k, layers, reasons, library, keeps)


def apply_plan(plan: PrunePlan, check: bool = True) -> dict[str, torch.Tensor]:
    """Mask every eligible layer per ``plan`` (multiplying any mask it already has).

    Returns the pattern ids of the layers pruned; a layer whose aligned mask would save
    less than ``MIN_MAC_REDUCTION`` gets its reason set in ``plan.reasons`` and stays
    unmasked (``check=False`` skips that test: the iterative schedule's early, mild steps
    after :func:`screen_plan` has judged the final keeps). Masks are computed from the
    effective weight, so zeros already there count as zeros.
    """
    pattern_ids: dict[str, torch.Tensor] = {}
    for name in plan.eligible:
        layer = plan.layers[name]
        mask, ids = plan.mask(name, layer.weight)
        if check and _too_little_saved(plan, name, layer, mask):
            continue
        set_mask(layer, mask)
        pattern_ids[name] = ids
    return pattern_ids


def screen_plan(plan: PrunePlan) -> None:
    """Set the reason of every eligible layer whose aligned mask at its keep would save less
    than ``MIN_MAC_REDUCTION`` (it then stays dense); no weight or mask changes."""
    for name in plan.eligible:
        layer = plan.layers[name]
        _too_little_saved(plan, name, layer, plan.mask(name, layer.weight)[0])


def _too_little_saved(plan: PrunePlan, name: str, layer: nn.Module, mask: torch.Tensor) -> bool:
    saved = plan.packed(name, layer.weight.detach() * mask).mac_reduction
    if saved >= MIN_MAC_REDUCTION:
        return False
    # e.g. fewer filters than lanes: padding lanes eat the gain
    plan.reasons[name] = (
        f"left dense: aligned pruning would issue only {saved:.2f}x fewer MACs "
        f"({layer.weight.shape[0]} filters in groups of {plan.lanes})")
    return True


def set_mask(layer: nn.Module, mask: torch.Tensor) -> None:
    """Mask ``layer.weight``: a new reparametrization, or the existing mask multiplied in place."""
    existing = getattr(layer, "weight_mask", None)
    if existing is None:
        apply_mask(layer, "weight", mask)
        return
    with torch.no_grad():
        existing.mul_(mask.to(existing.dtype))
        layer.weight = layer.weight_orig * existing  # what the hook computes at the next forward


def as_conv_weight(weight: torch.Tensor) -> torch.Tensor:
    """A Linear's ``[O, C]`` weight as the ``[O, C, 1, 1]`` of the 1x1 conv it equals."""
    return weight if weight.dim() == 4 else weight.reshape(*weight.shape, 1, 1)


def kernel_taps(layer: nn.Conv2d | nn.Linear) -> int:
    return 1 if isinstance(layer, nn.Linear) else layer.kernel_size[0] * layer.kernel_size[1]
