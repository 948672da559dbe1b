"""CPU schedule of the pattern-sparse conv2d: *how* it runs on x86 (AVX2 / AVX-512).

The register tile is ``tile_h`` output rows x ``tile_w`` output columns x one vector of
``V`` filters: for every (kernel, tap) entry the kernel loads one weight vector and
issues ``tile_h * tile_w`` FMAs, each with the input value broadcast straight from
memory (``vfmadd231ps mem{1toV}``), so one offset load and one weight load serve the
whole tile. The accumulator tile lives in registers (the tile loops are
unrolled/vectorized); the write-out transposes it into NCHW with bias and ReLU fused.
Rows x filter groups (or, in "column" order, filter groups x column strips) run in
parallel; the pruner gives every group the same work, so a static split balances the threads.

The same schedule serves NEON (``V`` = 4) through LLVM's aarch64 backend: it only uses
generic primitives (split, reorder, compute_at, vectorize, unroll, parallel).

The tile is allocated in "global" scope at the tile loop: TVM makes a constant CPU
allocation under 1 KB an ``alloca`` (in "local" scope it calls the runtime's workspace
allocator once per tile), which lets LLVM keep a tile whose write-out is unrolled
(``unroll_store``) in registers. By itself it measured the same as "local" on this host
(median 1.005x over the 30 kernels of the 3x3 suite, session 7).

Tuning: the tile sizes and the entry loop's unroll depth are *sampled*
(``sample_perfect_tile`` on ``acc``'s padded column loop, its row loop and its entry
loop), so a schedule with fixed knobs and one drawn by MetaSchedule have the same trace
and only differ in their decisions. Loop order and the store style (vector or scalar
columns, lanes unrolled or not) change the loop structure, so each combination is its
own design space (:func:`pattern_conv2d_cpu_spaces`).
"""

from __future__ import annotations

import itertools
from tvm import s_tir, tirx

from .knobs import (
    KNOBS_ANNOTATION,
    MAX_UNROLL_ENTRIES,
    SEARCHED_LOOP_ORDERS,
    PatternConvKnobs,
    max_accumulators,
)
from .pattern_conv2d import ROW_MULTIPLE

__all__ = ["SCHEDULE_ID", "apply_pattern_conv2d_cpu", "pattern_conv2d_cpu_spaces", "schedule_pad_copy",
           "schedule_pattern_conv2d_cpu"]

# Recorded in every trace (the knobs annotation). Change it when a change here makes the
# traces logged by earlier code build something else than they did when measured (a new
# loop structure, a moved stage): tuning logs keep their records, and the choice among
# them skips the ones of another id (``topi_sparse.is_current_trace``). cpu-2: knobs
# recorded, the padded copy split by rows in "row" order.
SCHEDULE_ID = "cpu-2"


def schedule_pattern_conv2d_cpu(func: tirx.PrimFunc, knobs: PatternConvKnobs) -> tirx.PrimFunc:
    """Schedule the PrimFunc made from :func:`pattern_conv2d_nchw` for a CPU target."""
    sch = s_tir.Schedule(func)
    apply_pattern_conv2d_cpu(sch, knobs)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def apply_pattern_conv2d_cpu(sch: s_tir.Schedule, knobs: PatternConvKnobs) -> None:
    """Apply the schedule with fixed ``knobs`` (recorded as sampling decisions) to ``sch``."""
    schedule_pad_copy(sch, knobs.order)
    _schedule_conv(sch, knobs.order, vectorize_store=knobs.vectorize_store, unroll_store=knobs.unroll_store,
                   lanes=knobs.lanes, tile_w=knobs.tile_w, tile_h=knobs.tile_h, unroll_entries=knobs.unroll_entries)


def pattern_conv2d_cpu_spaces(sch: s_tir.Schedule) -> list[s_tir.Schedule]:
    """MetaSchedule design spaces: one per (searched loop order, store style), tiles and unroll sampled.

    Tile widths are divisors of ``acc``'s padded columns up to the accumulator budget,
    tile heights divisors of its (padded) rows up to ``ROW_MULTIPLE``, entry unroll depths
    divisors of its entries up to ``MAX_UNROLL_ENTRIES``; tiles whose product overflows the
    register file are left in (they spill and measure slow; the cost model learns it).
    """
    spaces = []
    for order, vectorize, unroll in itertools.product(SEARCHED_LOOP_ORDERS, (True, False), (False, True)):
        space = sch.copy()
        space.seed(sch.fork_seed())
        schedule_pad_copy(space, order)
        _schedule_conv(space, order, vectorize_store=vectorize, unroll_store=unroll, lanes=_lanes(space),
                       tile_w=None, tile_h=None, unroll_entries=None)
        spaces.append(space)
    return spaces


# Narrowest padded input row (floats) whose copy is split by rows in "row" order.
_ROW_SPLIT_MIN_WIDTH = 24


def _extent(sch: s_tir.Schedule, loop) -> int:
    return int(sch.get(loop).extent)


def _lanes(sch: s_tir.Schedule) -> int:
    return int(sch.mod["main"].attrs["mcpruner.lanes"])  # an attribute: reading it adds no trace step


