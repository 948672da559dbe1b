"""Vector-width aligned pattern + connectivity masks, kept applied the torch.nn.utils.prune way.

Alignment (the MCPruner idea): output filters are cut into groups of V consecutive
filters (V = the target's fp32 vector width; the last group is smaller when O % V != 0).
All filters of a group share one structure -- the same kept input channels and, per
kept channel, the same pattern -- so one vector register holds the weights of the V
filters for one (channel, tap) and the kernel needs no per-lane indices. Every group
keeps the same number of input channels, so groups carry equal work and threads can
be given groups without imbalance.

Masks live exactly like ``torch.nn.utils.prune`` masks (``weight_orig`` parameter,
``weight_mask`` buffer, forward pre-hook), so fine-tuning keeps pruned weights at zero
(their gradient is zero) and users' existing habits (``prune.remove``) keep working.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

__all__ = [
    "PatternPruningMethod",
    "aligned_pattern_mask",
    "apply_mask",
    "bake",
    "deepcopy_model",
    "group_energy",
    "kept_kernel_count",
    "load_pruned_state_dict",
]


def kept_kernel_count(in_channels: int, keep_kernels: float) -> int:
    """Input channels every filter group keeps: ``max(1, round(keep_kernels * C))``.

    Rounds half up (not Python's round-half-to-even) so that e.g. C=5, keep=0.5 keeps 3,
    the same direction for every C.
    """
    return min(in_channels, max(1, math.floor(keep_kernels * in_channels + 0.5)))


def group_energy(weight: torch.Tensor, lanes: int) -> torch.Tensor:
    """Per (filter group, input channel, tap) squared magnitude summed over the group's filters.

    ``weight`` is ``[O, C, KH, KW]``; returns float64 ``[ceil(O/lanes), C, KH*KW]`` on CPU.
    Missing lanes of the last group count as zeros.
    """
    o, c = weight.shape[:2]
    squared = weight.detach().to("cpu", torch.float64).reshape(o, c, -1).square()
    groups = -(-o // lanes)
    padded = squared.new_zeros(groups * lanes, c, squared.shape[2])
    padded[:o] = squared
    return padded.reshape(groups, lanes, c, -1).sum(dim=1)


def aligned_pattern_mask(
    weight: torch.Tensor, library: torch.Tensor, lanes: int, keep_kernels: float,
    energy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The aligned pattern + connectivity mask of one 3x3 conv weight.

    Per (group, input channel) the library pattern keeping the most group energy is
    chosen; per group the ``kept_kernel_count`` channels with the most energy kept
    under their chosen pattern survive (ties: lower channel index). Returns
    ``(mask, pattern_ids)``: ``mask`` has the weight's shape, dtype and device;
    ``pattern_ids`` is ``[G, C]`` int64, the library row per kept kernel, -1 where removed.
    ``energy``: ``group_energy(weight, lanes)`` when the caller already has it.
    """
    o, c, kh, kw = weight.shape
    if kh * kw != library.shape[1]:
        raise ValueError(f"weight kernel {kh}x{kw} does not match pattern taps {library.shape[1]}")
    if energy is None:
        energy = group_energy(weight, lanes)  # [G, C, 9]
    scores = energy @ library.to(torch.float64).T  # [G, C, P]
    best = scores.argmax(dim=2)  # first maximum on ties: deterministic
    best_score = scores.gather(2, best.unsqueeze(2)).squeeze(2)
    order = torch.argsort(best_score, dim=1, descending=True, stable=True)
    keep = torch.zeros_like(best_score, dtype=torch.bool)
    keep.scatter_(1, order[:, : kept_kernel_count(c, keep_kernels)], True)
    taps = library[best] & keep.unsqueeze(2)  # [G, C, 9]
    groups = taps.shape[0]
    mask = taps.unsqueeze(1).expand(groups, lanes, c, kh * kw).reshape(groups * lanes, c, kh, kw)[:o]
    pattern_ids = torch.where(keep, best, torch.full_like(best, -1))
    return mask.to(device=weight.device, dtype=weight.dtype), pattern_ids


class PatternPruningMethod(torch_prune.BasePruningMethod):
    """A ``torch.nn.utils.prune`` method whose mask is given (computed by :func:`aligned_pattern_mask`).

    Combined with an earlier torch pruning of the same tensor it multiplies masks, as
    torch's own methods do. PRUNING_TYPE is "global" because the mask covers the whole
    tensor: torch's PruningContainer then hands over the full tensor and previous mask
    (with "unstructured" it would pass only the still-unpruned entries, flattened).
    """

    PRUNING_TYPE = "global"

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = mask

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        if self.mask.shape != default_mask.shape:
            raise ValueError(f"mask shape {tuple(self.mask.shape)} != tensor shape {tuple(default_mask.shape)}")
        return default_mask * self.mask.to(device=default_mask.device, dtype=default_mask.dtype)


def apply_mask(module: nn.Module, name: str, mask: torch.Tensor) -> nn.Module:
    """Reparametrize ``module.<name>`` as ``<name>_orig * <name>_mask`` with a forward pre-hook."""
    PatternPruningMethod.apply(module, name, mask=mask)
    return module


def _is_pruning_pair(state_dict: dict[str, torch.Tensor], key: str) -> bool:
    return key.endswith("_mask") and (key[: -len("_mask")] + "_orig") in state_dict


def load_pruned_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = True) -> nn.Module:
    """Load a pruned model's state_dict (``*_orig`` / ``*_mask`` keys) into a freshly built model.

    A fresh model has plain ``weight`` parameters, so ``load_state_dict`` alone would
    reject the keys; the pruning reparametrization is first re-created from each
    ``*_mask`` buffer (tensors already reparametrized are left as they are), then
    everything is loaded. Works in place and returns ``model``, like ``load_state_dict``.
    """
    for key, mask in state_dict.items():
        if not _is_pruning_pair(state_dict, key):
            continue
        prefix, _, leaf = key.rpartition(".")
        name = leaf[: -len("_mask")]
        module = model.get_submodule(prefix)
        if not hasattr(module, name + "_mask"):
            apply_mask(module, name, mask)
    model.load_state_dict(state_dict, strict=strict)
    refresh_pruned_tensors(model)
    return model


