"""topi_sparse.pattern_conv2d: the pattern-sparse conv2d kernel against torch.

Every kernel result is compared with ``torch.nn.functional.conv2d`` on the same dense
weight. Tolerance (fp32, the kernel sums the same products in another order):

    max |y - y_ref| <= 1e-4 * max |y_ref| + 1e-6
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
import torch
import tvm
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import topi_sparse
from tests._models import aligned_mask
from topi_sparse import (
    build_pattern_conv2d,
    PatternConvKnobs,
    PatternConvShape,
    UnsupportedTargetError,
    kernel_operands,
    pattern_conv2d_primfunc,
)
from tvm_mcpruner import get_preset
from tvm_mcpruner.sparse_format import pack_pattern_weights

RTOL_OF_MAX = 1e-4
ATOL = 1e-6


# ---------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------
@functools.cache
def cpu_target() -> tvm.target.Target:
    """2-core llvm target with the host CPU's mcpu (from the 'host' preset)."""
    spec = {"kind": "llvm", "num-cores": 2}
    mcpu = get_preset("host").tvm_target().attrs.get("mcpu")
    if mcpu:
        spec["mcpu"] = str(mcpu)
    return tvm.target.Target(spec)


def shape_for(n, c, h, w, o, kernel, stride, padding, lanes, entries=1):
    return PatternConvShape(
        batch=n, in_channels=c, height=h, width=w, out_channels=o, kernel=tuple(kernel),
        stride=stride, padding=(padding,) * 4, lanes=lanes, entries=entries,
    )


def build_and_run(x, w, bias, *, stride, padding, lanes, clip, knobs=None):
    """Pack ``w``, build the x86 kernel and run it; returns (output, PrimFunc, Executable)."""
    packed = pack_pattern_weights(w, lanes)
    row_channel, row_tap = packed.row_channels_and_taps()
    kernel = build_pattern_conv2d(
        x.shape, w.shape, packed.row_ptr, row_channel, row_tap, packed.values, stride=stride,
        padding=(padding,) * 4, family="cpu", with_bias=bias is not None, clip=clip, knobs=knobs,
    )
    lib = tvm.compile(tvm.IRModule({"main": kernel.func}), target=cpu_target())
    dev = tvm.cpu()
    args = [x.reshape(kernel.input_shape), kernel.values, kernel.offsets] + ([bias] if bias is not None else [])
    tensors = [tvm.runtime.tensor(a, dev) for a in args]
    out = tvm.runtime.tensor(np.zeros(kernel.output_shape, np.float32), dev)
    lib(*tensors, out)
    return out.numpy(), kernel.func, lib


def torch_reference(x, w, bias, *, stride, padding, clip):
    y = torch.nn.functional.conv2d(
        torch.from_numpy(x), torch.from_numpy(w),
        None if bias is None else torch.from_numpy(bias), stride=stride, padding=padding,
    )
    if clip is not None:
        lo, hi = clip
        y = torch.clamp(y, min=lo, max=hi)
    return y.numpy()


def assert_close(y, ref):
    assert y.shape == ref.shape
    err = float(np.abs(y - ref).max()) if ref.size else 0.0
    bound = RTOL_OF_MAX * float(np.abs(ref).max() if ref.size else 0.0) + ATOL
    assert err <= bound, f"max abs error {err:.3e} > {bound:.3e}"


def make_weight(rng, o, c, kh, kw, lanes, kind, keep):
    """A float32 ``[O, C, KH, KW]`` weight of one of these kinds:

    - 'aligned': groups of `lanes` filters share kept channels and per-channel tap masks
      (:func:`tests._models.aligned_mask`); keep 0 empties every group;
    - 'pattern_k': aligned, every kept kernel one of a random library of k-of-KH*KW patterns;
    - 'gaps': aligned, with some groups emptied entirely (empty rows next to full ones);
    - 'stray': aligned plus a few non-zeros in pruned positions (alignment broken slightly);
    - 'dense'; 'random': unaligned element-wise sparsity.
    """
    w = rng.standard_normal((o, c, kh, kw)).astype(np.float32)
    if kind == "dense":
        return w
    if kind == "random":
        return (w * (rng.random((o, c, kh, kw)) < keep)).astype(np.float32)
    if keep == 0.0:
        return np.zeros_like(w)
    patterns = None
    if kind == "pattern_k":
        k = int(rng.integers(1, kh * kw + 1))
        patterns = [rng.choice(kh * kw, k, replace=False) for _ in range(int(rng.integers(1, 9)))]
    mask = aligned_mask(rng, o, c, lanes, kernel=(kh, kw), keep=keep, patterns=patterns)
    if kind == "gaps":
        for start in range(0, o, lanes):
            if rng.random() < 0.4:
                mask[start:start + lanes] = False
    if kind == "stray":
        pruned = np.flatnonzero(~mask)
        if pruned.size:
            mask.flat[rng.choice(pruned, min(pruned.size, int(rng.integers(1, 4))), replace=False)] = True
    return (w * mask).astype(np.float32)


