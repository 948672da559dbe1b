"""Which target family schedules a kernel, and the calls that go through it.

A *family* is one module of this package (``cpu.py``) that says how the compute of
``pattern_conv2d.py`` runs on one kind of target. It defines:

- ``NAME`` and ``SCHEDULE_ID`` (recorded in every trace; logged traces of another id are
  not used), ``matches(target)`` (from the target's kind and keys), and ``Knobs``;
- ``compute_tile_w(out_width, lanes)``: the column multiple its compute is declared with;
- ``declared_knobs(func)``, ``scheduled_knobs(func)``: a compute's default knobs, and the
  knobs a scheduled function records;
- ``apply_schedule(sch, knobs)``, ``design_spaces(sch)``: the schedule with fixed knobs,
  and the MetaSchedule design spaces of the same schedule with the knobs sampled;
- ``leftover_rules(lanes)``: dlight rules for the TVM ops the rewrite leaves behind.

A new family is its module plus its line in :data:`FAMILIES`; the rewrite, the pipeline,
the tuner and the compiled model find it through :func:`family_of`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np
from tvm import IRModule, s_tir, tirx

from . import cpu
from .knobs import trace_schedule_id
from .pattern_conv2d import PatternConvShape, is_kernel, kernel_operands, pattern_conv2d_compute

__all__ = ["FAMILIES", "SCHEDULED_FAMILIES", "PatternConvKernel", "UnsupportedTargetError", "apply_default_schedule",
           "build_pattern_conv2d", "declared_knobs", "default_schedule_trace", "family_module", "family_of",
           "is_current_trace", "pattern_conv2d_design_spaces", "pattern_conv2d_primfunc", "schedule_pattern_conv2d",
           "scheduled_knobs"]

# The families, tried in order by family_of.
FAMILIES: tuple[ModuleType, ...] = (cpu,)
SCHEDULED_FAMILIES = tuple(f.NAME for f in FAMILIES)


class UnsupportedTargetError(NotImplementedError):
    """No sparse schedule exists yet for this target family."""


def family_of(target) -> str | None:
    """The family that schedules our kernels for ``target`` (a ``tvm.target.Target``), or None."""
    return next((f.NAME for f in FAMILIES if f.matches(target)), None)


def family_module(family: str) -> ModuleType:
    """The module of ``family`` (:data:`SCHEDULED_FAMILIES`)."""
    for module in FAMILIES:
        if module.NAME == family:
            return module
    raise UnsupportedTargetError(
        f"no pattern_conv2d schedule for target family {family!r} (scheduled: {', '.join(SCHEDULED_FAMILIES)})")


def declared_knobs(func: tirx.PrimFunc, family: str = cpu.NAME):
    """The knobs ``family`` schedules an unscheduled compute with when no log says otherwise."""
    return family_module(family).declared_knobs(func)


def scheduled_knobs(func):
    """The knobs a scheduled kernel runs with (default or tuned); None for any other function."""
    return next((k for k in (f.scheduled_knobs(func) for f in FAMILIES) if k is not None), None)


def schedule_pattern_conv2d(func: tirx.PrimFunc, family: str, knobs=None) -> tirx.PrimFunc:
    """Schedule a ``pattern_conv2d_compute`` with ``knobs`` (default: its declared knobs)."""
    sch = s_tir.Schedule(func)
    apply_default_schedule(sch, family, knobs or declared_knobs(func, family))
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def default_schedule_trace(mod: IRModule, family: str) -> s_tir.Trace | None:
    """Trace of the schedule ``mod``'s kernel gets without a tuning log; None if not our kernel.

    ``mod`` is a tuning workload (its ``"main"`` an unscheduled ``pattern_conv2d_compute``).
    The trace is a point of the design space, so tuning measures it like any candidate
    and the choice among logged records can compare against it.
    """
    func = mod["main"]
    if not is_kernel(func):
        return None
    sch = s_tir.Schedule(mod)
    apply_default_schedule(sch, family, declared_knobs(func, family))
    return sch.trace


def is_current_trace(trace: s_tir.Trace) -> bool:
    """True when a trace of our kernel comes from a schedule this code still makes.

    Traces logged by an earlier version of a schedule replay its old loop structure;
    the choice among logged records (``tvm_mcpruner.tuning_log.rank_tuned_records``) skips them.
    """
    return trace_schedule_id(trace) in {f.SCHEDULE_ID for f in FAMILIES}


def apply_default_schedule(sch: s_tir.Schedule, family: str, knobs) -> None:
    """Apply ``family``'s schedule with fixed ``knobs`` to a Schedule of the compute.

    The knobs are recorded as sampling decisions, so the trace is a point of the
    tuning space (:func:`pattern_conv2d_design_spaces`).
    """
    family_module(family).apply_schedule(sch, knobs)


def pattern_conv2d_design_spaces(sch: s_tir.Schedule, family: str) -> list[s_tir.Schedule]:
    """MetaSchedule design spaces of a ``pattern_conv2d_compute`` for ``family``."""
    return family_module(family).design_spaces(sch)


def pattern_conv2d_primfunc(
    shape: PatternConvShape,
    family: str,
    *,
    with_bias: bool = False,
    clip: tuple[float | None, float | None] | None = None,
    knobs=None,
) -> tirx.PrimFunc:
    """A scheduled PrimFunc ``(data, values, offsets[, bias], out)`` for one layer.

    ``clip`` = (min, max), either None for no bound, fuses ReLU / ReLU6 into the write-out.
    """
    module = family_module(family)
    if knobs is not None and knobs.lanes != shape.lanes:
        raise ValueError(f"knobs.lanes={knobs.lanes} must equal the packed group size {shape.lanes}")
    tile_w = knobs.tile_w if knobs else module.compute_tile_w(shape.out_width, shape.lanes)
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
    knobs: object  # the family's Knobs
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
    knobs=None,
) -> PatternConvKernel:
    """Knobs, operands and scheduled PrimFunc of one pattern-sparse conv layer.

    Parameters
    ----------
    data_shape : tuple of int
        ``[N, C, H, W]`` of the input.
    weight_shape : tuple of int
        ``[O, C, KH, KW]`` of the dense weight the rows were packed from.
    row_ptr, row_channel, row_tap, row_values : numpy.ndarray
        A packed weight's rows in the sparse format's read order: ``row_ptr [G+1]``,
        ``row_channel`` / ``row_tap [R]``, ``row_values [R, V]``
        (``PatternSparseWeight.row_channels_and_taps()``).
    stride : int
        The same stride along H and W.
    padding : tuple of int
        ``(top, left, bottom, right)``.
    family : str
        The target family that schedules it (:func:`family_of`).
    with_bias : bool
        Whether the kernel takes a bias ``[O]`` operand.
    clip : tuple of (float or None), optional
        ``(min, max)`` fused into the write-out (ReLU: ``(0, None)``, ReLU6: ``(0, 6)``).
    knobs : the family's Knobs, optional
        Fixed knobs; default: the compute's declared knobs.

    Returns
    -------
    kernel : PatternConvKernel
        The scheduled function, its unscheduled compute, the knobs and the constant
        operands (``values``, ``offsets``) it reads.
    """
    module = family_module(family)
    n, c, h, w = data_shape
    o, _, kh, kw = weight_shape
    lanes = row_values.shape[1]
    probe = PatternConvShape(n, c, h, w, o, (kh, kw), stride, tuple(padding), lanes, 1)
    if knobs is not None and knobs.lanes != lanes:
        raise ValueError(f"knobs.lanes={knobs.lanes} must equal the packed group size {lanes}")
    tile_w = knobs.tile_w if knobs else module.compute_tile_w(probe.out_width, lanes)
    values, offsets = kernel_operands(
        row_ptr, row_channel, row_tap, row_values, kw,
        probe.padded_height(tile_w), probe.padded_width(tile_w),
    )
    shape = PatternConvShape(n, c, h, w, o, (kh, kw), stride, tuple(padding), lanes, values.shape[1])
    compute = pattern_conv2d_compute(shape, tile_w, with_bias=with_bias, clip=clip)
    knobs = knobs or module.declared_knobs(compute)  # the same default the Relax pipeline applies
    func = schedule_pattern_conv2d(compute, family, knobs)
    return PatternConvKernel(func, values, offsets, shape, knobs, compute)
