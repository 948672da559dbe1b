"""Sparse operator kernels for tvm-mcpruner: TE compute + per-target-family schedules.

``pattern_conv2d.py`` says what is computed; ``x86.py`` (also used for arm_cpu, whose
NEON code LLVM emits from the same vectorized loops) says how it runs; ``knobs.py``
holds the tunable knobs and their defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import IRModule, s_tir, te, tirx

from .knobs import (
    KNOBS_ANNOTATION,
    LOOP_ORDERS,
    SEARCHED_LOOP_ORDERS,
    PatternConvKnobs,
    cheaper_loop_order,
    default_pattern_conv_knobs,
    max_accumulators,
    scheduled_knobs,
    trace_schedule_id,
)
from .pattern_conv2d import PatternConvShape, kernel_operands, pattern_conv2d_nchw
from .x86 import SCHEDULE_ID as _CPU_SCHEDULE_ID
from .x86 import apply_pattern_conv2d_cpu, pattern_conv2d_cpu_spaces

__all__ = [
    "KERNEL_ATTR",
    "KNOBS_ANNOTATION",
    "LOOP_ORDERS",
    "SEARCHED_LOOP_ORDERS",
    "PatternConvKnobs",
    "PatternConvShape",
    "PatternConvKernel",
    "UnsupportedTargetError",
    "build_pattern_conv2d",
    "cheaper_loop_order",
    "default_pattern_conv_knobs",
    "apply_default_schedule",
    "declared_knobs",
    "default_schedule_trace",
    "is_current_trace",
    "is_kernel",
    "is_unscheduled_kernel",
    "kernel_operands",
    "max_accumulators",
    "pattern_conv2d_compute",
    "pattern_conv2d_design_spaces",
    "pattern_conv2d_primfunc",
    "schedule_pattern_conv2d",
    "scheduled_knobs",
    "trace_schedule_id",
    "SCHEDULED_FAMILIES",
]

# family -> (apply fixed knobs to a Schedule, design spaces of a Schedule)
_SCHEDULES = {
    "x86": (apply_pattern_conv2d_cpu, pattern_conv2d_cpu_spaces),
    "arm_cpu": (apply_pattern_conv2d_cpu, pattern_conv2d_cpu_spaces),
}
SCHEDULED_FAMILIES = tuple(_SCHEDULES)
# the schedule ids the code here makes (x86 and arm_cpu share one schedule)
_CURRENT_SCHEDULE_IDS = frozenset({_CPU_SCHEDULE_ID})
# PrimFunc attribute that marks our kernels (value: the kernel's name); the Relax
# pipeline schedules marked functions that tuning did not schedule already.
KERNEL_ATTR = "mcpruner.kernel"


class UnsupportedTargetError(NotImplementedError):
    """No sparse schedule exists yet for this target family."""


def _check_family(family: str) -> None:
    if family not in _SCHEDULES:
        raise UnsupportedTargetError(
            f"no pattern_conv2d schedule for target family {family!r} "
            f"(scheduled: {', '.join(SCHEDULED_FAMILIES)})"
        )


def pattern_conv2d_compute(
    shape: PatternConvShape,
    tile_w: int,
    *,
    with_bias: bool = False,
    clip: tuple[float | None, float | None] | None = None,
) -> tirx.PrimFunc:
    """The unscheduled PrimFunc ``(data, values, offsets[, bias], out)`` of one layer.

    ``tile_w`` pads ``acc``'s columns to a multiple of it; any schedule whose register
    tile divides that padded width fits the same compute (the tuning workload).
    """
    tensors = pattern_conv2d_nchw(shape, tile_w, with_bias, clip)
    return te.create_prim_func(tensors).with_attrs({
        KERNEL_ATTR: "pattern_conv2d",
        "mcpruner.padded_width": shape.padded_width(tile_w),
        "mcpruner.tile_w": tile_w,
        "mcpruner.lanes": shape.lanes,
    })


def is_kernel(func) -> bool:
    """True for a PrimFunc of one of our kernels (marked :data:`KERNEL_ATTR`), scheduled or not."""
    return isinstance(func, tirx.PrimFunc) and bool(func.attrs) and KERNEL_ATTR in func.attrs


def is_unscheduled_kernel(func) -> bool:
    """True for a ``topi_sparse`` compute that no schedule (default or tuned) reached yet."""
    return is_kernel(func) and not func.attrs.get("tirx.is_scheduled", False)


def schedule_pattern_conv2d(
    func: tirx.PrimFunc, family: str, knobs: PatternConvKnobs | None = None
) -> tirx.PrimFunc:
    """Schedule a :func:`pattern_conv2d_compute` with ``knobs`` (default: its compute's tile)."""
    _check_family(family)
    sch = s_tir.Schedule(func)
    apply_default_schedule(sch, family, knobs or declared_knobs(func))
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def default_schedule_trace(mod: IRModule, family: str) -> s_tir.Trace | None:
    """Trace of the schedule ``mod``'s kernel gets without a tuning log; None if not our kernel.

    ``mod`` is a tuning workload (its ``"main"`` an unscheduled :func:`pattern_conv2d_compute`).
    The trace is a point of the design space, so tuning measures it like any candidate
    and the choice among logged records can compare against it.
    """
    func = mod["main"]
    if not is_kernel(func):
        return None
    _check_family(family)
    sch = s_tir.Schedule(mod)
    apply_default_schedule(sch, family, declared_knobs(func))
    return sch.trace


def is_current_trace(trace: s_tir.Trace) -> bool:
    """True when a trace of our kernel comes from a schedule this code still makes.

    Traces logged by an earlier version of a schedule replay its old loop structure;
    the choice among logged records (``relay_passes.rank_tuned_records``) skips them.
    """
    return trace_schedule_id(trace) in _CURRENT_SCHEDULE_IDS


def declared_knobs(func: tirx.PrimFunc) -> PatternConvKnobs:
    """The default knobs of an unscheduled compute: the register tile it was declared
    with, and the loop order that streams fewer bytes (:func:`cheaper_loop_order`), read
    off its buffers."""
    lanes, tile_w = int(func.attrs["mcpruner.lanes"]), int(func.attrs["mcpruner.tile_w"])
    sch = s_tir.Schedule(func)
    # acc reads values [G, E, V], offsets and the padded copy (or the input itself);
    # out writes [N, O, OH, OW]
    reads = {r.source.name: r.source for r in sch.get(sch.get_sblock("acc")).reads}
    groups, entries, _ = (int(d) for d in reads["values"].shape)
    read = reads["pad"] if "pad" in reads else reads["data"]
    input_elements = int(np.prod([int(d) for d in read.shape]))
    out_rows = int(sch.get(sch.get_sblock("out")).writes[0].source.shape[2])
    order = cheaper_loop_order(4 * input_elements, 4 * groups * entries * (lanes + 1), groups, out_rows)
    return PatternConvKnobs(lanes=lanes, tile_w=tile_w, order=order)


def apply_default_schedule(sch: s_tir.Schedule, family: str, knobs: PatternConvKnobs) -> None:
    """Apply ``family``'s schedule with fixed ``knobs`` to a Schedule of the compute.

    The knobs are recorded as sampling decisions, so the trace is a point of the
    tuning space (:func:`pattern_conv2d_design_spaces`).
    """
    _check_family(family)
    _SCHEDULES[family][0](sch, knobs)


def pattern_conv2d_design_spaces(sch: s_tir.Schedule, family: str) -> list[s_tir.Schedule]:
    """MetaSchedule design spaces of a :func:`pattern_conv2d_compute` for ``family``."""
    _check_family(family)
    return _SCHEDULES[family][1](sch)


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
    _check_family(family)
    if knobs is not None and knobs.lanes != shape.lanes:
        raise ValueError(f"knobs.lanes={knobs.lanes} must equal the packed group size {shape.lanes}")
    tile_w = knobs.tile_w if knobs else default_pattern_conv_knobs(shape.out_width, shape.lanes).tile_w
    func = pattern_conv2d_compute(shape, tile_w, with_bias=with_bias, clip=clip)
    return schedule_pattern_conv2d(func, family, knobs)


@dataclass(frozen=True)
class PatternConvKernel:
    """One layer's scheduled kernel and the constant operands it reads.

    Call ``func`` as ``(data.reshape(input_shape), values, offsets[, bias], out)``;
    ``compute`` is the same function unscheduled (what the Relax pass emits and tuning
    searches over);
    ``input_shape`` is the NCHW input or, when the kernel reads it directly, its
    flattened ``[N, C*H*W]`` view (see ``PatternConvShape.reads_input_directly``).
    """

    func: tirx.PrimFunc
    values: np.ndarray
    offsets: np.ndarray
    shape: PatternConvShape
    knobs: PatternConvKnobs
    compute: tirx.PrimFunc

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
    if knobs is not None and knobs.lanes != lanes:
        raise ValueError(f"knobs.lanes={knobs.lanes} must equal the packed group size {lanes}")
    tile_w = knobs.tile_w if knobs else default_pattern_conv_knobs(probe.out_width, lanes).tile_w
    values, offsets = kernel_operands(
        row_ptr, row_channel, row_tap, row_values, kw,
        probe.padded_height(tile_w), probe.padded_width(tile_w),
    )
    shape = PatternConvShape(n, c, h, w, o, (kh, kw), stride, tuple(padding), lanes, values.shape[1])
    compute = pattern_conv2d_compute(shape, tile_w, with_bias=with_bias, clip=clip)
    knobs = knobs or declared_knobs(compute)  # the same default the Relax pipeline applies
    func = schedule_pattern_conv2d(compute, family, knobs)
    return PatternConvKernel(func, values, offsets, shape, knobs, compute)
