"""Tunable knobs of the sparse kernels and the defaults used before any tuning."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KNOBS_ANNOTATION", "LOOP_ORDERS", "MAX_UNROLL_ENTRIES", "SEARCHED_LOOP_ORDERS", "PatternConvKnobs",
           "cheaper_loop_order",
           "default_pattern_conv_knobs", "max_accumulators", "scheduled_knobs", "trace_schedule_id"]

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
# "column" is kept for experiments but is not in the tuning space (SEARCHED_LOOP_ORDERS):
# against the default order on the 3x3 suite it measured 0.78-0.87x on the 224/112-wide
# layers (session 7), and its two threads write the same output cache lines wherever a
# strip boundary falls inside one: a column-order schedule the tuner timed 1.04x faster
# ran 0.44x and 0.84x in the compiled layer, in another state of this shared VM
# (128->128 3x3/s2 @56, session 8).
LOOP_ORDERS = ("group", "row", "column")
SEARCHED_LOOP_ORDERS = ("group", "row")
# Block annotation in which a schedule records its knobs (read by :func:`scheduled_knobs`).
KNOBS_ANNOTATION = "mcpruner.knobs"
# An input up to this size is taken to stay in a core's L2 (znver5: 1 MB, Cortex-A73: 1-2 MB
# shared), so re-reading it once per filter group costs little (:func:`cheaper_loop_order`).
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
    a core's L2 costs little to re-read, so it keeps "group". On this host (znver5) the
    rule picks "row" for VGG's 224x224 / 112x112 layers (1.2-1.4x faster kernels quiet,
    up to 1.7x with contended caches) and ResNet-50's 56x56 1x1 layers (1.14-1.38x), and
    "group" for the 7x7 stage (1.07-1.09x over "row"); ``benchmarks/kernels.py
    --compare-orders`` measures it. Not modelled: L1. At 9x fewer MACs a 224x224 layer's
    group keeps so few channels that their rows stay in L1 under "group" (0.87x there).
    """
    if input_bytes <= _CACHE_RESIDENT_BYTES:
        return "group"
    return "row" if row_tiles * weight_bytes < groups * input_bytes else "group"


def scheduled_knobs(func) -> PatternConvKnobs | None:
    """The knobs a scheduled kernel runs with (default or tuned); None for any other function.

    The CPU schedule records them as annotations of the write-out block
    (:data:`KNOBS_ANNOTATION` and ``<it>.tile_w|tile_h|unroll_entries``), the sampled
    sizes as the decisions they took.
    """
    from tvm import s_tir, tirx

    if not isinstance(func, tirx.PrimFunc) or not func.attrs or "mcpruner.lanes" not in func.attrs:
        return None
    sch = s_tir.Schedule(func)
    try:
        annotations = sch.get(sch.get_sblock("out")).annotations
    except s_tir.ScheduleError:
        return None
    if KNOBS_ANNOTATION not in annotations:
        return None  # unscheduled, or scheduled by a log written before knobs were recorded
    knobs = _parse_knobs_annotation(str(annotations[KNOBS_ANNOTATION]))
    sizes = {name: int(annotations[f"{KNOBS_ANNOTATION}.{name}"]) for name in ("tile_w", "tile_h", "unroll_entries")}
    return PatternConvKnobs(
        lanes=int(func.attrs["mcpruner.lanes"]), order=knobs["order"],
        vectorize_store=knobs["vectorize_store"] == "1", unroll_store=knobs["unroll_store"] == "1", **sizes)


def _parse_knobs_annotation(value: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in value.split(";"))


def trace_schedule_id(trace) -> str | None:
    """The schedule id a trace of our kernel was made with (None: made before ids existed)."""
    for inst in trace.insts:
        if inst.kind.name == "Annotate" and str(inst.attrs[0]) == KNOBS_ANNOTATION:
            return _parse_knobs_annotation(str(inst.inputs[1])).get("schedule")
    return None
