"""Tunable knobs of the sparse kernels and the defaults used before any tuning."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PatternConvKnobs", "default_pattern_conv_knobs"]

# Accumulator vectors a register tile may use: the ISA's vector registers minus the
# weight vector and a little slack for the compiler (AVX-512 and NEON have 32, AVX2 16).
_MAX_ACCUMULATORS = {16: 28, 8: 13, 4: 24}
_ENTRY_OVERHEAD = 3


@dataclass(frozen=True)
class PatternConvKnobs:
    """How one pattern-sparse conv is scheduled.

    lanes: filters per vector (= the packed weight's group size; fixed by the format).
    tile_w: output columns per register tile (accumulators = tile_w vectors).
    vectorize_store: write the transposed tile out with vector stores along columns.
    """

    lanes: int
    tile_w: int
    vectorize_store: bool = True


def default_pattern_conv_knobs(out_width: int, lanes: int) -> PatternConvKnobs:
    """Register tile width that minimises the modelled cost of one output row.

    Per entry a tile costs its ``tile`` FMAs plus ~3 instructions of fixed overhead
    (offset load, weight load, address arithmetic), and a row needs ceil(OW / tile)
    tiles; wide tiles amortise the overhead, tiles that overshoot OW waste columns.
    """
    limit = _MAX_ACCUMULATORS.get(lanes, 12)

    def cost(tile: int) -> tuple[int, int]:
        return (-(-out_width // tile) * (tile + _ENTRY_OVERHEAD), -tile)

    tile = min(range(1, min(limit, out_width) + 1), key=cost)
    return PatternConvKnobs(lanes=lanes, tile_w=tile)
