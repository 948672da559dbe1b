"""CPU schedule of the pattern-sparse conv2d: *how* it runs on x86 (AVX2 / AVX-512).

The register tile is ``tile_w`` output columns x one vector of ``V`` filters: for every
(kernel, tap) entry the kernel loads one weight vector and issues ``tile_w`` FMAs, each
with the input value broadcast straight from memory (``vfmadd231ps mem{1toV}``), so one
offset load and one weight load serve the whole tile. The accumulator tile lives in
registers (``acc`` is local and the tile loops are unrolled/vectorized); the write-out
transposes it into NCHW with bias and ReLU fused. Rows x filter groups run in parallel;
the pruner gives every group the same work, so a static split balances the threads.

The same schedule serves NEON (``V`` = 4) through LLVM's aarch64 backend: it only uses
generic primitives (split, reorder, compute_at, vectorize, unroll, parallel).
"""

from __future__ import annotations

from tvm import s_tir, tirx

from .knobs import PatternConvKnobs

__all__ = ["schedule_pattern_conv2d_cpu"]


def schedule_pattern_conv2d_cpu(func: tirx.PrimFunc, knobs: PatternConvKnobs) -> tirx.PrimFunc:
    """Schedule the PrimFunc made from :func:`pattern_conv2d_nchw` for a CPU target."""
    sch = s_tir.Schedule(func)
    _schedule_pad(sch)
    _schedule_conv(sch, knobs)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def _schedule_pad(sch: s_tir.Schedule) -> None:
    try:
        pad = sch.get_sblock("pad")
    except s_tir.ScheduleError:
        return  # the kernel reads its (flattened) input directly: no copy to schedule
    n, i = sch.get_loops(pad)
    wp = _padded_row_width(sch)
    rows, cols = sch.split(i, [None, wp])
    sch.parallel(sch.fuse(n, rows))
    del cols  # the column loop stays scalar: its bounds test would mask every lane


def _padded_row_width(sch: s_tir.Schedule) -> int:
    # The conv reads pad at offsets[g, e] + oh * (s * Wp) + ow * s; the stage that made
    # the pad knows Wp only through the compute, so it is recorded as a func attribute.
    return int(sch.mod["main"].attrs["mcpruner.padded_width"])


def _schedule_conv(sch: s_tir.Schedule, knobs: PatternConvKnobs) -> None:
    out = sch.get_sblock("out")
    acc = sch.get_sblock("acc")
    n, o, oh, ow = sch.get_loops(out)
    go, vo = sch.split(o, [None, knobs.lanes])
    wo, wi = sch.split(ow, [None, knobs.tile_w])
    sch.reorder(n, go, oh, wo, vo, wi)
    sch.compute_at(acc, wo, preserve_unit_loops=True)
    sch.set_scope(acc, 0, "local")
    # acc's loops under wo: n, g, oh (unit), then ow (tile_w), v (lanes), e.
    tile, lane, entry = sch.get_loops(acc)[-3:]
    sch.reorder(entry, tile, lane)
    sch.vectorize(lane)
    sch.unroll(tile)
    sch.parallel(sch.fuse(n, go, oh))
    sch.vectorize(wi) if knobs.vectorize_store else sch.unroll(wi)
    # Initialising acc must happen per tile, outside the entry loop (after parallel and
    # vectorize, or decompose_reduction refuses the non-compact dataflow).
    sch.decompose_reduction(acc, entry)
