"""Shared helpers for the compiler-side tests: non-degenerate models, aligned weights, checks.

Randomly initialised deep nets with fresh BatchNorm statistics (mean 0, var 1, gamma 1,
beta 0) squash activations until the output hardly depends on the input -- MobileNetV2
then returns the same row for every image, and an error check passes for any kernel.
:func:`randomize_bn` gives every BN non-degenerate statistics and affine parameters, and
:func:`assert_input_sensitive` proves a model's output really depends on its input.

Import as ``from tests._models import ...`` (tests run as ``python -m pytest`` from the
repository root, which puts the root on ``sys.path``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import numpy as np
import torch
from torch import nn

from tvm_mcpruner.pruning.masks import deepcopy_model  # copies pruned (masked) models too

__all__ = [
    "PATTERNS_4",
    "aligned_mask",
    "aligned_pattern_weight",
    "assert_close",
    "assert_close_to_exact",
    "exact_output",
    "assert_input_sensitive",
    "nonzero_values",
    "randomize_bn",
    "torch_output",
]

# Four 4-tap patterns of a 3x3 kernel (tap index = ky * 3 + kx).
PATTERNS_4 = ((0, 1, 3, 4), (1, 2, 4, 5), (3, 4, 6, 7), (4, 5, 7, 8))


def randomize_bn(model: nn.Module, seed: int = 0, example_input: torch.Tensor | None = None) -> nn.Module:
    """Give every ``BatchNorm2d`` random, non-degenerate statistics and affine parameters.

    weight ~ U(0.5, 1.5), bias ~ N(0, 0.1); running_mean ~ N(0, 0.1), running_var ~
    U(0.5, 1.5). Random statistics alone do not save deep nets: default conv init
    shrinks activations ~1.7x per layer, so after 50 MobileNetV2 layers the output is
    the BN biases and no longer depends on the input. With ``example_input`` the running
    statistics are therefore measured on it (one train-mode forward pass, cumulative
    average) -- call this on the *pruned* model, whose smaller activations they must
    fit -- and then jittered: mean + N(0, 0.1) * std, var * U(0.5, 1.5).
    Returns ``model`` (changed in place, in eval mode).
    """
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            c = bn.num_features
            if bn.weight is not None:
                bn.weight.copy_(0.5 + torch.rand(c, generator=gen))
            if bn.bias is not None:
                bn.bias.copy_(0.1 * torch.randn(c, generator=gen))
            bn.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
            bn.running_var.copy_(0.5 + torch.rand(c, generator=gen))
        if example_input is None:
            return model.eval()
        momenta = {bn: bn.momentum for bn in bns}
        for bn in bns:
            bn.momentum = None  # cumulative average: the stats of this one batch
            bn.reset_running_stats()
        model.train()
        try:
            model(example_input)
        finally:
            for bn, momentum in momenta.items():
                bn.momentum = momentum
            model.eval()
        for bn in bns:
            c = bn.num_features
            std = bn.running_var.sqrt()
            bn.running_mean.add_(0.1 * torch.randn(c, generator=gen) * std)
            bn.running_var.mul_(0.5 + torch.rand(c, generator=gen))
    return model


def nonzero_values(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    """float32 values that are never exactly zero: |v| in [0.5, 1.5), random sign."""
    magnitude = rng.uniform(0.5, 1.5, size=shape)
    sign = rng.choice(np.array([-1.0, 1.0]), size=shape)
    return (magnitude * sign).astype(np.float32)


def aligned_mask(
    rng: np.random.Generator,
    out_channels: int,
    in_channels: int,
    lanes: int,
    *,
    kernel: tuple[int, int] = (3, 3),
    keep: float = 0.5,
    patterns: Sequence[Sequence[int]] | None = None,
) -> np.ndarray:
    """``[O, C, KH, KW]`` bool: the aligned pattern structure for ``lanes`` (the one
    generator of it in the tests; multiply any values by it).

    Each group of ``lanes`` consecutive filters (the last one may be short) keeps the same
    ``min(C, max(1, round(keep * C)))`` input channels, and each kept kernel one tap mask
    shared by the group: one of ``patterns`` (tap indices ky * KW + kx), or by default a
    random non-empty subset of the taps.
    """
    taps = kernel[0] * kernel[1]
    mask = np.zeros((out_channels, in_channels, taps), dtype=bool)
    kept = min(in_channels, max(1, round(keep * in_channels)))
    for start in range(0, out_channels, lanes):
        for c in rng.choice(in_channels, kept, replace=False):
            if patterns is None:
                chosen = rng.choice(taps, int(rng.integers(1, taps + 1)), replace=False)
            else:
                chosen = list(patterns[rng.integers(len(patterns))])
            mask[start:start + lanes, c, chosen] = True
    return mask.reshape(out_channels, in_channels, *kernel)


def aligned_pattern_weight(
    out_channels: int,
    in_channels: int,
    lanes: int,
    *,
    keep: float = 0.5,
    seed: int = 0,
    patterns: tuple[tuple[int, ...], ...] = PATTERNS_4,
) -> np.ndarray:
    """A ``[O, C, 3, 3]`` float32 weight with the aligned pattern structure for ``lanes``.

    :func:`aligned_mask` with ``patterns`` times :func:`nonzero_values`: each group of
    ``lanes`` filters keeps the same ``round(keep * C)`` input channels, each kept kernel
    one pattern shared by the group. ``O`` must be a multiple of ``lanes``. With 4-tap
    patterns and ``keep=0.5`` this is 4.5x fewer MACs.
    """
    assert out_channels % lanes == 0, "aligned weights need O % lanes == 0"
    rng = np.random.default_rng(seed)
    mask = aligned_mask(rng, out_channels, in_channels, lanes, keep=keep, patterns=patterns)
    return nonzero_values(rng, mask.shape) * mask


def torch_output(model: nn.Module, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """``model(x)`` in eval mode without gradients, as numpy."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    with torch.no_grad():
        return model.eval()(x).numpy()


