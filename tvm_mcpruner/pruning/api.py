"""``prune``: pattern + connectivity pruning of a torch CNN, aligned to a target's vector width."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..sparse_format import MIN_MAC_REDUCTION, pack_pattern_weights
from ..targets import TargetPreset, get_preset
from .masks import aligned_pattern_mask, apply_mask, deepcopy_model, group_energy, kept_kernel_count
from .patterns import select_library
from .report import LayerReport, PruneReport, dense_layer_report, pruned_layer_report

__all__ = ["prune"]

ExampleInput = torch.Tensor | Sequence[torch.Tensor]

# The "library" of a 1x1 conv: its only tap, so choosing channels is connectivity pruning.
_POINTWISE = torch.ones(1, 1, dtype=torch.bool)


def _check_fraction(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{name} must be a fraction in (0, 1], got {value!r}")


def _check_args(
    model: nn.Module, target: str | TargetPreset, pattern_k: int, keep_kernels: float,
    num_patterns: int, min_in_channels: int, keep_pointwise: float | None, keep_linear: float | None,
) -> TargetPreset:
    """Fail early with a message naming the bad argument (the preset lookup names unknown targets)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(pattern_k, bool) or not isinstance(pattern_k, int) or not 1 <= pattern_k <= 9:
        raise ValueError(f"pattern_k must be an int in 1..9 (taps kept of a 3x3 kernel), got {pattern_k!r}")
    _check_fraction("keep_kernels", keep_kernels)
    for name, value in (("keep_pointwise", keep_pointwise), ("keep_linear", keep_linear)):
        if value is not None:
            _check_fraction(name, value)
    if isinstance(num_patterns, bool) or not isinstance(num_patterns, int) or num_patterns < 1:
        raise ValueError(f"num_patterns must be an int >= 1, got {num_patterns!r}")
    if isinstance(min_in_channels, bool) or not isinstance(min_in_channels, int) or min_in_channels < 1:
        raise ValueError(f"min_in_channels must be an int >= 1, got {min_in_channels!r}")
    return get_preset(target)


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


