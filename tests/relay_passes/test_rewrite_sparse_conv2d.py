"""RewriteSparseConv2d: Before/Expected modules (structural equality), records, numerics.

TVM's habit: each rewrite is checked against an ``Expected`` module built by hand with
``relax.BlockBuilder`` -- the ``topi_sparse`` PrimFunc and the ``R.call_tir`` with the
operands ``pack_pattern_weights`` + ``topi_sparse.kernel_operands`` give -- and every
rewritten module is built and run against torch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tvm
from torch import nn
from tvm import relax
from tvm.script import tirx as T

import topi_sparse
import tvm_mcpruner as mcp
from relay_passes import RewriteSparseConv2d, SparseLayerRecord
from tests._models import aligned_pattern_weight, assert_close
from tvm_mcpruner.sparse_format import pack_pattern_weights
from tvm_mcpruner.targets import get_preset

HOST = get_preset("host")
LANES = HOST.vector_width
OPAQUE = 8  # relax OpPatternKind::kOpaque, the op_pattern the pass gives its PrimFuncs


# --------------------------------------------------------------------------- builders


def _f64(value: float) -> relax.PrimValue:
    return relax.prim_value(tvm.tirx.FloatImm("float64", value))


def _conv(x, weight, *, stride=1, padding=1, dilation=1, groups=1, out_dtype="float32"):
    """``relax.nn.conv2d`` as the frontends emit it (out_dtype given)."""
    return relax.op.nn.conv2d(
        x, weight, strides=stride, padding=padding, dilation=dilation, groups=groups,
        out_dtype=out_dtype,
    )


def _act(expr, act):
    if act is None:
        return expr
    if act == "relu":
        return relax.op.nn.relu(expr)
    lo, hi = act
    return relax.op.clip(expr, _f64(lo), _f64(hi))


def _module(in_shape, body, params=()) -> tvm.IRModule:
    """``main(x, *params)``: one dataflow block whose bindings ``body(bb, x)`` emits.

    ``body`` returns the (un-emitted) output expression.
    """
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(in_shape, "float32"))
    with bb.function("main", [x, *params]):
        with bb.dataflow():
            out = bb.emit_output(body(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def _before(in_shape, weight, *, bias=None, act=None, stride=1, padding=1, out_dtype="float32"):
    """conv2d(x, const W) [+ const bias] [-> act], each op its own binding."""

    def body(bb, x):
        y = _conv(x, relax.const(weight), stride=stride, padding=padding, out_dtype=out_dtype)
        if bias is None and act is None:
            return y
        y = bb.emit(y)
        if bias is not None:
            y = relax.op.add(y, relax.const(bias))
            if act is None:
                return y
            y = bb.emit(y)
        return _act(y, act)

    return _module(in_shape, body)


def _padding4(padding):
    p = (padding,) * 4 if isinstance(padding, int) else tuple(padding)
    return p if len(p) == 4 else (p[0], p[1], p[0], p[1])


def _expected_operands(weight: np.ndarray, lanes: int, padded_h: int, padded_w: int):
    """``values [G, E, V]`` and ``offsets [G, E]`` from the format's definition, written out here.

    Per group of ``lanes`` filters, the taps any of them keeps, channel by channel (ascending)
    and in raster order within a kernel; each entry's weights are the group's lanes, its
    offset the start of its input row in the zero-padded, flattened input:
    ``(channel * padded_h + ky) * padded_w + kx``. Shorter groups end with zero entries at 0.
    """
    o, c, kh, kw = weight.shape
    groups = -(-o // lanes)
    padded = np.zeros((groups * lanes, c, kh, kw), np.float32)
    padded[:o] = weight
    entries = []
    for g in range(groups):
        block = padded[g * lanes:(g + 1) * lanes]
        entries.append([(block[:, ch, ky, kx], (ch * padded_h + ky) * padded_w + kx)
                        for ch in range(c) for ky in range(kh) for kx in range(kw) if block[:, ch, ky, kx].any()])
    count = max(max(len(e) for e in entries), 1)
    values = np.zeros((groups, count, lanes), np.float32)
    offsets = np.zeros((groups, count), np.int32)
    for g, group in enumerate(entries):
        for e, (lane_values, offset) in enumerate(group):
            values[g, e], offsets[g, e] = lane_values, offset
    return values, offsets


def _sparse_call(bb, x, in_shape, weight, *, preset=HOST, bias=None, clip=None, stride=1, padding=1):
    """What the pass emits for one conv: the kernel's compute (``topi_sparse``'s definition of
    what it computes, unscheduled, no global_symbol, op_pattern opaque) added to ``bb``, called
    on operands built here from the format's definition (:func:`_expected_operands`), ``x``
    reshaped to ``[N, C*H*W]`` first when the kernel reads its input directly (no padding).
    """
    n, c, h, w = in_shape
    o, _, kh, kw = weight.shape
    lanes = preset.vector_width
    pad = _padding4(padding)
    probe = topi_sparse.PatternConvShape(n, c, h, w, o, (kh, kw), stride, pad, lanes, 1)
    tile_w = topi_sparse.family_module(preset.family).compute_tile_w(probe.out_width, lanes)
    values, offsets = _expected_operands(weight, lanes, probe.padded_height(tile_w), probe.padded_width(tile_w))
    shape = topi_sparse.PatternConvShape(n, c, h, w, o, (kh, kw), stride, pad, lanes, values.shape[1])
    prim = topi_sparse.pattern_conv2d_compute(shape, tile_w, with_bias=bias is not None, clip=clip)
    gvar = bb.add_func(prim.without_attr("global_symbol").with_attr("op_pattern", OPAQUE), "pattern_conv2d")
    if shape.reads_input_directly(tile_w):
        x = bb.emit(relax.op.reshape(x, (n, c * h * w)))
    args = [x, relax.const(values), relax.const(offsets)]
    if bias is not None:
        args.append(relax.const(np.ascontiguousarray(bias.reshape(o))))
    return relax.call_tir(gvar, args, relax.TensorType((n, o, shape.out_height, shape.out_width), "float32"))


def _rewrite(mod: tvm.IRModule, target="host") -> tuple[tvm.IRModule, list[SparseLayerRecord]]:
    rewrite = RewriteSparseConv2d(target)
    after = rewrite(mod)
    return after, list(rewrite.records)


# --------------------------------------------------------------------------- running


def _run(mod: tvm.IRModule, *inputs: np.ndarray) -> np.ndarray:
    ex = tvm.compile(mod, target=HOST.tvm_target())
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a, tvm.cpu()) for a in inputs]).numpy()


def _torch_conv(x, weight, *, bias=None, act=None, stride=1, padding=1, dilation=1, groups=1):
    t = torch.from_numpy
    top, left, bottom, right = _padding4(padding)
    y = F.pad(t(x), (left, right, top, bottom))
    y = F.conv2d(y, t(weight), None, stride, 0, dilation, groups)
    if bias is not None:
        y = y + t(bias)
    if act == "relu":
        y = F.relu(y)
    elif act is not None:
        y = y.clamp(*act)
    return y.numpy()


def _input(shape, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _calls_of(mod: tvm.IRModule, op_name: str) -> list[relax.Call]:
    op = tvm.ir.Op.get(op_name)
    found: list[relax.Call] = []
    relax.analysis.post_order_visit(
        mod["main"], lambda e: found.append(e) if isinstance(e, relax.Call) and e.op.same_as(op) else None
    )
    return found


# --------------------------------------------------------------------------- left alone

IN_SHAPE = (1, 8, 12, 10)
O = 2 * LANES  # two filter groups


def test_weight_that_is_a_parameter_is_left_alone():
    w = relax.Var("w", relax.TensorType((O, 8, 3, 3), "float32"))
    before = _module(IN_SHAPE, lambda bb, x: _conv(x, w), params=[w])
    after, records = _rewrite(before)
    tvm.ir.assert_structural_equal(after, before)
    assert len(records) == 1
    (rec,) = records
    assert rec.name == "conv2d_0" and not rec.sparse and rec.kernel == "relax.nn.conv2d"
    assert "not a constant" in rec.reason
    assert rec.weight_shape == (O, 8, 3, 3)


@pytest.mark.parametrize(
    "kind, conv_kw, weight_shape, reason_words",
    [
        ("depthwise", dict(groups=8), (8, 1, 3, 3), ("groups=8", "depthwise")),
        ("grouped", dict(groups=2), (O, 4, 3, 3), ("groups=2", "grouped")),
        ("dilation2", dict(dilation=2, padding=2), (O, 8, 3, 3), ("dilation (2, 2)",)),
    ],
)
def test_unsupported_conv_is_left_alone(kind, conv_kw, weight_shape, reason_words):
    weight = np.zeros(weight_shape, np.float32)
    weight[..., 1, 1] = 1.0  # sparse enough to be tempting
    before = _module(IN_SHAPE, lambda bb, x: _conv(x, relax.const(weight), **conv_kw))
    after, (rec,) = _rewrite(before)
    tvm.ir.assert_structural_equal(after, before)
    assert not rec.sparse and rec.kernel == "relax.nn.conv2d"
    for word in reason_words:
        assert word in rec.reason, rec.reason


def test_mali_target_leaves_convs_to_tvm():
    weight = aligned_pattern_weight(8, 8, 4)
    before = _before(IN_SHAPE, weight, bias=np.ones((1, 8, 1, 1), np.float32), act="relu")
    after, (rec,) = _rewrite(before, "hikey970-mali")
    tvm.ir.assert_structural_equal(after, before)
    assert not rec.sparse and rec.kernel == "relax.nn.conv2d"
    assert "mali" in rec.reason
    assert len(_calls_of(after, "relax.nn.conv2d")) == 1


# --------------------------------------------------------------------------- rewrites

RELU6 = (0.0, 6.0)
EPILOGUES = {
    # name: (bias?, act, stride, padding, expected record.fused)
    "bare": (False, None, 1, 1, []),
    "bias": (True, None, 1, 1, ["bias"]),
    "relu": (False, "relu", 1, 1, ["relu"]),
    "bias_relu": (True, "relu", 1, 1, ["bias", "relu"]),
    "bias_relu6": (True, RELU6, 1, 1, ["bias", "clip(0.0, 6.0)"]),
    "bias_relu_stride2": (True, "relu", 2, 1, ["bias", "relu"]),
    "bias_relu_pad0": (True, "relu", 1, 0, ["bias", "relu"]),
    "bias_relu_asym_pad": (True, "relu", 1, (0, 2, 1, 1), ["bias", "relu"]),
}


@pytest.mark.parametrize("case", list(EPILOGUES))
def test_aligned_conv_with_epilogue_becomes_one_sparse_call(case):
    with_bias, act, stride, padding, fused = EPILOGUES[case]
    weight = aligned_pattern_weight(O, 8, LANES, seed=3)
    bias = np.random.default_rng(4).standard_normal((1, O, 1, 1)).astype(np.float32) if with_bias else None
    before = _before(IN_SHAPE, weight, bias=bias, act=act, stride=stride, padding=padding)

    after, (rec,) = _rewrite(before)

    clip = None if act is None else ((0.0, None) if act == "relu" else act)
    expected = _module(
        IN_SHAPE,
        lambda bb, x: _sparse_call(bb, x, IN_SHAPE, weight, bias=bias, clip=clip, stride=stride, padding=padding),
    )
    tvm.ir.assert_structural_equal(after, expected)
    assert rec.sparse and rec.kernel == "pattern_conv2d" and rec.fused == fused
    assert not _calls_of(after, "relax.nn.conv2d") and not _calls_of(after, "relax.add")

    x = _input(IN_SHAPE)
    ref = _torch_conv(x, weight, bias=bias, act=act, stride=stride, padding=padding)
    assert_close(_run(after, x), ref)


def test_bias_that_is_not_per_channel_is_not_fused():
    """A full [1, O, H, W] addend is no conv bias: the conv is rewritten alone, add + relu stay."""
    weight = aligned_pattern_weight(O, 8, LANES, seed=5)
    addend = _input((1, O, 12, 10), seed=6)
    before = _before(IN_SHAPE, weight, bias=addend, act="relu")

    after, (rec,) = _rewrite(before)

    def body(bb, x):
        y = bb.emit(_sparse_call(bb, x, IN_SHAPE, weight))
        y = bb.emit(relax.op.add(y, relax.const(addend)))
        return relax.op.nn.relu(y)

    tvm.ir.assert_structural_equal(after, _module(IN_SHAPE, body))
    assert rec.sparse and rec.fused == []
    x = _input(IN_SHAPE)
    assert_close(_run(after, x), _torch_conv(x, weight, bias=addend, act="relu"))


def test_clip_with_other_bounds_is_fused_as_is():
    weight = aligned_pattern_weight(O, 8, LANES, seed=7)
    before = _before(IN_SHAPE, weight, act=(-0.5, 0.5))
    after, (rec,) = _rewrite(before)
    expected = _module(IN_SHAPE, lambda bb, x: _sparse_call(bb, x, IN_SHAPE, weight, clip=(-0.5, 0.5)))
    tvm.ir.assert_structural_equal(after, expected)
    assert rec.fused == ["clip(-0.5, 0.5)"]
    x = _input(IN_SHAPE)
    assert_close(_run(after, x), _torch_conv(x, weight, act=(-0.5, 0.5)))


# --------------------------------------------------------------------------- records


def _four_conv_module():
    """sparse 3x3 -> dense 3x3 -> depthwise 3x3 -> 1x1, each + bias + relu; and the weights."""
    c0 = 8
    w_sparse = aligned_pattern_weight(O, c0, LANES, seed=11)
    w_dense = np.random.default_rng(12).standard_normal((O, O, 3, 3)).astype(np.float32) * 0.2
    w_dw = np.random.default_rng(13).standard_normal((O, 1, 3, 3)).astype(np.float32)
    w_1x1 = np.random.default_rng(14).standard_normal((LANES, O, 1, 1)).astype(np.float32) * 0.3
    biases = [np.random.default_rng(20 + i).standard_normal((1, w.shape[0], 1, 1)).astype(np.float32)
              for i, w in enumerate((w_sparse, w_dense, w_dw, w_1x1))]

    def body(bb, x):
        y = x
        for i, (w, groups, pad) in enumerate(((w_sparse, 1, 1), (w_dense, 1, 1), (w_dw, O, 1), (w_1x1, 1, 0))):
            y = bb.emit(_conv(y, relax.const(w), groups=groups, padding=pad))
            y = bb.emit(relax.op.add(y, relax.const(biases[i])))
            y = relax.op.nn.relu(y)
            if i < 3:
                y = bb.emit(y)
        return y

    def reference(x):
        y = torch.from_numpy(x)
        for w, b, groups, pad in zip((w_sparse, w_dense, w_dw, w_1x1), biases, (1, 1, O, 1), (1, 1, 1, 0)):
            y = F.relu(F.conv2d(y, torch.from_numpy(w), torch.from_numpy(b.reshape(-1)), 1, pad, 1, groups))
        return y.numpy()

    return _module(IN_SHAPE, body), (w_sparse, w_dense, w_dw, w_1x1), reference


def test_one_record_per_conv_in_model_order():
    before, weights, reference = _four_conv_module()
    after, records = _rewrite(before)

    assert [r.name for r in records] == ["conv2d_0", "conv2d_1", "conv2d_2", "conv2d_3"]
    assert [r.weight_shape for r in records] == [w.shape for w in weights]
    assert [r.sparse for r in records] == [True, False, False, False]
    assert [r.kernel for r in records] == ["pattern_conv2d", "pattern_conv2d", "relax.nn.conv2d", "pattern_conv2d"]
    assert all(isinstance(r.reason, str) and r.reason for r in records)

    sparse, dense, depthwise, pointwise = records
    assert sparse.mac_reduction == pytest.approx(4.5)
    assert sparse.fill == pytest.approx(1.0)
    assert "4.50x fewer MACs" in sparse.reason
    assert dense.mac_reduction == pytest.approx(1.0)
    assert "direct dense" in dense.reason and "direct dense" in pointwise.reason
    assert "groups=" in depthwise.reason
    assert [r.fused for r in records] == [["bias", "relu"], ["bias", "relu"], [], ["bias", "relu"]]

    # three convs became sparse calls; the depthwise conv (and its add, relu) stayed
    assert len(_calls_of(after, "relax.call_tir")) == 3
    assert len(_calls_of(after, "relax.nn.conv2d")) == 1
    x = _input(IN_SHAPE)
    assert_close(_run(after, x), reference(x))


def test_weights_pruned_by_mcp_prune_are_recognised():
    """The pass reads structure from the values alone: a torch-pruned conv is found sparse."""
    torch.manual_seed(0)
    conv = nn.Conv2d(16, O, 3, padding=1, bias=False)
    pruned, report = mcp.prune(nn.Sequential(conv), target="host", pattern_k=4, keep_kernels=0.5)
    weight = pruned[0].weight.detach().numpy().copy()
    assert report.layers[0].pruned
    before = _before((1, 16, 9, 9), weight, act="relu")
    after, (rec,) = _rewrite(before)
    assert rec.sparse and rec.mac_reduction == pytest.approx(4.5)
    x = _input((1, 16, 9, 9))
    assert_close(_run(after, x), _torch_conv(x, weight, act="relu"))


def test_records_restart_on_every_run():
    weight = aligned_pattern_weight(O, 8, LANES)
    rewrite = RewriteSparseConv2d("host")
    mod = _before(IN_SHAPE, weight)
    rewrite(mod)
    rewrite(mod)
    assert [r.name for r in rewrite.records] == ["conv2d_0"]


# --------------------------------------------------------------------------- targets


def test_hikey970_cpu_packs_groups_of_four_lanes():
    o, c = 8, 8
    weight = aligned_pattern_weight(o, c, 4, seed=9)
    bias = np.random.default_rng(10).standard_normal((1, o, 1, 1)).astype(np.float32)
    before = _before(IN_SHAPE, weight, bias=bias, act="relu")
    preset = get_preset("hikey970-cpu")

    after, (rec,) = _rewrite(before, "hikey970-cpu")

    expected = _module(
        IN_SHAPE, lambda bb, x: _sparse_call(bb, x, IN_SHAPE, weight, preset=preset, bias=bias, clip=(0.0, None))
    )
    tvm.ir.assert_structural_equal(after, expected)
    assert rec.sparse and rec.mac_reduction == pytest.approx(4.5)
    (call,) = _calls_of(after, "relax.call_tir")
    values, offsets = (a.value.numpy() for a in call.args[1].fields[1:3])
    groups, entries = o // 4, (c // 2) * 4  # half the channels kept, 4 taps each
    assert values.shape == (groups, entries, 4)
    assert offsets.shape == (groups, entries) and offsets.dtype == np.int32
    # the NEON schedule is the generic CPU one: the same PrimFunc builds and runs here
    x = _input(IN_SHAPE)
    assert_close(_run(after, x), _torch_conv(x, weight, bias=bias, act="relu"))


# --------------------------------------------------------------------------- regressions


def test_conv_with_default_out_dtype_is_rewritten():
    weight = aligned_pattern_weight(O, 8, LANES, seed=15)
    before = _before(IN_SHAPE, weight, act="relu", out_dtype=None)
    after, (rec,) = _rewrite(before)
    assert rec.sparse, rec.reason
    x = _input(IN_SHAPE)
    assert_close(_run(after, x), _torch_conv(x, weight, act="relu"))


def test_shared_weight_with_unsupported_dilation_stays_correct():
    weight = aligned_pattern_weight(O, 8, LANES, seed=16)
    shared = relax.const(weight)

    def body(bb, x):
        a = bb.emit(_conv(x, shared, padding=1))
        b = bb.emit(_conv(x, shared, padding=2, dilation=2))
        return relax.op.add(a, b)

    before = _module(IN_SHAPE, body)
    after, records = _rewrite(before)
    assert [r.sparse for r in records] == [True, False]
    x = _input(IN_SHAPE)
    ref = _torch_conv(x, weight) + _torch_conv(x, weight, padding=2, dilation=2)
    assert_close(_run(after, x), ref)


def _multi_use_module(weight, bias):
    """relu(conv + b) + conv: the conv's value is needed twice."""

    def body(bb, x):
        y = bb.emit(_conv(x, relax.const(weight)))
        z = bb.emit(relax.op.add(y, relax.const(bias)))
        z = bb.emit(relax.op.nn.relu(z))
        return relax.op.add(z, y)

    return _module(IN_SHAPE, body)


