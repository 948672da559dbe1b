"""The CPU family (x86 AVX2 / AVX-512, ARM NEON): *how* the pattern-sparse conv2d runs there.

The register tile is ``tile_h`` output rows x ``tile_w`` output columns x one vector of
``V`` filters: for every (kernel, tap) entry the kernel loads one weight vector and
issues ``tile_h * tile_w`` FMAs, each with the input value broadcast straight from
memory (``vfmadd231ps mem{1toV}`` on x86, ``fmla .4s`` by element on NEON), so one offset
load and one weight load serve the whole tile. The accumulator tile lives in registers
(the tile loops are unrolled/vectorized); the write-out transposes it into NCHW with bias
and ReLU fused. Rows x filter groups (or, in "column" order, filter groups x column
strips) run in parallel; the pruner gives every group the same work, so a static split
balances the threads. Only generic primitives are used (split, reorder, compute_at,
vectorize, unroll, parallel), so LLVM's x86 and aarch64 backends both take it.

The tile is allocated in "global" scope at the tile loop: TVM makes a constant CPU
allocation under 1 KB an ``alloca`` (in "local" scope it would call the runtime's workspace
allocator once per tile), which lets LLVM keep a tile whose write-out is unrolled
(``unroll_store``) in registers.

Tuning: the tile sizes and the entry loop's unroll depth are *sampled*
(``sample_perfect_tile`` on ``acc``'s padded column loop, its row loop and its entry
loop), so a schedule with fixed knobs and one drawn by MetaSchedule have the same trace
and only differ in their decisions. Loop order and the store style (vector or scalar
columns, lanes unrolled or not) change the loop structure, so each combination is its
own design space (:func:`design_spaces`).

This module is one target family of ``topi_sparse.dispatch``: it defines the names a
family defines there (``NAME``, ``SCHEDULE_ID``, ``Knobs``, ``matches`` ...).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from tvm import s_tir, tirx

from .cpu_leftovers import ParallelVectorizeLeftovers
from .knobs import KNOBS_ANNOTATION, parse_knobs_annotation
from .pattern_conv2d import ROW_MULTIPLE

__all__ = ["LOOP_ORDERS", "MAX_UNROLL_ENTRIES", "NAME", "SCHEDULE_ID", "SEARCHED_LOOP_ORDERS", "Knobs",
           "PatternConvKnobs", "apply_schedule", "cheaper_loop_order", "compute_tile_w", "declared_knobs",
           "default_pattern_conv_knobs", "design_spaces", "leftover_rules", "matches", "max_accumulators",
           "schedule_pad_copy", "scheduled_knobs"]

NAME = "cpu"
# Recorded in every trace (the knobs annotation). Change it when a change here makes the
# traces logged by earlier code build something else than they did when measured (a new
# loop structure, a moved stage): tuning logs keep their records, and the choice among
# them skips the ones of another id (``topi_sparse.is_current_trace``). cpu-2: knobs
# recorded, the padded copy split by rows in "row" order.
SCHEDULE_ID = "cpu-2"


def matches(target) -> bool:
    """True for the targets this family schedules: TVM tags every LLVM CPU target ``cpu``."""
    return "cpu" in [str(key) for key in target.keys]


# Accumulator vectors a register tile may use: the ISA's vector registers minus the
# weight vector and a little slack for the compiler (AVX-512 and NEON have 32, AVX2 16).
_MAX_ACCUMULATORS = {16: 28, 8: 13, 4: 24}
_ENTRY_OVERHEAD = 3
# Largest entry-loop unroll depth the design space samples.
MAX_UNROLL_ENTRIES = 4
# How the threads split and walk (filter group, row of tiles, column of tiles): "group"
# keeps one group's weights hot while a thread walks the rows, each row tile by tile; "row"
# keeps a band of input rows hot while it walks the groups; "column" hands out a group's
# column strips and walks each down the rows (tiles below one another share input rows).
# "column" stays out of the tuning space (SEARCHED_LOOP_ORDERS): two threads write the
# same output cache lines wherever a strip boundary falls inside one, so its timings swing
# with the machine's state (``docs/design.md``, "CPU schedule").
LOOP_ORDERS = ("group", "row", "column")
SEARCHED_LOOP_ORDERS = ("group", "row")
# An input up to this size is taken to stay in a core's L2 (1 MB on recent x86 cores, 1-2 MB
# shared on a Cortex-A73), so re-reading it once per group costs little (cheaper_loop_order).
_CACHE_RESIDENT_BYTES = 512 * 1024


@dataclass(frozen=True)
class PatternConvKnobs:
    """How one pattern-sparse conv is scheduled.

    lanes: filters per vector (= the packed weight's group size; fixed by the format).
    tile_w: output columns per register tile; it must divide the compute's padded
        output width (see ``pattern_conv2d_nchw``).
    tile_h: output rows per register tile (accumulators = tile_h * tile_w vectors).
    order: loop order of the parallel nest, one of :data:`LOOP_ORDERS`.
    vectorize_store: write the transposed tile out with vector stores along columns.
    unroll_store: unroll the write-out over the tile's lanes too, so that the compiler
        sees the whole tile at constant indices and can transpose it in registers
        (shuffles) instead of reloading it element by element.
    unroll_entries: unroll depth of the entry loop (it must divide the layer's entries;
        the design space samples 1, 2 and 4 where they divide).
    """

    lanes: int
    tile_w: int
    vectorize_store: bool = True
    tile_h: int = 1
    order: str = "group"
    unroll_store: bool = False
    unroll_entries: int = 1

    def __post_init__(self) -> None:
        if self.order not in LOOP_ORDERS:
            raise ValueError(f"order must be one of {LOOP_ORDERS}, got {self.order!r}")
        if self.tile_w < 1 or self.tile_h < 1:
            raise ValueError(f"tile sizes must be >= 1, got tile_w={self.tile_w} tile_h={self.tile_h}")
        if self.unroll_entries < 1:
            raise ValueError(f"unroll_entries must be >= 1, got {self.unroll_entries}")

    def describe(self) -> str:
        """One line for reports, e.g. ``row order, 1x28 tile, vector store, entries x1``."""
        store = ("vector" if self.vectorize_store else "scalar") + (" unrolled" if self.unroll_store else "")
        return f"{self.order} order, {self.tile_h}x{self.tile_w} tile, {store} store, entries x{self.unroll_entries}"


def max_accumulators(lanes: int) -> int:
    """Vector accumulators a register tile may hold for ``lanes``-wide fp32 vectors."""
    return _MAX_ACCUMULATORS.get(lanes, 12)


def default_pattern_conv_knobs(out_width: int, lanes: int) -> PatternConvKnobs:
    """Register tile width that minimises the modelled cost of one output row.

    Only the tile: the default loop order depends on the whole layer and is read off its
    compute (:func:`cheaper_loop_order`), so ``order`` here is the dataclass default.
    ``build_pattern_conv2d(..., knobs=None)`` applies the full default.

    Per entry a tile costs its ``tile`` FMAs plus ~3 instructions of fixed overhead
    (offset load, weight load, address arithmetic), and a row needs ceil(OW / tile)
    tiles; wide tiles amortise the overhead, tiles that overshoot OW waste columns.
    """
    limit = max_accumulators(lanes)

    def cost(tile: int) -> tuple[int, int]:
        return (-(-out_width // tile) * (tile + _ENTRY_OVERHEAD), -tile)

    tile = min(range(1, min(limit, out_width) + 1), key=cost)
    return PatternConvKnobs(lanes=lanes, tile_w=tile)


def cheaper_loop_order(input_bytes: int, weight_bytes: int, groups: int, row_tiles: int) -> str:
    """The loop order (:data:`LOOP_ORDERS`) that streams fewer bytes through the caches.

    "group" keeps one filter group's weights hot while a thread walks the output rows,
    so the (padded) input is read once per group: ``groups * input_bytes``. "row" keeps a
    band of input rows hot while a thread walks the groups, so all the weights are read
    once per row of tiles: ``row_tiles * weight_bytes``. An input small enough to stay in
    a core's L2 costs little to re-read, so it keeps "group". Not modelled: L1 (at 9x
    fewer MACs a 224x224 layer's group keeps so few channels that their rows stay in L1
    under "group"). ``benchmarks/kernels.py --compare-orders`` measures the rule.
    """
    if input_bytes <= _CACHE_RESIDENT_BYTES:
        return "group"
    return "row" if row_tiles * weight_bytes < groups * input_bytes else "group"

Knobs = PatternConvKnobs


def compute_tile_w(out_width: int, lanes: int) -> int:
    """The register tile width the compute pads its columns for (the default tile)."""
    return default_pattern_conv_knobs(out_width, lanes).tile_w


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


def scheduled_knobs(func) -> PatternConvKnobs | None:
    """The knobs a scheduled kernel runs with (default or tuned); None for any other function.

    The CPU schedule records them as annotations of the write-out block
    (:data:`KNOBS_ANNOTATION` and ``<it>.tile_w|tile_h|unroll_entries``), the sampled
    sizes as the decisions they took.
    """
    if not isinstance(func, tirx.PrimFunc) or not func.attrs or "mcpruner.lanes" not in func.attrs:
        return None
    sch = s_tir.Schedule(func)
    try:
        annotations = sch.get(sch.get_sblock("out")).annotations
    except s_tir.ScheduleError:
        return None
    if KNOBS_ANNOTATION not in annotations:
        return None  # unscheduled, or scheduled by a log written before knobs were recorded
    knobs = parse_knobs_annotation(str(annotations[KNOBS_ANNOTATION]))
    sizes = {name: int(annotations[f"{KNOBS_ANNOTATION}.{name}"]) for name in ("tile_w", "tile_h", "unroll_entries")}
    return PatternConvKnobs(
        lanes=int(func.attrs["mcpruner.lanes"]), order=knobs["order"],
        vectorize_store=knobs["vectorize_store"] == "1", unroll_store=knobs["unroll_store"] == "1", **sizes)


def leftover_rules(lanes: int) -> list:
    """dlight rules for the TVM ops our rewrite leaves (adds, pools): parallel, vectorized loops."""
    return [ParallelVectorizeLeftovers(lanes)]


def apply_schedule(sch: s_tir.Schedule, knobs: PatternConvKnobs) -> None:
    """Apply the schedule with fixed ``knobs`` (recorded as sampling decisions) to ``sch``."""
    schedule_pad_copy(sch, knobs.order)
    _schedule_conv(sch, knobs.order, vectorize_store=knobs.vectorize_store, unroll_store=knobs.unroll_store,
                   lanes=knobs.lanes, tile_w=knobs.tile_w, tile_h=knobs.tile_h, unroll_entries=knobs.unroll_entries)


def design_spaces(sch: s_tir.Schedule) -> list[s_tir.Schedule]:
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

    In "row" order each thread convolves a band of output rows over every channel, so on
    wide rows the copy is split by rows too: a channel split would leave half of each
    thread's input in the other core's cache. Short rows keep the channel split, as do the
    other orders (they read every row on every thread): a row split of a short row is a
    scatter of short strided pieces. (Measurements: ``docs/design.md``, "CPU schedule".)
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
