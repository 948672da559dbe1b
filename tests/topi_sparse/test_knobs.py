"""topi_sparse.knobs: the default register tile and loop order of the pattern-sparse conv."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numpy as np
import tvm

import topi_sparse
from tests._models import aligned_mask
from topi_sparse import PatternConvKnobs, build_pattern_conv2d, cheaper_loop_order, default_pattern_conv_knobs
from tvm_mcpruner.sparse_format import pack_pattern_weights

# Accumulator limit per fp32 vector width: the vector register file (AVX-512 and NEON:
# 32 registers, AVX2: 16) minus the weight vector and slack for the compiler. A tile
# wider than this spills accumulators to the stack.
ACCUMULATOR_LIMIT = {16: 28, 8: 13, 4: 24}
VECTOR_REGISTERS = {16: 32, 8: 16, 4: 32}


def wasted_share(out_width: int, tile_w: int) -> float:
    """Share of computed columns that are thrown away (acc is padded to full tiles)."""
    computed = -(-out_width // tile_w) * tile_w
    return (computed - out_width) / computed


@settings(max_examples=300, deadline=None)
@given(out_width=st.integers(1, 512), lanes=st.sampled_from([16, 8, 4]))
def test_tile_within_accumulator_limit_and_output_width(out_width, lanes):
    knobs = default_pattern_conv_knobs(out_width, lanes)
    assert isinstance(knobs, PatternConvKnobs)
    assert knobs.lanes == lanes
    assert knobs.vectorize_store is True
    assert 1 <= knobs.tile_w <= out_width
    assert knobs.tile_w <= ACCUMULATOR_LIMIT[lanes]
    assert knobs.tile_w + 1 <= VECTOR_REGISTERS[lanes]  # accumulators + weight vector


@pytest.mark.parametrize("lanes", [1, 2, 32])
@pytest.mark.parametrize("out_width", [1, 7, 13, 100])
def test_unknown_lanes_use_a_conservative_limit(lanes, out_width):
    knobs = default_pattern_conv_knobs(out_width, lanes)
    assert 1 <= knobs.tile_w <= min(out_width, 12)


@pytest.mark.parametrize("out_width", [56, 28, 14, 7])
def test_resnet_widths_waste_under_15_percent_lanes16(out_width):
    knobs = default_pattern_conv_knobs(out_width, 16)
    assert wasted_share(out_width, knobs.tile_w) < 0.15, knobs


@pytest.mark.parametrize("out_width, tile_w", [(56, 28), (28, 28), (14, 14), (7, 7)])
def test_resnet_widths_lanes16_exact_tiles(out_width, tile_w):
    # These widths all fit in (multiples of) <= 28 accumulators with no waste at all.
    assert default_pattern_conv_knobs(out_width, 16).tile_w == tile_w


@pytest.mark.parametrize("lanes", [8, 4])
@pytest.mark.parametrize("out_width", [112, 56, 28, 14, 7])
def test_common_widths_waste_under_15_percent_other_lanes(out_width, lanes):
    knobs = default_pattern_conv_knobs(out_width, lanes)
    assert wasted_share(out_width, knobs.tile_w) < 0.15, knobs


def test_default_is_deterministic_and_small_widths_take_the_full_row():
    for ow in range(1, ACCUMULATOR_LIMIT[16] + 1):
        assert default_pattern_conv_knobs(ow, 16).tile_w == ow
    assert default_pattern_conv_knobs(56, 16) == default_pattern_conv_knobs(56, 16)


def test_knobs_are_frozen():
    knobs = PatternConvKnobs(lanes=16, tile_w=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        knobs.tile_w = 8  # type: ignore[misc]


# --- loop order of the default schedule -------------------------------------------------

def test_loop_order_streams_the_smaller_operand():
    mb = 1 << 20
    # VGG conv1_2-like: 13 MB input, 4 groups, 32 KB of weights, 224 rows of tiles
    assert cheaper_loop_order(13 * mb, 32 * 1024, groups=4, row_tiles=224) == "row"
    # many heavy groups over few rows: re-reading 8 MB of weights per row costs more (56 MB)
    # than re-reading a 1 MB input per group (32 MB)
    assert cheaper_loop_order(1 * mb, 8 * mb, groups=32, row_tiles=7) == "group"
    # an input that stays in L2 keeps the group order whatever the weights
    assert cheaper_loop_order(300 * 1024, 1024, groups=64, row_tiles=14) == "group"


def _built(c, o, size, stride, keep):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((o, c, 3, 3)).astype(np.float32) * aligned_mask(rng, o, c, 16, keep=keep)
    packed = pack_pattern_weights(w, 16)
    return build_pattern_conv2d((1, c, size, size), w.shape, packed.row_ptr, *packed.row_channels_and_taps(),
                                packed.values, stride=stride, padding=(1, 1, 1, 1), family="cpu")


def test_default_knobs_pick_the_order_from_the_layer_and_match_the_declared_default():
    big = _built(64, 64, 112, 1, 0.5)     # 3.3 MB padded input, 4 groups
    small = _built(512, 64, 7, 1, 0.5)    # 200 KB input
    assert big.knobs.order == "row" and small.knobs.order == "group"
    for kernel in (big, small):
        # the knobs build_pattern_conv2d used are those the Relax pipeline gives the compute
        assert topi_sparse.default_schedule_trace(tvm.IRModule({"main": kernel.compute}), "cpu") is not None
        assert topi_sparse.schedule_pattern_conv2d(kernel.compute, "cpu").script() == kernel.func.script()


def test_direct_read_1x1_kernels_measure_their_input_itself():
    # no padded copy: the order model reads the input buffer [N, C*H*W] itself
    rng = np.random.default_rng(1)

    def built(c, size):
        w = rng.standard_normal((64, c, 1, 1)).astype(np.float32) * aligned_mask(rng, 64, c, 16, kernel=(1, 1), keep=0.5)
        packed = pack_pattern_weights(w, 16)
        return build_pattern_conv2d((1, c, size, size), w.shape, packed.row_ptr, *packed.row_channels_and_taps(),
                                    packed.values, stride=1, padding=(0, 0, 0, 0), family="cpu")

    big, small = built(256, 56), built(256, 14)   # 3.2 MB and 200 KB inputs, 4 groups
    assert big.shape.reads_input_directly(big.knobs.tile_w)
    assert big.knobs.order == "row" and small.knobs.order == "group"
