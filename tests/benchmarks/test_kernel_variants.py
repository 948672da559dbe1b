"""benchmarks/kernel_variants.py: the ablation is the kernel's own compute without index
loads, and one layer measures end to end (never its speed)."""

from __future__ import annotations

import numpy as np

import topi_sparse
from tvm_mcpruner.sparse_format import pack_pattern_weights

from .test_layers import _load

kernel_variants = _load("kernel_variants")


def test_one_layer_measures_the_kernel_and_its_ablation_without_index_loads():
    row = kernel_variants.measure_layer(8, 16, 6, 1, threads=2, repeats=1)
    assert set(row["ms"]) == {"index buffer", "ablation: no index loads"} and row["headroom"] > 0


def test_ablation_reads_no_offsets():
    c, o, lanes = 8, 16, 8
    w = kernel_variants.aligned_weight(np.random.default_rng(0), o, c, lanes)
    packed = pack_pattern_weights(w, lanes)
    kernel = topi_sparse.build_pattern_conv2d(
        (1, c, 6, 6), w.shape, packed.row_ptr, *packed.row_channels_and_taps(), packed.values,
        stride=1, padding=(1, 1, 1, 1), family="x86",
    )
    ablation = kernel_variants.ablation_primfunc(kernel)
    assert "offsets[" in kernel.func.script() and "offsets[" not in ablation.script()
    assert len(ablation.params) == len(kernel.func.params)  # same signature: called alike
