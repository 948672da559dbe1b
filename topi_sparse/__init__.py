"""Sparse operator kernels for tvm-mcpruner: TE compute + per-target-family schedules.

``pattern_conv2d.py`` says what is computed; one module per target family says how it
runs there (``cpu.py``: x86 and ARM NEON); ``dispatch.py`` picks the family from the
target and routes the calls. This file only re-exports.
"""

from . import cpu
from .cpu import (
    LOOP_ORDERS,
    MAX_UNROLL_ENTRIES,
    SEARCHED_LOOP_ORDERS,
    PatternConvKnobs,
    cheaper_loop_order,
    default_pattern_conv_knobs,
    max_accumulators,
)
from .dispatch import (
    FAMILIES,
    SCHEDULED_FAMILIES,
    PatternConvKernel,
    UnsupportedTargetError,
    apply_default_schedule,
    build_pattern_conv2d,
    declared_knobs,
    default_schedule_trace,
    family_module,
    family_of,
    is_current_trace,
    pattern_conv2d_design_spaces,
    pattern_conv2d_primfunc,
    schedule_pattern_conv2d,
    scheduled_knobs,
)
from .knobs import KNOBS_ANNOTATION, trace_schedule_id
from .pattern_conv2d import (
    KERNEL_ATTR,
    PatternConvShape,
    is_kernel,
    is_unscheduled_kernel,
    kernel_operands,
    pattern_conv2d_compute,
)

__all__ = [
    "FAMILIES",
    "KERNEL_ATTR",
    "KNOBS_ANNOTATION",
    "LOOP_ORDERS",
    "MAX_UNROLL_ENTRIES",
    "SCHEDULED_FAMILIES",
    "SEARCHED_LOOP_ORDERS",
    "PatternConvKernel",
    "PatternConvKnobs",
    "PatternConvShape",
    "UnsupportedTargetError",
    "apply_default_schedule",
    "build_pattern_conv2d",
    "cheaper_loop_order",
    "cpu",
    "declared_knobs",
    "default_pattern_conv_knobs",
    "default_schedule_trace",
    "family_module",
    "family_of",
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
]