def schedule_pad_copy(sch: s_tir.Schedule, order: str) -> None:
    """Parallelise the padded copy; in "row" order so that each thread writes what it reads.

    In "row" order each thread convolves a band of output rows over every channel; a copy
    split by channels leaves half of each thread's input in the other core's cache, so on
    wide rows the copy is split by rows too. On short rows a row split turns the copy into
    a scatter of short strided pieces, and the other orders read every row on every thread:
    those keep the channel split (contiguous writes). Measured against the channel split in
    row order, 2 threads, four interleaved A/B runs over the widest 3x3 layers (session 8):
    in two runs 1.04-1.50x on the rows of 58-226 floats (the 224- and 112-wide layers
    1.09-1.50x), in the other two 0.93-1.00x: this shared VM changes state (its FMA probe
    reads half at times), and the channel split's cross-core reads only cost in some states. Rows of 16 floats
    measured 0.75-0.88x, 30 floats 0.99-1.03x.
    """
    try:
        pad = sch.get_sblock("pad")
    except s_tir.ScheduleError:
        return  # the kernel reads its (flattened) input directly: no copy to schedule
    n, i = sch.get_loops(pad)
    wp = _padded_row_width(sch)
    if order == "row" and wp >= _ROW_SPLIT_MIN_WIDTH:
        channels = int(sch.get(pad).reads[0].source.shape[1])
        hp = _extent(sch, i) // (channels * wp)
        c, rows, cols = sch.split(i, [channels, hp, wp])
        sch.reorder(rows, c, cols)
    else:
        rows, cols = sch.split(i, [None, wp])
    sch.parallel(sch.fuse(n, rows))
    del cols  # the column loop stays scalar: its bounds test would mask every lane


def _padded_row_width(sch: s_tir.Schedule) -> int:
    # The conv reads pad at offsets[g, e] + oh * (s * Wp) + ow * s; the stage that made
    # the pad knows Wp only through the compute, so it is recorded as a func attribute.
    return int(sch.mod["main"].attrs["mcpruner.padded_width"])


def _schedule_conv(sch: s_tir.Schedule, order: str, *, vectorize_store: bool, unroll_store: bool, lanes: int,
                   tile_w: int | None, tile_h: int | None, unroll_entries: int | None) -> None:
    """The conv nest; tile sizes and unroll depth are fixed (recorded as decisions), or None to sample.

    The keyword arguments mean what the :class:`PatternConvKnobs` fields of the same names do.
    """
    out = sch.get_sblock("out")
    acc = sch.get_sblock("acc")
    _, _, acc_oh, acc_ow = sch.get_loops(acc)[:4]
    entries = _extent(sch, sch.get_loops(acc)[-1])
    if tile_w is not None:
        rows, cols = _extent(sch, acc_oh), _extent(sch, acc_ow)
        if cols % tile_w or rows % tile_h:
            raise ValueError(f"tile {tile_h}x{tile_w} must divide acc's {rows}x{cols} "
                             "(padded output rows x columns)")
        if entries % unroll_entries:
            raise ValueError(f"unroll_entries={unroll_entries} must divide the layer's {entries} entries")
        tile_w, tile_h = [cols // tile_w, tile_w], [rows // tile_h, tile_h]
        unroll_entries = [entries // unroll_entries, unroll_entries]
    # Sampled on acc's loops: its columns are padded to full tiles, so every divisor of
    # the padded width is a valid tile, including tiles that do not divide OW.
    _, tw = sch.sample_perfect_tile(acc_ow, n=2, max_innermost_factor=max_accumulators(lanes),
                                    decision=tile_w)
    _, th = sch.sample_perfect_tile(acc_oh, n=2, max_innermost_factor=ROW_MULTIPLE, decision=tile_h)
    n, o, oh, ow = sch.get_loops(out)
    go, vo = sch.split(o, [None, lanes])
    ho, hi = sch.split(oh, [None, th])
    wo, wi = sch.split(ow, [None, tw])
    # the parallel loops, then the serial tile loop under which a tile is computed
    outer, tile_loop = {"group": ([n, go, ho], [wo]), "row": ([n, ho, go], [wo]),
                        "column": ([n, go, wo], [ho])}[order]
    sch.reorder(*outer, *tile_loop, vo, hi, wi)
    sch.compute_at(acc, tile_loop[0], preserve_unit_loops=True)
    sch.set_scope(acc, 0, "global")  # a stack array when under 1 KB (module docstring)
    # acc's loops under the tile loop: n, g (unit), oh (tile_h), ow (tile_w), v (lanes), e.
    row, col, lane, entry = sch.get_loops(acc)[-4:]
    _, unroll = sch.sample_perfect_tile(entry, n=2, max_innermost_factor=MAX_UNROLL_ENTRIES,
                                        decision=unroll_entries)
    entry_outer, entry_inner = sch.split(entry, [None, unroll])
    sch.reorder(entry_outer, entry_inner, row, col, lane)
    sch.vectorize(lane)
    sch.unroll(col)
    sch.unroll(row)
    sch.parallel(sch.fuse(*outer))
    sch.vectorize(wi) if vectorize_store else sch.unroll(wi)
    if unroll_store:
        sch.unroll(vo)
    # Initialising acc must happen per tile, outside the entry loops (after parallel and
    # vectorize, or decompose_reduction refuses the non-compact dataflow).
    sch.decompose_reduction(acc, entry_outer)
    sch.unroll(entry_inner)
    # The chosen knobs, readable from the scheduled function (scheduled_knobs): the
    # sampled ones are recorded as their decisions, so a tuned schedule reports its own.
    # (One plain value per annotation: a trace prints and logs those, not a dict of them.)
    sch.annotate(out, KNOBS_ANNOTATION, f"schedule={SCHEDULE_ID};order={order};"
                                        f"vectorize_store={int(vectorize_store)};"
                                        f"unroll_store={int(unroll_store)}")
    for name, value in (("tile_w", tw), ("tile_h", th), ("unroll_entries", unroll)):
        sch.annotate(out, f"{KNOBS_ANNOTATION}.{name}", value)