def test_conv_whose_value_is_used_twice_stays_correct():
    weight = aligned_pattern_weight(O, 8, LANES, seed=17)
    bias = _input((1, O, 1, 1), seed=18)
    after, (rec,) = _rewrite(_multi_use_module(weight, bias))
    assert rec.sparse and not _calls_of(after, "relax.nn.conv2d")
    x = _input(IN_SHAPE)
    ref = _torch_conv(x, weight, bias=bias, act="relu") + _torch_conv(x, weight)
    assert_close(_run(after, x), ref)


def test_conv_whose_value_is_used_twice_runs_once():
    weight = aligned_pattern_weight(O, 8, LANES, seed=17)
    bias = _input((1, O, 1, 1), seed=18)
    after, _ = _rewrite(_multi_use_module(weight, bias))
    assert len(_calls_of(after, "relax.call_tir")) == 1


# --------------------------------------------------------------------------- Linear layers


def _pruned_mlp(batch: int):
    torch.manual_seed(21)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 40), nn.ReLU(), nn.Linear(40, 10)).eval()
    x = torch.randn(batch, 3, 4, 4)
    pruned, report = mcp.prune(model, target="host", keep_linear=0.25, min_in_channels=4)
    return pruned, report, x


@pytest.mark.parametrize("batch", [1, 3])
def test_linear_with_constant_weight_runs_as_sparse_1x1(batch):
    pruned, report, x = _pruned_mlp(batch)
    mod = mcp.from_torch(pruned, (x,))
    after, records = _rewrite(relax.transform.FoldConstant()(mod))
    assert [r.name for r in records] == ["dense_0", "dense_1"]
    assert [r.weight_shape for r in records] == [(40, 48, 1, 1), (10, 40, 1, 1)]
    # 40 filters in groups of LANES (the last one short, padded to LANES): 0.25 of 48
    # features kept per group, so 12 MACs per padded lane
    stored_lanes = -(-40 // LANES) * LANES
    assert records[0].sparse and records[0].mac_reduction == pytest.approx(48 * 40 / (stored_lanes * 12))
    assert [r.sparse for r in records] == [layer.pruned for layer in report.layers]
    assert not _calls_of(after, "relax.matmul") and not _calls_of(after, "relax.nn.conv2d")
    with torch.no_grad():
        ref = pruned(x).numpy()
    assert_close(_run(after, x.numpy()), ref)


def test_matmul_with_a_non_constant_weight_is_left_alone():
    def body(bb, x):
        return relax.op.matmul(x, relax.op.permute_dims(x))

    before = _module((4, 8), body)
    after, records = _rewrite(before)
    assert records == [] and _calls_of(after, "relax.matmul")


# --------------------------------------------------------------------------- filter regrouping


def test_aligned_structure_in_shuffled_filter_order_is_regrouped():
    """Filters that share structure with non-neighbours (another tool's grouping) run sparse."""
    weight = aligned_pattern_weight(O, 8, LANES, seed=31)
    order = np.random.default_rng(32).permutation(O)
    shuffled = np.ascontiguousarray(weight[order])
    bias = _input((1, O, 1, 1), seed=33)
    aligned = pack_pattern_weights(weight, LANES).mac_reduction
    assert pack_pattern_weights(shuffled, LANES).mac_reduction < 0.7 * aligned  # neighbours differ
    after, (rec,) = _rewrite(_before(IN_SHAPE, shuffled, bias=bias, act="relu"))
    assert rec.sparse and "regrouped" in rec.reason, rec.reason
    assert rec.mac_reduction == aligned
    assert len(_calls_of(after, "relax.take")) == 1, "outputs put back in the model's filter order"
    x = _input(IN_SHAPE)
    assert_close(_run(after, x), _torch_conv(x, shuffled, bias=bias, act="relu"))


# --------------------------------------------------------------------------- Expected written out by hand


@T.prim_func(private=True, s_tir=True)
def _expected_kernel(data: T.Buffer((1, 2, 4, 4), "float32"), values: T.Buffer((1, 4, 4), "float32"),
                     offsets: T.Buffer((1, 4), "int32"), out: T.Buffer((1, 4, 4, 4), "float32")):
    # 2 channels of 4x4 zero-padded to 6x6 and flattened; each entry's input row starts at
    # offsets[g, e]; 4 filters (one group) accumulate along the lanes; ReLU on the way out.
    T.func_attr({"mcpruner.kernel": "pattern_conv2d", "mcpruner.lanes": 4, "mcpruner.padded_width": 6,
                 "mcpruner.tile_w": 4, "op_pattern": 8, "tirx.noalias": True})
    pad = T.sblock_alloc_buffer((1, 72))
    acc = T.sblock_alloc_buffer((1, 1, 4, 4, 4))
    for n, i in T.grid(1, 72):
        with T.sblock("pad"):
            v_n, v_i = T.axis.remap("SS", [n, i])
            T.reads(data[v_n, v_i // 36, v_i % 36 // 6 - 1, v_i % 6 - 1])
            T.writes(pad[v_n, v_i])
            pad[v_n, v_i] = T.if_then_else(6 <= v_i % 36 and v_i % 36 < 30 and 1 <= v_i % 6 and v_i % 6 < 5,
                                           data[v_n, v_i // 36, v_i % 36 // 6 - 1, v_i % 6 - 1], T.float32(0.0))
    for n, g, oh, ow, v, e in T.grid(1, 1, 4, 4, 4, 4):
        with T.sblock("acc"):
            v_n, v_g, v_oh, v_ow, v_v, v_e = T.axis.remap("SSSSSR", [n, g, oh, ow, v, e])
            T.reads(values[v_g, v_e, v_v], pad[v_n, v_oh * 6 + offsets[v_g, v_e] + v_ow], offsets[v_g, v_e])
            T.writes(acc[v_n, v_g, v_oh, v_ow, v_v])
            with T.init():
                acc[v_n, v_g, v_oh, v_ow, v_v] = T.float32(0.0)
            acc[v_n, v_g, v_oh, v_ow, v_v] = (acc[v_n, v_g, v_oh, v_ow, v_v]
                                              + values[v_g, v_e, v_v] * pad[v_n, v_oh * 6 + offsets[v_g, v_e] + v_ow])
    for n, o, oh, ow in T.grid(1, 4, 4, 4):
        with T.sblock("out"):
            v_n, v_o, v_oh, v_ow = T.axis.remap("SSSS", [n, o, oh, ow])
            T.reads(acc[v_n, v_o // 4, v_oh, v_ow, v_o % 4])
            T.writes(out[v_n, v_o, v_oh, v_ow])
            out[v_n, v_o, v_oh, v_ow] = T.max(acc[v_n, v_o // 4, v_oh, v_ow, v_o % 4], T.float32(0.0))


def test_one_pattern_kernel_matches_a_module_written_by_hand():
    """4 filters (one NEON group), 2 channels; only channel 1 kept, with the 4 taps
    (0,1) (1,1) (1,2) (2,1): one entry per tap, offsets (1 * 6 + ky) * 6 + kx."""
    weight = np.zeros((4, 2, 3, 3), np.float32)
    taps = [(0, 1), (1, 1), (1, 2), (2, 1)]
    for i, (ky, kx) in enumerate(taps):
        weight[:, 1, ky, kx] = np.arange(1, 5) + 4 * i
    before = _module((1, 2, 4, 4), lambda bb, x: relax.op.nn.relu(
        bb.emit(relax.op.nn.conv2d(x, relax.const(weight), padding=1))))
    after, records = _rewrite(before, "hikey970-cpu")
    assert [r.sparse for r in records] == [True]

    values = np.stack([weight[:, 1, ky, kx] for ky, kx in taps])[None]  # [G=1, E=4, V=4]
    offsets = np.array([[(1 * 6 + ky) * 6 + kx for ky, kx in taps]], np.int32)
    bb = relax.BlockBuilder()
    gvar = bb.add_func(_expected_kernel, "pattern_conv2d")
    x = relax.Var("x", relax.TensorType((1, 2, 4, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.call_tir(gvar, [x, relax.const(values), relax.const(offsets)],
                                                relax.TensorType((1, 4, 4, 4), "float32")))
        bb.emit_func_output(out)
    tvm.ir.assert_structural_equal(after, bb.get())