def run_case(n, c, h, wd, o, kernel, stride, padding, lanes, with_bias, clip, kind, keep, seed,
             knobs=None):
    rng = np.random.default_rng(seed)
    kh, kw = kernel
    x = rng.standard_normal((n, c, h, wd)).astype(np.float32)
    w = make_weight(rng, o, c, kh, kw, lanes, kind, keep)
    bias = rng.standard_normal(o).astype(np.float32) if with_bias else None
    y, _, _ = build_and_run(x, w, bias, stride=stride, padding=padding, lanes=lanes, clip=clip,
                            knobs=knobs)
    ref = torch_reference(x, w, bias, stride=stride, padding=padding, clip=clip)
    assert_close(y, ref)
    return y


def out_size(size, k, stride, padding):
    return (size + 2 * padding - k) // stride + 1


# Keeps one example cheap: build time (~0.1-0.3 s) dominates, the run stays in the ms.
MAX_INPUT_ELEMENTS = 60_000  # N * C * H * W

clips = st.sampled_from([None, (0.0, None), (0.0, 6.0)])
weight_kinds = st.sampled_from(["aligned", "aligned", "pattern_k", "gaps", "stray", "dense", "random"])
# The ends of the range are cases of their own: nothing kept, everything kept.
keeps = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.05, 1.0))