def _pruning_hooks(module: nn.Module) -> list[torch_prune.BasePruningMethod]:
    return [h for h in module._forward_pre_hooks.values() if isinstance(h, torch_prune.BasePruningMethod)]


def refresh_pruned_tensors(model: nn.Module) -> None:
    # The pruned attribute (e.g. ``weight``) is a plain tensor recomputed by the hook at
    # each forward; recompute it now so it matches the loaded orig/mask before any forward.
    for module in model.modules():
        for hook in _pruning_hooks(module):
            setattr(module, hook._tensor_name, hook.apply_mask(module))


def deepcopy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works on pruned models.

    A pruned tensor (e.g. ``weight``) is a non-leaf ``orig * mask`` tensor, which
    ``copy.deepcopy`` refuses; it is detached for the copy (then restored) and the
    copy recomputes it from its own ``orig`` and ``mask``.
    """
    saved = []
    for module in model.modules():
        for hook in _pruning_hooks(module):
            name = hook._tensor_name
            saved.append((module, name, getattr(module, name)))
            setattr(module, name, getattr(module, name).detach())
    try:
        copied = copy.deepcopy(model)
    finally:
        for module, name, tensor in saved:
            setattr(module, name, tensor)
    refresh_pruned_tensors(copied)
    return copied


def bake(model: nn.Module) -> nn.Module:
    """A deep copy with every pruning mask applied permanently and the hooks removed.

    The copy has plain ``weight`` parameters holding zeros where pruned -- what
    ``torch.export`` / ONNX and the TVM pass (which reads structure from the values) need.
    Exporters would otherwise trace ``weight_orig * weight_mask`` as a runtime multiply
    and the compiler would see a dense weight. A ``<name>_orig`` / ``<name>_mask`` pair
    left without its hook (restored from a state dict by hand) is baked the same way.
    """
    baked = deepcopy_model(model)
    for module in baked.modules():
        for hook in _pruning_hooks(module):
            torch_prune.remove(module, hook._tensor_name)
        _bake_orphan_masks(module)
    return baked


def _bake_orphan_masks(module: nn.Module) -> None:
    """Replace a hook-less ``<name>_orig`` parameter + ``<name>_mask`` buffer by one parameter."""
    for pname, orig in list(module.named_parameters(recurse=False)):
        if not pname.endswith("_orig"):
            continue
        name = pname[: -len("_orig")]
        mask = getattr(module, name + "_mask", None)
        if mask is None:
            continue
        del module._parameters[pname]
        del module._buffers[name + "_mask"]
        if hasattr(module, name):
            delattr(module, name)
        module.register_parameter(name, nn.Parameter((orig * mask).detach()))