def prune(
    model: nn.Module,
    target: str | TargetPreset = "host",
    pattern_k: int = 4,
    keep_kernels: float = 0.5,
    num_patterns: int = 8,
    *,
    inplace: bool = False,
    min_in_channels: int = 4,
    keep_pointwise: float | None = None,
    keep_linear: float | None = None,
    example_input: ExampleInput | None = None,
) -> tuple[nn.Module, PruneReport]:
    """Pattern- and connectivity-prune every eligible conv, aligned to the target's vector width.

    Eligible: ``nn.Conv2d`` with ``groups == 1``, ``in_channels >= min_in_channels`` and
    a 3x3 kernel (pattern + connectivity pruning) or a 1x1 kernel (connectivity pruning:
    whole input channels per filter group; ``keep_pointwise`` sets their kept share,
    default ``keep_kernels``, 1 leaves them dense). The rest stay dense and are listed
    in the report with the reason. ``nn.Linear`` layers get connectivity pruning (kept
    input features per group of V output features) only when ``keep_linear`` is given;
    by default classifiers stay as they are and are not listed. One pattern library of ``num_patterns``
    ``pattern_k``-tap patterns is chosen for the whole model from its 3x3 layers (see
    :mod:`.patterns`); each group of V consecutive filters (V = preset vector width)
    shares kept channels and patterns, and keeps ``max(1, round(keep * C))`` input
    channels (see :mod:`.masks`).

    Masks stay applied as ``torch.nn.utils.prune`` reparametrizations (fine-tune freely;
    :func:`~.masks.bake` before export). With ``inplace=False`` the model is deep-copied
    first. ``example_input`` (optional) makes the report count MACs per image instead
    of per output pixel.
    """
    preset = _check_args(
        model, target, pattern_k, keep_kernels, num_patterns, min_in_channels, keep_pointwise, keep_linear
    )
    if not inplace:
        model = deepcopy_model(model)
    lanes = preset.vector_width
    keep_pointwise = keep_kernels if keep_pointwise is None else keep_pointwise
    kinds = (nn.Conv2d, nn.Linear) if keep_linear is not None else (nn.Conv2d,)
    convs = {name: m for name, m in model.named_modules() if isinstance(m, kinds)}
    reasons = {name: dense_reason(conv, min_in_channels, keep_pointwise) for name, conv in convs.items()}
    eligible = [name for name, reason in reasons.items() if reason is None]
    energies = {name: group_energy(convs[name].weight, lanes) for name in eligible}
    library = select_library(
        [e for name, e in energies.items() if _taps(convs[name]) == 9], pattern_k, num_patterns
    )

    layers: list[LayerReport] = []
    usage = torch.zeros(len(library), dtype=torch.int64)
    for name, conv in convs.items():
        if reasons[name] is not None:
            layers.append(dense_layer_report(name, conv.weight, reasons[name]))
            continue
        weight = _as_conv_weight(conv.weight)
        if _taps(conv) == 1:
            keep = keep_linear if isinstance(conv, nn.Linear) else keep_pointwise
            mask, pattern_ids = aligned_pattern_mask(weight, _POINTWISE, lanes, keep, energies[name])
            pattern_ids = torch.full_like(pattern_ids, -1)  # no pattern: a kept channel is one tap
        else:
            keep = keep_kernels
            mask, pattern_ids = aligned_pattern_mask(weight, library, lanes, keep, energies[name])
        saved = _issued_mac_reduction(weight.detach() * mask, lanes)
        if saved < MIN_MAC_REDUCTION:  # e.g. fewer filters than lanes: padding lanes eat the gain
            layers.append(dense_layer_report(name, conv.weight, (
                f"left dense: aligned pruning would issue only {saved:.2f}x fewer MACs "
                f"({weight.shape[0]} filters in groups of {lanes})")))
            continue
        if _taps(conv) == 9:
            usage += torch.bincount(pattern_ids[pattern_ids >= 0], minlength=len(library))
        apply_mask(conv, "weight", mask.reshape(conv.weight.shape))
        kept = kept_kernel_count(weight.shape[1], keep)
        layers.append(pruned_layer_report(name, conv.weight, lanes, pattern_ids, kept))

    report = PruneReport(
        target=preset.name, vector_width=lanes, pattern_k=pattern_k, keep_kernels=float(keep_kernels),
        num_patterns=num_patterns,
        library=tuple(tuple(int(t) for t in row.nonzero().flatten().tolist()) for row in library),
        layers=layers, library_usage=tuple(int(n) for n in usage.tolist()),
    )
    if example_input is not None:
        _count_pixels(model, convs, example_input, report)
    return model, report


def _as_conv_weight(weight: torch.Tensor) -> torch.Tensor:
    """A Linear's ``[O, C]`` weight as the ``[O, C, 1, 1]`` of the 1x1 conv it equals."""
    return weight if weight.dim() == 4 else weight.reshape(*weight.shape, 1, 1)


def _taps(layer: nn.Conv2d | nn.Linear) -> int:
    return 1 if isinstance(layer, nn.Linear) else layer.kernel_size[0] * layer.kernel_size[1]


def _issued_mac_reduction(weight: torch.Tensor, lanes: int) -> float:
    """Dense over issued MACs of ``weight`` as the aligned kernel would run it."""
    return pack_pattern_weights(weight.to("cpu", torch.float32).numpy(), lanes).mac_reduction


def _count_pixels(model: nn.Module, convs: dict[str, nn.Conv2d], example_input: ExampleInput, report: PruneReport) -> None:
    pixels = conv_output_pixels(model, convs, example_input)
    shape = tuple(example_input.shape) if isinstance(example_input, torch.Tensor) else None
    report.macs_basis = "per image" + (f", input {'x'.join(map(str, shape))}" if shape else "")
    for layer in report.layers:
        layer.output_pixels = pixels.get(layer.name)
        if layer.output_pixels is None:
            layer.reason += ("; " if layer.reason else "") + "not run by example_input (0 MACs counted)"
