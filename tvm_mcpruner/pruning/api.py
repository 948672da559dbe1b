"""``prune``: pattern + connectivity pruning of a torch CNN, aligned to a target's vector width."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import nn

from ..sparse_format import MIN_MAC_REDUCTION
from ..targets import TargetPreset, get_preset
from .masks import deepcopy_model, kept_kernel_count
from .plan import ExampleInput, PrunePlan, as_conv_weight, conv_output_pixels, kernel_taps, make_plan
from .report import LayerReport, PruneReport, dense_layer_report, pruned_layer_report
from .schedules import SCHEDULES, Batches, run_schedule
from .sensitivity import allocate_keeps, lowest_keep_level
from .train import TrainConfig

__all__ = ["build_report", "prune"]

def _real(value: object) -> float | None:
    """``value`` as a float when it is a real number (numpy scalars too, bools not); else None."""
    if isinstance(value, (bool, str, bytes)) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _check_fraction(name: str, value: object) -> None:
    number = _real(value)
    if number is None or not 0 < number <= 1:  # NaN fails the comparison too
        raise ValueError(f"{name} must be a fraction in (0, 1], got {value!r}")


def _check_args(
    model: nn.Module, target: str | TargetPreset, pattern_k: int, keep_kernels: float,
    num_patterns: int, min_in_channels: int, keep_pointwise: float | None, keep_linear: float | None,
) -> TargetPreset:
    """Fail early with a message naming the bad argument (the preset lookup names unknown targets)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError("model is a TorchScript module (torch.jit): its layers cannot be masked; prune the "
                        "eager nn.Module it was scripted from, then script the pruned one")
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


def build_report(plan: PrunePlan, pattern_ids: dict[str, torch.Tensor], pattern_k: int, keep_kernels: float,
                 num_patterns: int) -> PruneReport:
    """The report of the model's current (masked) weights under ``plan``."""
    layers: list[LayerReport] = []
    usage = torch.zeros(len(plan.library), dtype=torch.int64)
    for name, layer in plan.layers.items():
        if name not in pattern_ids:
            layers.append(_unchanged_layer_report(plan, name, layer))
            continue
        ids = pattern_ids[name]
        if kernel_taps(layer) == 9:
            usage += torch.bincount(ids[ids >= 0], minlength=len(plan.library))
        packed = plan.packed(name, layer.weight)
        # the channels the weights keep: fewer than this run's keep when a mask was already there
        kept = min(kept_kernel_count(as_conv_weight(layer.weight).shape[1], plan.keeps[name]),
                   int(np.diff(packed.group_ptr).max(initial=0)))
        layers.append(pruned_layer_report(name, layer.weight, packed, ids, kept))
    return PruneReport(
        target=plan.preset.name, vector_width=plan.lanes, pattern_k=pattern_k, keep_kernels=float(keep_kernels),
        num_patterns=num_patterns,
        library=tuple(tuple(int(t) for t in row.nonzero().flatten().tolist()) for row in plan.library),
        layers=layers, library_usage=tuple(int(n) for n in usage.tolist()),
    )