def assert_close(actual: np.ndarray, expected: np.ndarray, rel: float = 1e-4) -> None:
    """``max|actual - expected| <= rel * max|expected|``, shapes equal, reference non-trivial."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    assert np.isfinite(actual).all(), "non-finite values in the output"
    scale = float(np.abs(expected).max())
    assert scale > 1e-6, "reference output is all zeros: the check would prove nothing"
    err = float(np.abs(actual - expected).max())
    assert err <= rel * scale, f"max abs error {err:.3e} > {rel:g} * max|y| = {rel * scale:.3e}"


# A compiled model's output may be this many times further from exact arithmetic than
# torch's own fp32 output: both round in fp32, summing in different orders, so how far
# either lands is set by the net's depth and conditioning, not by a fixed tolerance; the
# ratio of two such errors on one input swings widely (benchmarks/numerics.py measures it),
# and a wrong kernel misses by orders of magnitude more.
FP32_ERROR_FACTOR = 8.0
# ... measured from at least this error (relative to max|y|, ~8 float32 ulps), so a net
# on which torch happens to be nearly exact does not demand exactness of us.
FP32_ERROR_FLOOR = 1e-6


def exact_output(model: nn.Module, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """``model(x)`` computed in float64 on a copy (masked models too): the reference both our
    output and torch's fp32 output are measured against."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    with torch.no_grad():
        return deepcopy_model(model).double().eval()(x.double()).numpy()


def assert_close_to_exact(actual: np.ndarray, model: nn.Module, x: torch.Tensor | np.ndarray,
                          factor: float = FP32_ERROR_FACTOR) -> None:
    """``actual`` (our output for ``model(x)``) is within ``factor`` times torch fp32's error.

    Both errors are max abs differences from ``model`` run in float64 on the same input;
    torch's is taken as at least ``FP32_ERROR_FLOOR * max|y|``. The message gives both.
    """
    exact = exact_output(model, x)
    fp32 = torch_output(model, x).astype(np.float64)
    actual = np.asarray(actual, np.float64)
    assert actual.shape == exact.shape, f"shape {actual.shape} != {exact.shape}"
    assert np.isfinite(actual).all(), "non-finite values in the output"
    scale = float(np.abs(exact).max())
    assert scale > 1e-6, "reference output is all zeros: the check would prove nothing"
    ours, torch_err = float(np.abs(actual - exact).max()), float(np.abs(fp32 - exact).max())
    allowed = factor * max(torch_err, FP32_ERROR_FLOOR * scale)
    assert ours <= allowed, (f"max abs error against float64 {ours:.3e} > {factor:g} x torch fp32's "
                             f"{torch_err:.3e} (floor {FP32_ERROR_FLOOR:g} * max|y| = {FP32_ERROR_FLOOR * scale:.3e})")


def assert_input_sensitive(
    run: Callable[[np.ndarray], np.ndarray], x1: np.ndarray, x2: np.ndarray, rel: float = 1e-2
) -> None:
    """Outputs for two different inputs differ by more than ``rel * max|y|`` (per row too).

    Guards the error checks: a model whose output ignores its input passes any of them.
    """
    y1, y2 = np.asarray(run(x1)), np.asarray(run(x2))
    scale = max(float(np.abs(y1).max()), float(np.abs(y2).max()))
    diff = np.abs(y1 - y2).reshape(len(y1), -1).max(axis=1)
    assert (diff > rel * scale).all(), f"output barely depends on the input: {diff} vs {scale}"
    if len(y1) > 1:  # different images of one batch give different rows
        rows = np.abs(y1 - y1[:1]).reshape(len(y1), -1).max(axis=1)[1:]
        assert (rows > rel * scale).all(), f"batch rows are identical: {rows}"
