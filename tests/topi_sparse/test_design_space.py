"""The tuning space of the CPU schedule: every point computes what torch computes."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tvm import s_tir

import topi_sparse
from topi_sparse import PatternConvKnobs, build_pattern_conv2d
from tvm_mcpruner.sparse_format import pack_pattern_weights

from .test_pattern_conv2d import assert_close, cpu_target, make_weight, out_size, torch_reference


def _kernel(x, w, stride, padding, lanes):
    packed = pack_pattern_weights(w, lanes)
    row_channel, row_tap = packed.row_channels_and_taps()
    return build_pattern_conv2d(
        x.shape, w.shape, packed.row_ptr, row_channel, row_tap, packed.values, stride=stride,
        padding=(padding,) * 4, family="cpu", clip=(0.0, None),
    )


def _run(func, kernel, x):
    lib = tvm.compile(tvm.IRModule({"main": func}), target=cpu_target())
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(a, dev) for a in (x.reshape(kernel.input_shape), kernel.values, kernel.offsets)]
    out = tvm.runtime.tensor(np.zeros(kernel.output_shape, np.float32), dev)
    lib(*args, out)
    return out.numpy()


def _decisions(sch: s_tir.Schedule) -> list:
    return [list(map(int, v)) if isinstance(v, (list, tvm.ir.Array)) else v
            for v in sch.trace.decisions.values()]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    c=st.integers(1, 12), o=st.integers(1, 40), h=st.integers(3, 16), wd=st.integers(3, 30),
    stride=st.sampled_from([1, 2]), padding=st.sampled_from([0, 1]),
    lanes=st.sampled_from([16, 8, 4]), seed=st.integers(1, 2**31 - 1),
)
def test_random_points_of_every_design_space_match_torch(c, o, h, wd, stride, padding, lanes, seed):
    assume(out_size(h, 3, stride, padding) > 0 and out_size(wd, 3, stride, padding) > 0)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, c, h, wd)).astype(np.float32)
    w = make_weight(rng, o, c, 3, 3, lanes, "aligned", 0.5)
    kernel = _kernel(x, w, stride, padding, lanes)
    ref = torch_reference(x, w, None, stride=stride, padding=padding, clip=(0.0, None))
    spaces = topi_sparse.pattern_conv2d_design_spaces(s_tir.Schedule(kernel.compute, seed=seed), "cpu")
    assert len(spaces) == 8  # searched loop order x column store x lanes unrolled
    for space in spaces:
        assert_close(_run(space.mod["main"], kernel, x), ref)


def test_default_schedule_is_a_point_of_the_space():
    # Same instruction kinds in the same order: MetaSchedule can mutate a logged default.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, 14, 14)).astype(np.float32)
    kernel = _kernel(x, make_weight(rng, 32, 8, 3, 3, 16, "aligned", 0.5), 1, 1, 16)
    default = s_tir.Schedule(kernel.compute)
    topi_sparse.apply_default_schedule(default, "cpu", kernel.knobs)
    space = topi_sparse.pattern_conv2d_design_spaces(s_tir.Schedule(kernel.compute), "cpu")[0]
    kinds = lambda sch: [inst.kind.name for inst in sch.trace.insts]  # noqa: E731
    assert kinds(default) == kinds(space)
    assert [kernel.knobs.tile_w] == [d[-1] for d in _decisions(default)][:1]


def test_every_point_of_the_space_reports_the_knobs_that_rebuild_it():
    # scheduled_knobs reads what a (tuned) schedule chose; fixed knobs give the same function.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 8, 7, 12)).astype(np.float32)
    kernel = _kernel(x, make_weight(rng, 32, 8, 3, 3, 16, "aligned", 0.5), 1, 1, 16)
    assert topi_sparse.scheduled_knobs(kernel.compute) is None
    assert topi_sparse.scheduled_knobs(kernel.func) == kernel.knobs
    seen = set()
    for seed in (1, 2, 3):
        for space in topi_sparse.pattern_conv2d_design_spaces(s_tir.Schedule(kernel.compute, seed=seed), "cpu"):
            knobs = topi_sparse.scheduled_knobs(space.mod["main"])
            seen.add((knobs.order, knobs.vectorize_store, knobs.unroll_store))
            rebuilt = topi_sparse.schedule_pattern_conv2d(kernel.compute, "cpu", knobs)
            tvm.ir.assert_structural_equal(rebuilt.without_attr("tirx.is_scheduled"), space.mod["main"])
    assert len(seen) == 8 and {order for order, _, _ in seen} == set(topi_sparse.SEARCHED_LOOP_ORDERS)


@pytest.mark.parametrize("tile_h,order,store,unroll_store,unroll_entries", [
    (2, "row", True, False, 1), (2, "group", False, True, 2), (1, "row", False, False, 4), (1, "group", True, True, 3),
    (2, "column", True, False, 2), (1, "column", False, True, 1),
])
def test_fixed_knobs_match_torch(tile_h, order, store, unroll_store, unroll_entries):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 6, 12, 14)).astype(np.float32)
    w = make_weight(rng, 24, 6, 3, 3, 8, "aligned", 0.5)
    kernel = _kernel(x, w, 1, 1, 8)
    if kernel.shape.entries % unroll_entries:
        unroll_entries = 1
    knobs = PatternConvKnobs(lanes=8, tile_w=7, tile_h=tile_h, order=order, vectorize_store=store,
                             unroll_store=unroll_store, unroll_entries=unroll_entries)
    func = topi_sparse.schedule_pattern_conv2d(kernel.compute, "cpu", knobs)
    ref = torch_reference(x, w, None, stride=1, padding=1, clip=(0.0, None))
    assert_close(_run(func, kernel, x), ref)


@pytest.mark.parametrize("tile_h,order", [(4, "group"), (2, "row"), (4, "row"), (4, "column")])
def test_row_tiles_that_overshoot_the_output_rows_match_torch(tile_h, order):
    # 7 output rows: acc is padded to 8 rows, so 2- and 4-row tiles fit; out drops row 8.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 12, 7, 7)).astype(np.float32)
    w = make_weight(rng, 32, 12, 3, 3, 16, "aligned", 0.5)
    kernel = _kernel(x, w, 1, 1, 16)
    assert kernel.shape.acc_rows(kernel.knobs.tile_w) == 8
    knobs = PatternConvKnobs(lanes=16, tile_w=7, tile_h=tile_h, order=order)
    func = topi_sparse.schedule_pattern_conv2d(kernel.compute, "cpu", knobs)
    ref = torch_reference(x, w, None, stride=1, padding=1, clip=(0.0, None))
    assert_close(_run(func, kernel, x), ref)


@pytest.mark.parametrize("order,width,split_by_rows", [
    ("row", 30, True), ("row", 9, False), ("group", 30, False), ("column", 30, False)])
def test_padded_copy_is_split_the_way_the_conv_splits_its_rows(order, width, split_by_rows):
    # "row" order on wide rows: every thread convolves a band of rows over all channels, so
    # the copy is parallel over padded rows (each thread writes what it reads); otherwise
    # over (channel, row) pairs, each a contiguous run of the padded input.
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 6, 9, width)).astype(np.float32)
    w = make_weight(rng, 16, 6, 3, 3, 8, "aligned", 0.5)
    kernel = _kernel(x, w, 1, 1, 8)
    knobs = PatternConvKnobs(lanes=8, tile_w=kernel.knobs.tile_w, order=order)
    func = topi_sparse.schedule_pattern_conv2d(kernel.compute, "cpu", knobs)
    padded_rows = kernel.shape.padded_height(kernel.knobs.tile_w)
    sch = s_tir.Schedule(func)
    extent = int(sch.get(sch.get_loops(sch.get_sblock("pad"))[0]).extent)
    assert extent == (padded_rows if split_by_rows else 6 * padded_rows)
    ref = torch_reference(x, w, None, stride=1, padding=1, clip=(0.0, None))
    assert_close(_run(func, kernel, x), ref)


def test_kernel_reading_its_input_directly_keeps_exact_rows():
    # No padded copy: rows past the input's end cannot be read, so no 4-row tile on 7 rows.
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 16, 7, 7)).astype(np.float32)
    kernel = _kernel(x, make_weight(rng, 16, 16, 1, 1, 16, "aligned", 0.5), 1, 0, 16)
    assert kernel.shape.reads_input_directly(kernel.knobs.tile_w)
    assert kernel.shape.acc_rows(kernel.knobs.tile_w) == 7
    with pytest.raises(ValueError, match="must divide"):
        topi_sparse.schedule_pattern_conv2d(kernel.compute, "cpu", PatternConvKnobs(lanes=16, tile_w=7, tile_h=4))


def test_tile_that_does_not_divide_the_padded_width_is_refused():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 8, 14)).astype(np.float32)
    kernel = _kernel(x, make_weight(rng, 8, 4, 3, 3, 8, "aligned", 0.5), 1, 1, 8)
    with pytest.raises(ValueError, match="must divide"):
        topi_sparse.schedule_pattern_conv2d(kernel.compute, "cpu", PatternConvKnobs(lanes=8, tile_w=5))
    with pytest.raises(ValueError, match="order"):
        PatternConvKnobs(lanes=8, tile_w=2, order="diagonal")
    with pytest.raises(ValueError, match="unroll_entries"):
        topi_sparse.schedule_pattern_conv2d(kernel.compute, "cpu",
                                            PatternConvKnobs(lanes=8, tile_w=7, unroll_entries=kernel.shape.entries + 1))
