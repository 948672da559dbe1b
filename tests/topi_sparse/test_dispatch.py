"""The family that schedules a kernel is read off the target (kind and keys), in one place."""

from __future__ import annotations

import pytest
import tvm

import topi_sparse
import tvm_mcpruner as mcp


@pytest.mark.parametrize("target, family", [
    ({"kind": "llvm"}, "cpu"),
    ({"kind": "llvm", "mcpu": "znver1"}, "cpu"),
    ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}, "cpu"),
    ({"kind": "opencl", "device": "mali"}, None),
    ({"kind": "cuda", "arch": "sm_80"}, None),
])
def test_family_of_reads_kind_and_keys(target, family):
    assert topi_sparse.family_of(tvm.target.Target(target)) == family


@pytest.mark.parametrize("preset, family", [("host", "cpu"), ("x86-avx2", "cpu"), ("hikey970-cpu", "cpu"),
                                            ("hikey970-mali", None), ("cuda", None)])
def test_presets_take_their_family_from_their_target(preset, family):
    assert mcp.get_preset(preset).family == family


def test_every_family_module_defines_what_dispatch_calls():
    names = ("NAME", "SCHEDULE_ID", "Knobs", "matches", "compute_tile_w", "declared_knobs", "scheduled_knobs",
             "apply_schedule", "design_spaces", "leftover_rules")
    for module in topi_sparse.FAMILIES:
        assert all(hasattr(module, name) for name in names), module.__name__
        assert topi_sparse.family_module(module.NAME) is module
    assert len({m.SCHEDULE_ID for m in topi_sparse.FAMILIES}) == len(topi_sparse.FAMILIES)
