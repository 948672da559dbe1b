"""Sparse operator kernels for tvm-mcpruner: TE compute + per-target-family schedules.

``pattern_conv2d.py`` says what is computed; ``x86.py`` (also used for arm_cpu, whose
NEON code LLVM emits from the same vectorized loops) says how it runs; ``knobs.py``
holds the tunable knobs and their defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import te, tirx

from .knobs import PatternConvKnobs, default_pattern_conv_knobs
from .pattern_conv2d import PatternConvShape, kernel_operands, pattern_conv2d_nchw
from .x86 import schedule_pattern_conv2d_cpu

__all__ = [
    "PatternConvKnobs",
    "PatternConvShape",
    "PatternConvKernel",
    "UnsupportedTargetError",
    "build_pattern_conv2d",
    "default_pattern_conv_knobs",
    "kernel_operands",
    "pattern_conv2d_primfunc",
    "SCHEDULED_FAMILIES",
]

_SCHEDULES = {"x86": schedule_pattern_conv2d_cpu, "arm_cpu": schedule_pattern_conv2d_cpu}
SCHEDULED_FAMILIES = tuple(_SCHEDULES)


class UnsupportedTargetError(NotImplementedError):
    """No sparse schedule exists yet for this target family."""


def pattern_conv2d_primfunc(
    shape: PatternConvShape,
    family: str,
    *,
    with_bias: bool = False,
    clip: tuple[float | None, float | None] | None = None,
    knobs: PatternConvKnobs | None = None,
) -> tirx.PrimFunc:
    """A scheduled PrimFunc ``(data, values, offsets[, bias], out)`` for one layer.

    ``clip`` = (min, max), either None for no bound, fuses ReLU / ReLU6 into the write-out.
    """
    if family not in _SCHEDULES:
        raise UnsupportedTargetError(
            f"no pattern_conv2d schedule for target family {family!r} "
            f"(scheduled: {', '.join(SCHEDULED_FAMILIES)})"
        )
    knobs = knobs or default_pattern_conv_knobs(shape.out_width, shape.lanes)
    if knobs.lanes != shape.lanes:
        raise ValueError(f"knobs.lanes={knobs.lanes} must equal the packed group size {shape.lanes}")
    tensors = pattern_conv2d_nchw(shape, knobs.tile_w, with_bias, clip)
    func = te.create_prim_func(tensors)
    func = func.with_attr("mcpruner.padded_width", shape.padded_width(knobs.tile_w))
    return _SCHEDULES[family](func, knobs)


@dataclass(frozen=True)
class PatternConvKernel:
    """One layer's scheduled kernel and the constant operands it reads.

    Call ``func`` as ``(data.reshape(input_shape), values, offsets[, bias], out)``;
    ``input_shape`` is the NCHW input or, when the kernel reads it directly, its
    flattened ``[N, C*H*W]`` view (see ``PatternConvShape.reads_input_directly``).
    """

    func: tirx.PrimFunc
    values: np.ndarray
    offsets: np.ndarray
    shape: PatternConvShape
    knobs: PatternConvKnobs

    @property
    def input_shape(self) -> tuple[int, ...]:
        s = self.shape
        if s.reads_input_directly(self.knobs.tile_w):
            return (s.batch, s.in_channels * s.height * s.width)
        return (s.batch, s.in_channels, s.height, s.width)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        s = self.shape
        return (s.batch, s.out_channels, s.out_height, s.out_width)


def build_pattern_conv2d(
    data_shape: tuple[int, int, int, int],
    weight_shape: tuple[int, int, int, int],
    row_ptr: np.ndarray,
    row_channel: np.ndarray,
    row_tap: np.ndarray,
    row_values: np.ndarray,
    *,
    stride: int,
    padding: tuple[int, int, int, int],
    family: str,
    with_bias: bool = False,
    clip: tuple[float | None, float | None] | None = None,
    knobs: PatternConvKnobs | None = None,
) -> PatternConvKernel:
    """Knobs, operands and scheduled PrimFunc of one pattern-sparse conv layer.

    The rows (``row_ptr [G+1]``, ``row_channel``/``row_tap [R]``, ``row_values [R, V]``)
    are a packed weight's, in the sparse format's read order.
    """
    n, c, h, w = data_shape
    o, _, kh, kw = weight_shape
    lanes = row_values.shape[1]
    probe = PatternConvShape(n, c, h, w, o, (kh, kw), stride, tuple(padding), lanes, 1)
    knobs = knobs or default_pattern_conv_knobs(probe.out_width, lanes)
    values, offsets = kernel_operands(
        row_ptr, row_channel, row_tap, row_values, kw,
        probe.padded_height(), probe.padded_width(knobs.tile_w),
    )
    shape = PatternConvShape(n, c, h, w, o, (kh, kw), stride, tuple(padding), lanes, values.shape[1])
    func = pattern_conv2d_primfunc(shape, family, with_bias=with_bias, clip=clip, knobs=knobs)
    return PatternConvKernel(func, values, offsets, shape, knobs)
