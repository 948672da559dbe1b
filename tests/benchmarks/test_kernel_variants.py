"""benchmarks/kernel_variants.py: the ablation is the kernel's own compute without index
loads, the column-vector form computes the same outputs, and one layer measures end to
end (never its speed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm

import topi_sparse
from tvm_mcpruner.sparse_format import pack_pattern_weights

from . import load_benchmark

kernel_variants = load_benchmark("kernel_variants")


def test_one_layer_measures_the_kernel_and_its_ablation_without_index_loads():
    row = kernel_variants.measure_layer(8, 16, 6, 1, threads=2, repeats=1)
    assert set(row["ms"]) == {"index buffer", "ablation: no index loads", kernel_variants.COLUMN_FORM,
                              kernel_variants.PREPADDED}
    assert row["headroom"] > 0 and row["column_form_speedup"] > 0 and row["padded_copy_cost"] > 0
    assert row["pattern_major"]["ratio"] >= 1
    strided = kernel_variants.measure_layer(8, 16, 6, 2, threads=2, repeats=1)
    assert kernel_variants.COLUMN_FORM not in strided["ms"] and strided["column_form_speedup"] is None


@pytest.mark.parametrize("c, o, size", [(8, 16, 6), (16, 32, 13), (3, 16, 40)])
def test_the_column_form_computes_what_the_kernel_computes(c, o, size):
    """On a layer the CI runs quickly: its outputs equal the dense conv's (float32 sums in
    another order: rtol 1e-4, atol 1e-4), whatever the padding of its columns."""
    column = kernel_variants.prepare_kernel(c, o, size, 1, seed=size,
                                            knobs_change={"tile_w": kernel_variants.column_form_width()})
    lib = tvm.compile(tvm.IRModule({"main": kernel_variants.column_form_primfunc(column.kernel)}), target="llvm")
    lib(*column.operands, column.out)
    expected = torch.nn.functional.conv2d(torch.from_numpy(column.x.reshape(1, c, size, size)),
                                          torch.from_numpy(column.weight), padding=1)
    np.testing.assert_allclose(column.out.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)


def test_ablation_reads_no_offsets():
    c, o, lanes = 8, 16, 8
    w = kernel_variants.aligned_weight(np.random.default_rng(0), o, c, lanes)
    packed = pack_pattern_weights(w, lanes)
    kernel = topi_sparse.build_pattern_conv2d(
        (1, c, 6, 6), w.shape, packed.row_ptr, *packed.row_channels_and_taps(), packed.values,
        stride=1, padding=(1, 1, 1, 1), family="cpu",
    )
    ablation = kernel_variants.ablation_primfunc(kernel)
    assert "offsets[" in kernel.func.script() and "offsets[" not in ablation.script()
    assert len(ablation.params) == len(kernel.func.params)  # same signature: called alike


def test_pattern_major_padding_counts_the_longest_group_per_pattern():
    lanes = 2
    w = np.zeros((4, 3, 3, 3), np.float32)  # 2 groups of 2 filters, 3 channels
    a, b = [4, 0, 1, 3], [4, 5, 7, 8]  # two 4-tap patterns (flat tap indices)
    for g, kernels in enumerate([[(0, a), (1, a), (2, b)], [(0, b), (1, b)]]):
        for channel, pattern in kernels:
            w[2 * g:2 * g + 2, channel].flat[[t for t in range(9) if t in pattern]] = 1.0
    padding = kernel_variants.pattern_major_padding(w, lanes)
    # ours: 3 kernels (the longer group); pattern-major: max(2, 0) for a + max(1, 2) for b = 4
    assert padding == {"patterns": 2, "kernels_ours": 3, "kernels_pattern_major": 4, "ratio": 4 / 3}


@pytest.mark.parametrize("c, o, size, stride", [(8, 16, 6, 1), (16, 32, 14, 2), (3, 16, 28, 1)])
def test_the_pre_padded_variant_makes_no_copy_and_computes_what_the_kernel_computes(c, o, size, stride):
    """Same weight and knobs on an input padded beforehand: no pad stage, and the output
    equals the kernel's (checked inside ``prepadded_runner``) and the dense conv's."""
    prepared = kernel_variants.prepare_kernel(c, o, size, stride, seed=size)
    lib = tvm.compile(tvm.IRModule({"main": prepared.kernel.func}), target="llvm")
    runner = kernel_variants.prepadded_runner(prepared, lambda: lib(*prepared.operands, prepared.out), "llvm")
    if runner is None:  # the host's default tile decides; on other hosts this layer runs
        knobs = prepared.kernel.knobs
        pytest.skip(f"{knobs.lanes}-lane default tile of {knobs.tile_w} columns overruns the pre-padded "
                    f"{size}-wide row: its kernel would make a padded copy anyway")
    runner()
    expected = torch.nn.functional.conv2d(torch.from_numpy(prepared.x.reshape(1, c, size, size)),
                                          torch.from_numpy(prepared.weight), stride=stride, padding=1)
    np.testing.assert_allclose(prepared.out.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)