def _unchanged_layer_report(plan: PrunePlan, name: str, layer: nn.Module) -> LayerReport:
    """A layer this run left as it was: dense, unless an earlier pruning left it aligned
    sparsity that the compiler will run sparse (its weights say so, as they tell the pass)."""
    reason = plan.reasons[name] or "left dense"
    weight = layer.weight
    if getattr(layer, "groups", 1) != 1 or kernel_taps(layer) not in (1, 9) or not bool((weight == 0).any()):
        return dense_layer_report(name, weight, reason)
    packed = plan.packed(name, weight)
    if packed.mac_reduction < MIN_MAC_REDUCTION:
        return dense_layer_report(name, weight, reason)
    ids = torch.full((packed.num_groups, as_conv_weight(weight).shape[1]), -1)
    report = pruned_layer_report(name, weight, packed, ids, int(np.diff(packed.group_ptr).max(initial=0)))
    report.reason = f"{reason}, but it was pruned before: {report.reason}"
    return report


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
    data: Batches | None = None,
    schedule: str = "oneshot",
    ratio: float | None = None,
    epochs: int = 0,
    train_config: TrainConfig | None = None,
    layer_keeps: dict[str, float] | None = None,
    min_layer_keep: float | None = None,
) -> tuple[nn.Module, PruneReport]:
    """Pattern- and connectivity-prune every eligible conv, aligned to the target's vector width.

    Eligible: ``nn.Conv2d`` with ``groups == 1``, ``in_channels >= min_in_channels`` and a
    3x3 kernel (pattern + connectivity pruning) or a 1x1 kernel (connectivity pruning:
    whole input channels per filter group). The rest stay dense and are listed in the
    report with the reason. One library of ``num_patterns`` ``pattern_k``-tap patterns is
    chosen for the whole model from its 3x3 layers (:mod:`.patterns`); each group of V
    consecutive filters (V = the preset's vector width) shares kept channels and patterns
    and keeps ``max(1, round(keep * C))`` input channels (:mod:`.masks`). Masks stay
    applied as ``torch.nn.utils.prune`` reparametrizations (fine-tune freely;
    :func:`~.masks.bake` before export).

    Parameters
    ----------
    model : torch.nn.Module
        The model; deep-copied first unless ``inplace``.
    target : str or TargetPreset
        The preset whose vector width the groups align to.
    pattern_k : int
        Taps kept of each kept 3x3 kernel (1..9).
    keep_kernels : float
        Kept share of each group's input channels in 3x3 layers, in (0, 1].
    num_patterns : int
        Size of the pattern library.
    inplace : bool
        Prune ``model`` itself.
    min_in_channels : int
        Layers with fewer input channels (the stem) stay dense.
    keep_pointwise : float, optional
        Kept share for 1x1 convs (default ``keep_kernels``; 1 leaves them dense).
    keep_linear : float, optional
        When given, ``nn.Linear`` layers get connectivity pruning at this share (kept
        input features per group of V outputs); by default they are untouched and unlisted.
    example_input : torch.Tensor or sequence of torch.Tensor, optional
        Makes the report count MACs per image instead of per output pixel (default: a
        slice of ``data``'s first batch).
    data : iterable of (images, labels), optional
        Training batches (a ``DataLoader`` or :meth:`tvm_mcpruner.data.ImageData.loader`)
        for fine-tuning and sensitivities; with it the BatchNorm running statistics are
        re-estimated at the end (even with ``epochs=0``): stale statistics, not the lost
        weights, cost most accuracy right after pruning.
    schedule : str
        ``"oneshot"`` (prune, then ``epochs`` of masked fine-tuning when ``data`` is
        given), ``"iterative"`` (gradual magnitude pruning with fine-tuning between steps)
        or ``"admm"`` (PatDNN's extended ADMM, then hard prune + masked retraining); the
        last two need ``data`` and ``epochs >= 2`` (:mod:`.schedules`).
    ratio : float, optional
        A whole-model conv-MAC reduction target (e.g. 8) instead of one ``keep_kernels``:
        per-layer keeps are chosen by sensitivity (loss on a batch of ``data`` when given,
        else the weight energy a layer would lose).
    epochs : int
        Training epochs of the schedule.
    train_config : TrainConfig, optional
        Optimiser settings (default: SGD, lr 0.01, cosine, no progress bars);
        ``TrainConfig(distill=0.7)`` distills from a frozen copy of the unpruned model.
    layer_keeps : dict of str to float, optional
        Per-layer keeps set by hand instead of ``ratio``.
    min_layer_keep : float, optional
        With ``ratio``: the smallest share of its kernels any layer may keep (default 1/8,
        the lowest level); a higher floor spreads the cut more evenly.

    Returns
    -------
    pruned : torch.nn.Module
        The pruned model, masks applied.
    report : PruneReport
        Per layer: patterns used, kept kernels, MAC reduction, or why it stayed dense.
    """
    preset = _check_args(
        model, target, pattern_k, keep_kernels, num_patterns, min_in_channels, keep_pointwise, keep_linear
    )
    _check_schedule(schedule, ratio, data, epochs)
    if min_layer_keep is not None and (ratio is None or layer_keeps is not None):
        raise ValueError("min_layer_keep bounds the per-layer keeps that ratio allocates: give it with ratio "
                         "(and without layer_keeps)")
    lowest_keep_level(min_layer_keep)  # a bad value fails before any copy or training
    if not inplace:
        model = deepcopy_model(model)
    if example_input is None and data is not None:  # only then: each iter() of a shuffling loader draws
        example_input = _first_images(data)[:1]
    plan = make_plan(model, preset, pattern_k, keep_kernels, num_patterns, min_in_channels, keep_pointwise,
                     keep_linear)
    if layer_keeps is not None:
        plan.keeps.update(_checked_layer_keeps(plan, layer_keeps))
    elif ratio is not None:
        plan.keeps.update(allocate_keeps(model, plan, ratio, data, example_input, min_layer_keep))
    pattern_ids = run_schedule(schedule, model, plan, data, epochs, train_config)
    report = build_report(plan, pattern_ids, pattern_k, keep_kernels, num_patterns)
    if example_input is not None:
        _count_pixels(model, plan.layers, example_input, report)
    return model, report


def _check_schedule(schedule: str, ratio: float | None, data: Batches | None, epochs: int) -> None:
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if ratio is not None and not (_real(ratio) is not None and 1 <= _real(ratio) < math.inf):
        raise ValueError(f"ratio must be a number >= 1 (conv-MAC reduction), got {ratio!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    if schedule != "oneshot" and (data is None or epochs < 2):
        raise ValueError(f"schedule {schedule!r} trains while pruning: it needs data and epochs >= 2")
    if schedule == "oneshot" and epochs and data is None:
        raise ValueError("epochs > 0 fine-tunes after pruning: it needs data")


def _checked_layer_keeps(plan: PrunePlan, layer_keeps: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(layer_keeps) - set(plan.eligible))
    if unknown:
        raise ValueError(f"layer_keeps names layers that are not pruned: {', '.join(unknown)}")
    for name, keep in layer_keeps.items():
        _check_fraction(f"layer_keeps[{name!r}]", keep)
    return dict(layer_keeps)


def _first_images(data: Batches) -> torch.Tensor:
    batch = next(iter(data), None)
    if batch is None:
        raise ValueError("data holds no batch: give an iterable of (images, labels) batches, or data=None")
    images, _ = batch
    return images


def _count_pixels(model: nn.Module, convs: dict[str, nn.Conv2d], example_input: ExampleInput, report: PruneReport) -> None:
    pixels = conv_output_pixels(model, convs, example_input)
    shape = tuple(example_input.shape) if isinstance(example_input, torch.Tensor) else None
    report.macs_basis = "per image" + (f", input {'x'.join(map(str, shape))}" if shape else "")
    for layer in report.layers:
        layer.output_pixels = pixels.get(layer.name)
        if layer.output_pixels is None:
            layer.reason += ("; " if layer.reason else "") + "not run by example_input (0 MACs counted)"
