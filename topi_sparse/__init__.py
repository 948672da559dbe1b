"""Sparse operator kernels for tvm-mcpruner: TE compute + per-target-family schedules.

``pattern_conv2d.py`` says what is computed; ``x86.py`` (also used for arm_cpu, whose
NEON code LLVM emits from the same vectorized loops) says how it runs; ``knobs.py``
holds the tunable knobs and their defaults.
"""

from __future__ import annotations

from tvm import te, tirx

from .knobs import PatternConvKnobs, default_pattern_conv_knobs
from .pattern_conv2d import PatternConvShape, kernel_operands, pattern_conv2d_nchw
from .x86 import schedule_pattern_conv2d_cpu

__all__ = [
    "PatternConvKnobs",
    "PatternConvShape",
    "UnsupportedTargetError",
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