@st.composite
def conv_cases(draw, kernels):
    n = draw(st.integers(1, 4))
    c = draw(st.integers(1, 130))
    # H, W span 1..40 but shrink with N*C so the input stays below MAX_INPUT_ELEMENTS
    # (rather than rejecting: no filter_too_much health-check failures).
    hw_max = int(max(1, min(40, np.sqrt(MAX_INPUT_ELEMENTS / (n * c)))))
    h = draw(st.integers(1, hw_max))
    wd = draw(st.integers(1, hw_max))
    o = draw(st.integers(1, 130))
    kernel = draw(st.sampled_from(kernels))
    stride = draw(st.sampled_from([1, 2]))
    max_pad = 1 if kernel == 3 else kernel // 2
    padding = draw(st.integers(0, max_pad))
    return {
        "n": n, "c": c, "h": h, "wd": wd, "o": o, "kernel": (kernel, kernel),
        "stride": stride, "padding": padding,
        "lanes": draw(st.sampled_from([16, 8, 4])),
        "with_bias": draw(st.booleans()),
        "clip": draw(clips),
        "kind": draw(weight_kinds),
        "keep": draw(keeps),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


# ---------------------------------------------------------------------------------
# kernel vs torch: KERNEL_SWEEP_3X3 + KERNEL_SWEEP_OTHER layer configs per run (CI too)
# ---------------------------------------------------------------------------------
KERNEL_SWEEP_3X3 = 750
KERNEL_SWEEP_OTHER = 250


@pytest.mark.slow
@settings(max_examples=KERNEL_SWEEP_3X3, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_cases([3]))
def test_conv3x3_matches_torch(case):
    k = case["kernel"][0]
    assume(out_size(case["h"], k, case["stride"], case["padding"]) > 0)
    assume(out_size(case["wd"], k, case["stride"], case["padding"]) > 0)
    run_case(**case)


@pytest.mark.slow
@settings(max_examples=KERNEL_SWEEP_OTHER, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_cases([1, 5, 7]))
def test_conv_1x1_5x5_7x7_matches_torch(case):
    k = case["kernel"][0]
    assume(out_size(case["h"], k, case["stride"], case["padding"]) > 0)
    assume(out_size(case["wd"], k, case["stride"], case["padding"]) > 0)
    run_case(**case)


@pytest.mark.parametrize(
    "n, c, h, w, o, k, s, p, lanes",
    [
        (1, 16, 1, 1, 16, 3, 1, 1, 4),  # 1x1 image, all taps but the centre read padding
        (1, 16, 3, 3, 16, 3, 1, 0, 4),  # single output pixel
        (2, 5, 17, 13, 20, 3, 2, 0, 16),  # O not a multiple of lanes, stride 2
        (1, 3, 31, 31, 7, 3, 1, 1, 16),  # O < lanes
        (3, 130, 9, 40, 33, 3, 2, 1, 8),
        (1, 3, 32, 32, 16, 7, 2, 3, 16),  # stem-like 7x7/2
        (1, 64, 8, 8, 64, 1, 1, 0, 16),
        (1, 8, 2, 40, 9, 5, 1, 2, 4),
    ],
)
def test_conv_fixed_shapes(n, c, h, w, o, k, s, p, lanes):
    run_case(n, c, h, w, o, (k, k), s, p, lanes, True, (0.0, None), "aligned", 0.5, seed=0)


def test_all_zero_weight_gives_bias():
    # Every group is empty: one zero entry per group, the output is clip(bias).
    x = np.random.default_rng(0).standard_normal((1, 4, 6, 6)).astype(np.float32)
    w = np.zeros((10, 4, 3, 3), np.float32)
    bias = np.linspace(-3, 9, 10).astype(np.float32)
    y, _, _ = build_and_run(x, w, bias, stride=1, padding=1, lanes=8, clip=(0.0, 6.0))
    expected = np.broadcast_to(np.clip(bias, 0, 6)[None, :, None, None], y.shape)
    assert np.array_equal(y, expected)


# ---------------------------------------------------------------------------------
# knobs
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("lanes", [16, 8])
def test_explicit_tile_widths_give_identical_results(lanes):
    # OW = 13: tiles 1 and 13-divisors fit, 3/7 leave a partial tile, 16/28 overshoot OW.
    results = {}
    for tile_w in (1, 3, 7, 16, 28):
        knobs = PatternConvKnobs(lanes=lanes, tile_w=tile_w)
        results[tile_w] = run_case(2, 6, 11, 13, 21, (3, 3), 1, 1, lanes, True, None,
                                   "aligned", 0.5, seed=7, knobs=knobs)
    first = results[1]
    for tile_w, y in results.items():
        # Same summation order over entries whatever the tile: bit-identical.
        assert np.array_equal(y, first), f"tile_w={tile_w} differs from tile_w=1"


def test_knobs_lanes_mismatch_raises():
    shape = shape_for(1, 4, 8, 8, 16, (3, 3), 1, 1, lanes=16, entries=4)
    with pytest.raises(ValueError, match="lanes"):
        pattern_conv2d_primfunc(shape, "cpu", knobs=PatternConvKnobs(lanes=8, tile_w=4))


@pytest.mark.parametrize("family", ["mali", "cuda", "opencl", ""])
def test_unsupported_family_raises(family):
    shape = shape_for(1, 4, 8, 8, 16, (3, 3), 1, 1, lanes=4, entries=4)
    with pytest.raises(UnsupportedTargetError, match="schedule"):
        pattern_conv2d_primfunc(shape, family)
    assert issubclass(UnsupportedTargetError, NotImplementedError)
    assert family not in topi_sparse.SCHEDULED_FAMILIES


@pytest.mark.parametrize("family", ["cpu"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_primfunc_is_scheduled(family, with_bias):
    shape = shape_for(1, 4, 8, 8, 16, (3, 3), 1, 1, lanes=4, entries=4)
    func = pattern_conv2d_primfunc(shape, family, with_bias=with_bias, clip=(0.0, 6.0))
    assert bool(func.attrs["tirx.is_scheduled"])
    assert len(func.params) == (5 if with_bias else 4)  # data, values, offsets[, bias], out


# ---------------------------------------------------------------------------------
# generated code
# ---------------------------------------------------------------------------------
def _fma_lines(preset_name: str) -> list[str]:
    """FMA lines of the kernel built (not run: any host can build it) for an x86 preset."""
    preset = get_preset(preset_name)
    rng = np.random.default_rng(0)
    w = make_weight(rng, 32, 16, 3, 3, preset.vector_width, "aligned", 0.5)
    packed = pack_pattern_weights(w, preset.vector_width)
    kernel = build_pattern_conv2d((1, 16, 8, 8), w.shape, packed.row_ptr, *packed.row_channels_and_taps(),
                                  packed.values, stride=1, padding=(1,) * 4, family=preset.family)
    lib = tvm.compile(tvm.IRModule({"main": kernel.func}), target=preset.tvm_target())
    asm = lib.mod.inspect_source("asm")
    return [line for line in asm.splitlines() if re.search(r"\bvfmadd\w*ps\b", line)]


def test_lanes16_asm_uses_zmm_fma_with_broadcast_operand():
    fmas = _fma_lines("x86-avx512")
    assert any("{1to16}" in line and "%zmm" in line for line in fmas), fmas[:10]


def test_lanes8_asm_uses_ymm_fma():
    fmas = _fma_lines("x86-avx2")
    assert fmas and all("%zmm" not in line for line in fmas) and any("%ymm" in line for line in fmas), fmas[:10]


# ---------------------------------------------------------------------------------
# kernel_operands (no build)
# ---------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(
    o=st.integers(1, 70), c=st.integers(1, 40), h=st.integers(1, 20), wd=st.integers(1, 20),
    k=st.sampled_from([1, 3, 5]), stride=st.sampled_from([1, 2]), padding=st.integers(0, 2),
    lanes=st.sampled_from([16, 8, 4]), tile_w=st.integers(1, 28),
    kind=weight_kinds, keep=keeps, seed=st.integers(0, 2**32 - 1),
)
def test_kernel_operands_offsets_in_bounds_and_padding_zero(
    o, c, h, wd, k, stride, padding, lanes, tile_w, kind, keep, seed
):
    assume(out_size(h, k, stride, padding) > 0 and out_size(wd, k, stride, padding) > 0)
    rng = np.random.default_rng(seed)
    w = make_weight(rng, o, c, k, k, lanes, kind, keep)
    packed = pack_pattern_weights(w, lanes)
    shape = shape_for(1, c, h, wd, o, (k, k), stride, padding, lanes)
    hp, wp = shape.padded_height(tile_w), shape.padded_width(tile_w)
    row_channel, row_tap = packed.row_channels_and_taps()
    values, offsets = kernel_operands(packed.row_ptr, row_channel, row_tap, packed.values,
                                      k, hp, wp)
    counts = np.diff(packed.row_ptr)
    groups = packed.num_groups
    entries = max(int(counts.max()), 1)
    assert values.shape == (groups, entries, lanes) and values.dtype == np.float32
    assert offsets.shape == (groups, entries) and offsets.dtype == np.int32

    flat = c * hp * wp
    assert offsets.min() >= 0
    assert offsets.max() < flat
    # Stronger: the farthest element the compute reads (last padded row, last padded
    # column of acc) is still inside the padded input.
    owp = -(-shape.out_width // tile_w) * tile_w
    farthest = offsets.max() + (shape.acc_rows(tile_w) - 1) * stride * wp + (owp - 1) * stride
    assert farthest < flat

    for g in range(groups):
        lo, hi = int(packed.row_ptr[g]), int(packed.row_ptr[g + 1])
        # real entries: the group's rows, at (channel*Hp + ky)*Wp + kx
        assert np.array_equal(values[g, : hi - lo], packed.values[lo:hi])
        ky, kx = np.divmod(row_tap[lo:hi], k)
        assert np.array_equal(offsets[g, : hi - lo], (row_channel[lo:hi] * hp + ky) * wp + kx)
        # padding entries: zero weights (at a valid offset)
        assert not values[g, hi - lo:].any()
        assert not offsets[g, hi - lo:].any()


def test_kernel_operands_rejects_int32_overflow():
    with pytest.raises(ValueError, match="int32"):
        kernel_operands(
            np.array([0, 1]), np.array([1]), np.array([0]), np.ones((1, 4), np.float32),
            3, 2**16, 2**16,
        )
