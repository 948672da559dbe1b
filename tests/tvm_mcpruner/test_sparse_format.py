"""The pattern-aware sparse weight format (tvm_mcpruner/sparse_format.py).

Every property is checked against an independent, loop-based reading of the dense
weight, never against the packer's own arithmetic.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests._models import aligned_mask, nonzero_values
from tvm_mcpruner.sparse_format import (
    PatternSparseWeight,
    group_similar_filters,
    pack_pattern_weights,
    unpack_pattern_weights,
)

KERNELS = [(1, 1), (3, 3), (5, 5), (7, 7), (1, 3)]
LANES = [1, 4, 8, 16]
MASK_KINDS = ["zero", "dense", "random", "aligned"]


# ---------------------------------------------------------------------------------
# weight generators (numpy only; seeds come from hypothesis so failures replay)
# ---------------------------------------------------------------------------------
def group_structure(mask: np.ndarray, lanes: int) -> list[dict[int, np.ndarray]]:
    """Per filter group of a generated :func:`aligned_mask`: ``{kept channel: tap mask}``,
    read from the mask itself (every filter of a group has the same structure there)."""
    o, c = mask.shape[:2]
    taps = mask.reshape(o, c, -1)
    return [{int(ch): taps[g, ch] for ch in np.flatnonzero(taps[g].any(axis=1))} for g in range(0, o, lanes)]


def make_weight(kind, seed, o, c, kh, kw, lanes, density=0.5, keep=0.5):
    rng = np.random.default_rng(seed)
    w = nonzero_values(rng, (o, c, kh, kw))
    if kind == "zero":
        return np.zeros_like(w)
    if kind == "dense":
        return w
    if kind == "random":
        return (w * (rng.random((o, c, kh, kw)) < density)).astype(np.float32)
    if kind == "aligned":
        return w * aligned_mask(rng, o, c, lanes, kernel=(kh, kw), keep=keep)
    raise AssertionError(kind)


def padded_groups(w: np.ndarray, lanes: int) -> np.ndarray:
    """[G, lanes, C, KH*KW] with zero filters past O (independent of the packer)."""
    o, c, kh, kw = w.shape
    g = -(-o // lanes)
    out = np.zeros((g * lanes, c, kh * kw), dtype=np.float32)
    out[:o] = w.reshape(o, c, kh * kw)
    return out.reshape(g, lanes, c, kh * kw)


def independent_rows_per_group(w: np.ndarray, lanes: int) -> list[list[tuple[int, int]]]:
    """(channel, tap) rows the format must store for each group, in read order:
    channels ascending, taps in raster order, a row kept if any filter of the group
    has a non-zero weight there. Plain loops on purpose."""
    pg = padded_groups(w, lanes)
    rows = []
    for g in range(pg.shape[0]):
        group_rows = []
        for ch in range(pg.shape[2]):
            for tap in range(pg.shape[3]):
                if any(pg[g, v, ch, tap] != 0 for v in range(lanes)):
                    group_rows.append((ch, tap))
        rows.append(group_rows)
    return rows


weight_cases = st.fixed_dictionaries(
    {
        "o": st.integers(1, 70),
        "c": st.integers(1, 70),
        "kernel": st.sampled_from(KERNELS),
        "lanes": st.sampled_from(LANES),
        "kind": st.sampled_from(MASK_KINDS),
        "density": st.sampled_from([0.0, 0.01, 0.1, 0.3, 0.7, 0.95, 1.0]),
        "keep": st.floats(0.0, 1.0),
        "seed": st.integers(0, 2**32 - 1),
    }
)


def weight_from_case(case) -> np.ndarray:
    kh, kw = case["kernel"]
    return make_weight(
        case["kind"], case["seed"], case["o"], case["c"], kh, kw, case["lanes"],
        density=case["density"], keep=case["keep"],
    )


# ---------------------------------------------------------------------------------
# round trip
# ---------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(case=weight_cases)
def test_round_trip_is_exact(case):
    w = weight_from_case(case)
    packed = pack_pattern_weights(w, case["lanes"])
    assert isinstance(packed, PatternSparseWeight)
    assert packed.shape == w.shape
    assert packed.lanes == case["lanes"]
    back = unpack_pattern_weights(packed)
    assert back.dtype == np.float32
    assert back.shape == w.shape
    assert np.array_equal(back, w)
    assert np.array_equal(packed.to_dense(), w)


@settings(max_examples=200, deadline=None)
@given(case=weight_cases, shuffle_seed=st.integers(0, 2**32 - 1))
def test_reordered_packing_round_trips_and_never_issues_more(case, shuffle_seed):
    w = weight_from_case(case)
    w = np.ascontiguousarray(w[np.random.default_rng(shuffle_seed).permutation(w.shape[0])])
    plain = pack_pattern_weights(w, case["lanes"])
    packed = pack_pattern_weights(w, case["lanes"], reorder=True)
    assert np.array_equal(unpack_pattern_weights(packed), w)
    assert packed.stored_macs_per_pixel <= plain.stored_macs_per_pixel
    if packed.filter_order is not None:
        assert sorted(packed.filter_order.tolist()) == list(range(w.shape[0]))
        assert packed.stored_macs_per_pixel <= 0.95 * plain.stored_macs_per_pixel


@pytest.mark.parametrize("lanes", [4, 16])
def test_regrouping_recovers_shuffled_aligned_structure(lanes):
    rng = np.random.default_rng(lanes)
    w = make_weight("aligned", 7, 8 * lanes, 24, 3, 3, lanes, keep=0.25)
    shuffled = np.ascontiguousarray(w[rng.permutation(w.shape[0])])
    packed = pack_pattern_weights(shuffled, lanes, reorder=True)
    assert packed.filter_order is not None and packed.fill == 1.0
    assert packed.mac_reduction == pack_pattern_weights(w, lanes).mac_reduction
    assert pack_pattern_weights(w, lanes, reorder=True).filter_order is None, "aligned: kept as is"


def test_group_similar_filters_keeps_identical_filters_together():
    base = np.zeros((3, 5, 1, 1), np.float32)
    base[0, :2] = base[1, 2:4] = base[2, 4] = 1.0  # three distinct structures
    w = base[[0, 1, 2, 0, 1, 2, 0, 1, 2]] * np.arange(1, 10, dtype=np.float32)[:, None, None, None]
    order = group_similar_filters(w, 3)
    groups = [sorted(order[i:i + 3].tolist()) for i in range(0, 9, 3)]
    assert sorted(groups) == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("kind", ["zero", "dense"])
def test_round_trip_extremes(kernel, lanes, kind):
    w = make_weight(kind, 1, 37, 5, *kernel, lanes)
    packed = pack_pattern_weights(w, lanes)
    assert np.array_equal(unpack_pattern_weights(packed), w)
    if kind == "zero":
        assert packed.values.shape == (0, lanes)
        assert packed.num_kept_kernels == 0
        assert packed.nnz == 0
        assert list(packed.group_ptr) == [0] * (packed.num_groups + 1)
    else:
        assert packed.num_kept_kernels == packed.num_groups * 5
        assert packed.patterns.shape == (1, kernel[0] * kernel[1])
        assert packed.patterns.all()


def test_round_trip_casts_float64_and_lists():
    rng = np.random.default_rng(3)
    w64 = rng.standard_normal((6, 3, 3, 3)) * (rng.random((6, 3, 3, 3)) < 0.4)
    packed = pack_pattern_weights(w64, 4)
    assert packed.values.dtype == np.float32
    assert np.array_equal(unpack_pattern_weights(packed), w64.astype(np.float32))
    packed_list = pack_pattern_weights(w64.tolist(), 4)
    assert np.array_equal(packed_list.to_dense(), w64.astype(np.float32))


# ---------------------------------------------------------------------------------
# aligned structure: fill, structure recovered exactly
# ---------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(
    o=st.integers(1, 70),
    c=st.integers(1, 70),
    kernel=st.sampled_from(KERNELS),
    lanes=st.sampled_from(LANES),
    keep=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_aligned_structure_fill_and_layout(o, c, kernel, lanes, keep, seed):
    rng = np.random.default_rng(seed)
    mask = aligned_mask(rng, o, c, lanes, kernel=kernel, keep=keep)
    structure = group_structure(mask, lanes)
    w = nonzero_values(rng, mask.shape) * mask
    packed = pack_pattern_weights(w, lanes)

    # fill == 1.0 exactly when the last group is full (no value is exactly zero and
    # every group keeps >= 1 kernel, so padding lanes are the only stored zeros).
    if o % lanes == 0:
        assert packed.fill == 1.0
    else:
        assert packed.fill < 1.0
    assert packed.nnz == int(np.count_nonzero(w))

    # The stored structure is the generated one: per group, its kept channels
    # (ascending) and, per kept channel, the generated tap mask.
    assert packed.num_groups == len(structure)
    for g, group in enumerate(structure):
        lo, hi = packed.group_ptr[g], packed.group_ptr[g + 1]
        assert list(packed.channels[lo:hi]) == sorted(group)
        for k in range(lo, hi):
            got = packed.patterns[packed.pattern_ids[k]]
            assert np.array_equal(got, group[int(packed.channels[k])])
    # The library is exactly the set of distinct masks used, no duplicates.
    used = {m.tobytes() for group in structure for m in group.values()}
    assert {p.tobytes() for p in packed.patterns} == used
    assert len(packed.patterns) == len(used)
    assert np.array_equal(unpack_pattern_weights(packed), w)


def test_fill_below_one_for_unaligned_weight():
    # Two filters of one group with disjoint taps: half the stored MACs are zeros.
    w = np.zeros((2, 1, 3, 3), np.float32)
    w[0, 0, 0, 0] = 1.0
    w[1, 0, 2, 2] = 2.0
    packed = pack_pattern_weights(w, 2)
    assert packed.values.shape == (2, 2)
    assert packed.fill == 0.5
    assert packed.mac_reduction == 18 / 4


# ---------------------------------------------------------------------------------
# MAC accounting and the row index arrays
# ---------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(case=weight_cases)
def test_mac_counts_match_independent_count(case):
    w = weight_from_case(case)
    lanes = case["lanes"]
    packed = pack_pattern_weights(w, lanes)
    rows = independent_rows_per_group(w, lanes)
    stored = lanes * sum(len(r) for r in rows)
    dense = int(np.prod(w.shape))
    assert packed.dense_macs_per_pixel == dense
    assert packed.stored_macs_per_pixel == stored
    assert packed.values.shape == (stored // lanes, lanes)
    if stored:
        assert packed.mac_reduction == dense / stored
        assert packed.fill == np.count_nonzero(w) / stored
    assert packed.nnz == int(np.count_nonzero(w))


@settings(max_examples=300, deadline=None)
@given(case=weight_cases)
def test_row_ptr_and_row_channels_and_taps_are_consistent(case):
    w = weight_from_case(case)
    lanes = case["lanes"]
    packed = pack_pattern_weights(w, lanes)
    rows = independent_rows_per_group(w, lanes)

    row_ptr = packed.row_ptr
    assert row_ptr.shape == (packed.num_groups + 1,)
    assert row_ptr[0] == 0
    assert row_ptr[-1] == packed.values.shape[0]
    assert np.all(np.diff(row_ptr) >= 0)
    assert list(np.diff(row_ptr)) == [len(r) for r in rows]

    row_channel, row_tap = packed.row_channels_and_taps()
    assert row_channel.shape == row_tap.shape == (packed.values.shape[0],)
    expected = [rc for r in rows for rc in r]
    assert list(zip(row_channel.tolist(), row_tap.tolist())) == expected

    # Each value row holds exactly the group's weights at that (channel, tap).
    pg = padded_groups(w, lanes)
    for g in range(packed.num_groups):
        for r in range(row_ptr[g], row_ptr[g + 1]):
            assert np.array_equal(packed.values[r], pg[g, :, row_channel[r], row_tap[r]])

    # group_ptr / channels / pattern sizes agree with row_ptr.
    sizes = packed.pattern_sizes[packed.pattern_ids]
    for g in range(packed.num_groups):
        lo, hi = packed.group_ptr[g], packed.group_ptr[g + 1]
        assert int(sizes[lo:hi].sum()) == row_ptr[g + 1] - row_ptr[g]
    assert packed.num_kept_kernels == len(packed.pattern_ids) == packed.group_ptr[-1]


@pytest.mark.parametrize("o, lanes", [(32, 16), (8, 4), (3, 1), (20, 8)])
def test_row_ptr_trailing_empty_group(o, lanes):
    w = np.zeros((o, 3, 3, 3), np.float32)
    w[0, 1, 1, 1] = 1.0  # only the first group keeps anything
    packed = pack_pattern_weights(w, lanes)
    assert np.array_equal(packed.to_dense(), w)  # unpack does not use row_ptr
    row_ptr = packed.row_ptr  # once raised IndexError (np.add.reduceat past the end)
    assert row_ptr[-1] == packed.values.shape[0] == 1


def test_row_ptr_middle_empty_group():
    w = np.zeros((12, 2, 3, 3), np.float32)
    w[0:4, 0, 1, 1] = 1.0
    w[8:12, 1, :, 0] = 2.0
    packed = pack_pattern_weights(w, 4)
    assert list(packed.group_ptr) == [0, 1, 1, 2]
    assert list(packed.row_ptr) == [0, 1, 1, 4]


def test_row_arrays_all_zero_weight():
    packed = pack_pattern_weights(np.zeros((20, 3, 3, 3), np.float32), 8)
    assert list(packed.row_ptr) == [0, 0, 0, 0]
    row_channel, row_tap = packed.row_channels_and_taps()
    assert row_channel.shape == row_tap.shape == (0,)
    assert packed.fill == 0.0


# ---------------------------------------------------------------------------------
# size budget (DESIGN: compressed bytes <= 1.15x the bytes of the non-zero values)
# ---------------------------------------------------------------------------------
def _centre_patterns(k: int) -> np.ndarray:
    """All k-of-9 tap masks containing the centre tap (the pruner's candidates)."""
    rows = []
    for combo in itertools.combinations([t for t in range(9) if t != 4], k - 1):
        row = np.zeros(9, bool)
        row[[4, *combo]] = True
        rows.append(row)
    return np.array(rows)


@settings(max_examples=60, deadline=None)
@given(
    c=st.integers(64, 256),
    groups_of_16=st.integers(4, 16),  # O = 64..256, a multiple of every lanes value
    lanes=st.sampled_from([4, 8, 16]),  # the targets' fp32 vector widths
    library_size=st.sampled_from([1, 4, 8, 56]),  # 8 = pruner default, 56 = all candidates
    seed=st.integers(0, 2**32 - 1),
)
def test_nbytes_budget_aligned_4_of_9_keep_half(c, groups_of_16, lanes, library_size, seed):
    o = 16 * groups_of_16
    rng = np.random.default_rng(seed)
    candidates = _centre_patterns(4)
    library = candidates[rng.choice(len(candidates), library_size, replace=False)]
    mask = aligned_mask(rng, o, c, lanes, keep=0.5, patterns=[np.flatnonzero(p) for p in library])
    w = nonzero_values(rng, mask.shape) * mask
    packed = pack_pattern_weights(w, lanes)
    assert packed.fill == 1.0
    assert packed.nnz == o * round(0.5 * c) * 4
    assert packed.nbytes <= 1.15 * packed.nnz * 4, packed.nbytes / (packed.nnz * 4)
    assert packed.nbytes == (
        packed.values.nbytes + packed.group_ptr.nbytes + packed.channels.nbytes
        + packed.pattern_ids.nbytes + packed.patterns.size
    )


# ---------------------------------------------------------------------------------
# argument errors
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape", [(3, 3), (4, 3, 3), (2, 4, 3, 3, 1), (), (9,)]
)
def test_non_4d_weight_raises(shape):
    with pytest.raises(ValueError, match="4-d"):
        pack_pattern_weights(np.ones(shape, np.float32), 4)


@pytest.mark.parametrize("lanes", [0, -1, -16])
def test_lanes_below_one_raises(lanes):
    with pytest.raises(ValueError, match="lanes"):
        pack_pattern_weights(np.ones((4, 2, 3, 3), np.float32), lanes)
