"""The aligned pattern structure the pruner promises, checked from the weight values alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tvm_mcpruner.pruning import prune
from tvm_mcpruner.pruning.masks import aligned_pattern_mask, kept_kernel_count
from tvm_mcpruner.pruning.patterns import CENTRE_TAP, candidate_patterns, select_library
from tvm_mcpruner.sparse_format import pack_pattern_weights
from tvm_mcpruner.targets import get_preset


def check_aligned(weight: torch.Tensor, lanes: int, pattern_k: int, keep: float) -> None:
    """Every promise about a pruned 3x3 weight [O, C, 3, 3], from its values."""
    w = weight.detach().numpy()
    o, c = w.shape[:2]
    taps = (w != 0).reshape(o, c, 9)
    counts = taps.sum(axis=2)
    assert np.isin(counts, [0, pattern_k]).all(), "kernel neither all zero nor pattern_k taps"
    assert taps[counts > 0][:, CENTRE_TAP].all(), "kept kernel lost its centre tap"
    expected_kept = kept_kernel_count(c, keep)
    for start in range(0, o, lanes):
        group = taps[start:start + lanes]
        assert (group == group[0]).all(), f"filters {start}.. do not share tap masks"
        assert group[0].any(axis=1).sum() == expected_kept, f"group at {start} keeps wrong channel count"
    packed = pack_pattern_weights(w, lanes)
    assert np.diff(packed.group_ptr).tolist() == [expected_kept] * packed.num_groups
    assert packed.pattern_sizes.tolist() == [pattern_k] * len(packed.patterns)
    # Stored MACs are exactly the non-zeros plus the padding lanes of a short last group.
    padding = (-o) % lanes
    assert packed.stored_macs_per_pixel == packed.nnz + padding * expected_kept * pattern_k
    if o % lanes == 0:
        assert packed.fill == 1.0


def make_conv_model(c_in: int, c_out: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


@settings(max_examples=40, deadline=None)
@given(
    o=st.integers(1, 70), c=st.integers(1, 70), lanes=st.sampled_from([4, 8, 16]),
    pattern_k=st.integers(1, 9), keep=st.floats(0.01, 1.0), num_patterns=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_aligned_mask_property(o, c, lanes, pattern_k, keep, num_patterns, seed):
    weight = torch.randn(o, c, 3, 3, generator=torch.Generator().manual_seed(seed))
    from tvm_mcpruner.pruning.masks import group_energy

    library = select_library([group_energy(weight, lanes)], pattern_k, num_patterns)
    assert len(library) == min(num_patterns, len(candidate_patterns(pattern_k)))
    mask, pattern_ids = aligned_pattern_mask(weight, library, lanes, keep)
    assert mask.shape == weight.shape and mask.dtype == weight.dtype
    check_aligned(weight * mask, lanes, pattern_k, keep)
    assert ((pattern_ids >= 0).sum(dim=1) == kept_kernel_count(c, keep)).all()
    assert int(pattern_ids.max()) < len(library)


@pytest.mark.parametrize("target", ["host", "hikey970-cpu", "hikey970-mali", "cuda"])
@pytest.mark.parametrize("c_out", [20, 32, 7])
def test_prune_structure_per_target(target, c_out):
    lanes = get_preset(target).vector_width
    pruned, _ = prune(make_conv_model(8, c_out), target=target)
    check_aligned(pruned[0].weight, lanes, 4, 0.5)


def test_short_last_group_is_stored_at_full_width():
    # O=20 with V=16: one full group and one group of 4 real lanes, each keeping 8 of 16 channels.
    pruned, report = prune(make_conv_model(16, 20), target="x86-avx512")
    assert report.vector_width == 16
    check_aligned(pruned[0].weight, 16, 4, 0.5)
    assert report.layers[0].stored_kernels == 2 * 8


@pytest.mark.parametrize("pattern_k,keep", [(1, 0.1), (2, 0.3), (5, 0.75), (9, 1.0), (4, 1.0)])
def test_other_k_and_keep(pattern_k, keep):
    pruned, _ = prune(make_conv_model(12, 16), target="hikey970-cpu", pattern_k=pattern_k, keep_kernels=keep)
    check_aligned(pruned[0].weight, 4, pattern_k, keep)


def test_kept_count_rounds_half_up_and_at_least_one():
    assert kept_kernel_count(5, 0.5) == 3
    assert kept_kernel_count(4, 0.5) == 2
    assert kept_kernel_count(100, 0.001) == 1
    assert kept_kernel_count(3, 1.0) == 3


def test_connectivity_keeps_strongest_channels():
    # One group (O=4, V=4); channel energies made clearly ordered: keep the top half.
    weight = torch.ones(4, 6, 3, 3) * torch.tensor([1.0, 5.0, 2.0, 6.0, 3.0, 4.0]).view(1, 6, 1, 1)
    library = candidate_patterns(4)[:1]
    mask, pattern_ids = aligned_pattern_mask(weight, library, 4, 0.5)
    kept = (pattern_ids[0] >= 0).nonzero().flatten().tolist()
    assert kept == [1, 3, 5]
    assert mask[:, [0, 2, 4]].sum() == 0


def test_pattern_choice_follows_group_energy():
    # Group energy favours taps {0,1,2} + centre; the library holds that pattern and another.
    weight = torch.full((4, 1, 3, 3), 0.1)
    weight[:, 0, 0, :] = 1.0
    top_row = torch.zeros(9, dtype=torch.bool)
    top_row[[0, 1, 2, 4]] = True
    bottom_row = torch.zeros(9, dtype=torch.bool)
    bottom_row[[4, 6, 7, 8]] = True
    mask, pattern_ids = aligned_pattern_mask(weight, torch.stack([bottom_row, top_row]), 4, 1.0)
    assert pattern_ids.tolist() == [[1]]
    assert (mask.reshape(4, 9) == top_row).all()
