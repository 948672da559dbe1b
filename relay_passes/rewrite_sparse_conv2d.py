"""RewriteSparseConv2d: replace conv2d ops with constant pruned weights by sparse kernels."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax
from tvm.ir import IRModule
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

import topi_sparse
from tvm_mcpruner.sparse_format import MIN_MAC_REDUCTION, PatternSparseWeight, pack_pattern_weights
from tvm_mcpruner.targets import TargetPreset, get_preset

__all__ = ["RewriteSparseConv2d", "SparseLayerRecord"]

logger = logging.getLogger("tvm_mcpruner")

_CONV2D = tvm.ir.Op.get("relax.nn.conv2d")
_OPAQUE = 8  # relax OpPatternKind::kOpaque


@dataclass
class SparseLayerRecord:
    """What the rewrite decided for one conv layer (one per conv2d, in model order).

    ``sparse`` is True when the layer runs the pattern-sparse kernel with fewer MACs;
    ``reason`` says why (or why not); ``kernel`` names what runs it: ``"pattern_conv2d"``
    (our kernel, sparse or, for a dense weight, as a direct dense conv) or
    ``"relax.nn.conv2d"`` (left to TVM's own lowering).
    """

    name: str
    weight_shape: tuple[int, ...]
    sparse: bool
    reason: str
    kernel: str
    mac_reduction: float = 1.0
    fill: float = 1.0
    fused: list[str] = field(default_factory=list)
    function: str = ""  # the PrimFunc that runs it (after the rewrite); "" if TVM's own

    def __str__(self) -> str:
        state = "sparse" if self.sparse else "dense "
        return f"{self.name:<12} {str(self.weight_shape):<18} {state} {self.kernel:<16} {self.reason}"


@dataclass
class _Plan:
    """A conv that will be rewritten: its record and packed weight."""

    record: SparseLayerRecord
    packed: PatternSparseWeight


@tvm.transform.module_pass(opt_level=0, name="RewriteSparseConv2d")
class RewriteSparseConv2d:
    """Rewrite ``relax.nn.conv2d(x, <const weight>)`` into a ``topi_sparse`` kernel call.

    Matches, longest first, ``clip/relu(add(conv2d(x, W), b))``, ``add(conv2d(x, W), b)``,
    ``clip/relu(conv2d(x, W))`` and ``conv2d(x, W)`` where ``W`` is a constant, ``b`` a
    constant per-output-channel bias, the conv NCHW/OIHW, float32, groups 1, dilation 1.
    The weight is packed into the pattern-aware format with the target preset's vector
    width; the structure is read from the weight values alone. Emits
    ``R.call_tir(pattern_conv2d_<i>, (x, values, offsets[, bias]))`` whose PrimFunc is
    the kernel's *unscheduled* compute (bias and activation fused), marked with
    ``topi_sparse.KERNEL_ATTR``: the pipeline then applies a tuned schedule from a
    tuning log, or the default one (:class:`ScheduleSparseKernels`).

    A ``relax.matmul(x, <const [C, O]>)`` on a 2-D ``x`` (a Linear / Gemm layer) is first
    rewritten as ``reshape(conv2d(reshape(x, [N, C, 1, 1]), W^T as [O, C, 1, 1]), [N, O])``
    and then handled like any 1x1 conv; its record is named ``dense_<i>``.

    A conv whose weight shows less than ``min_mac_reduction`` still runs our kernel as a
    direct dense conv (``sparse=False``); a conv that does not match stays ``relax.nn.conv2d``.
    Either way the reason is logged and kept in :attr:`records`, one per conv2d.
    """

    def __init__(self, target: "str | TargetPreset" = "host", min_mac_reduction: float = MIN_MAC_REDUCTION):
        self.preset = get_preset(target)
        self.min_mac_reduction = min_mac_reduction
        self.records: list[SparseLayerRecord] = []
        self._patterns = _epilogue_patterns()

    def transform_module(self, mod: IRModule, ctx: tvm.transform.PassContext) -> IRModule:
        self.records = []
        builder = relax.BlockBuilder(mod)
        for gvar, func in mod.functions_items():
            if not isinstance(func, relax.Function) or _is_primitive(func):
                continue
            func, dense_weights = _dense_as_conv2d(func)
            plans = self._plan_function(func, dense_weights)
            if not plans:
                continue
            rewriter = _Rewriter(builder, plans, self.preset)
            for pattern in self._patterns:
                rewriter.shared = _values_used_more_than_once(func)
                func = rewrite_call(pattern.expr, rewriter(pattern), func)
            builder.update_func(gvar, func)
        return relax.transform.DeadCodeElimination()(builder.get())

    def _plan_function(self, func: relax.Function, dense_weights: set) -> dict[tuple, _Plan]:
        """Decide every conv2d of ``func`` in model order; keyed by :func:`_conv_key`."""
        plans: dict[tuple, _Plan] = {}
        convs: list[relax.Call] = []
        relax.analysis.post_order_visit(
            func, lambda e: convs.append(e) if isinstance(e, relax.Call) and e.op.same_as(_CONV2D) else None
        )
        for conv in convs:
            kind = "dense" if conv.args[1] in dense_weights else "conv2d"
            name = f"{kind}_{len(self.records)}"
            record, packed = _decide(conv, name, self.preset, self.min_mac_reduction)
            self.records.append(record)
            logger.info("RewriteSparseConv2d: %s", record)
            if packed is not None:
                plans[_conv_key(conv)] = _Plan(record, packed)
        return plans


def _dense_as_conv2d(func: relax.Function) -> tuple[relax.Function, set]:
    """Rewrite ``matmul(x[N, C], W[C, O] const)`` as a 1x1 conv2d on ``x`` viewed ``[N, C, 1, 1]``.

    Returns the new function and the weight constants created (to name their records).
    Only float32, static shapes; anything else is left as it is.
    """
    created = set()

    def rewrite(expr: relax.Expr, matches) -> relax.Expr:
        data, weight = expr.args
        if not (_is_static_tensor(data) and len(data.ty.shape) == 2 and len(weight.ty.shape) == 2):
            return expr
        if data.ty.dtype != "float32" or weight.ty.dtype != "float32":
            return expr
        (n, c), o = (int(d) for d in data.ty.shape), int(weight.ty.shape[1])
        as_conv = relax.const(np.ascontiguousarray(weight.value.numpy().T.reshape(o, c, 1, 1)))
        created.add(as_conv)
        conv = relax.op.nn.conv2d(relax.op.reshape(data, (n, c, 1, 1)), as_conv, out_dtype="float32")
        return relax.op.reshape(conv, (n, o))

    pattern = is_op("relax.matmul")(wildcard(), is_const())
    return rewrite_call(pattern, rewrite, func), created


def _conv_key(conv: relax.Call) -> tuple:
    """What makes two conv2d calls compute the same thing from the same input.

    Keyed by weight *and* attributes: a weight constant may be shared by convs with
    different strides/dilations, and only the supported ones may take the sparse plan.
    """
    attrs = conv.attrs
    ints = lambda arr: tuple(int(v) for v in arr)  # noqa: E731
    shape = tuple(conv.args[0].ty.shape) if _is_static_tensor(conv.args[0]) else None
    return (
        conv.args[1], None if shape is None else ints(shape), ints(attrs.strides),
        ints(attrs.padding), ints(attrs.dilation), int(attrs.groups), str(attrs.data_layout),
        str(attrs.kernel_layout), str(attrs.out_layout), str(attrs.out_dtype),
    )


def _values_used_more_than_once(func: relax.Function) -> set:
    """Binding values (Call objects) whose variable has more than one use in ``func``.

    A conv (or its bias add) needed elsewhere must not be fused into an epilogue: the
    fused call would not produce the intermediate, so the bare conv would run as well.
    """
    value_of, uses = {}, {}

    def count(expr):
        if isinstance(expr, relax.Var):
            uses[expr] = uses.get(expr, 0) + 1

    for block in func.body.blocks:
        for binding in block.bindings:
            value_of[binding.var] = binding.value
            relax.analysis.post_order_visit(binding.value, count)
    relax.analysis.post_order_visit(func.body.body, count)
    return {value_of[var] for var, n in uses.items() if n > 1 and var in value_of}


def _is_primitive(func: relax.Function) -> bool:
    return func.attrs is not None and int(func.attrs.get("Primitive", 0)) != 0


# ---------------------------------------------------------------- deciding a layer
def _decide(
    conv: relax.Call, name: str, preset: TargetPreset, min_mac_reduction: float
) -> tuple[SparseLayerRecord, PatternSparseWeight | None]:
    weight = conv.args[1]
    shape = tuple(int(d) for d in weight.ty.shape) if _is_static_tensor(weight) else ()

    def dense(reason: str) -> tuple[SparseLayerRecord, None]:
        return SparseLayerRecord(name, shape, False, reason, "relax.nn.conv2d"), None

    problem = _unsupported(conv, preset)
    if problem:
        return dense(problem)
    packed = pack_pattern_weights(weight.value.numpy(), preset.vector_width, reorder=True)
    reduction = packed.mac_reduction
    if reduction >= min_mac_reduction:
        reason = (
            f"{packed.num_kept_kernels} kept kernels x {len(packed.patterns)} patterns, "
            f"{reduction:.2f}x fewer MACs, {packed.fill:.0%} of stored MACs non-zero"
        ) + ("; filters regrouped by structure" if packed.filter_order is not None else "")
        sparse = True
    else:
        reason = (
            f"no aligned sparsity ({reduction:.2f}x < {min_mac_reduction}x fewer MACs "
            f"with {preset.vector_width}-filter groups); runs as a direct dense conv"
        )
        sparse = False
    record = SparseLayerRecord(
        name, shape, sparse, reason, "pattern_conv2d", mac_reduction=reduction, fill=packed.fill
    )
    return record, packed


def _is_static_tensor(expr: relax.Expr) -> bool:
    ty = expr.ty
    return isinstance(ty, relax.TensorType) and ty.shape is not None and all(
        isinstance(d, tvm.tirx.IntImm) for d in ty.shape.values
    )


def _unsupported(conv: relax.Call, preset: TargetPreset) -> str:
    """Why ``conv`` cannot use the kernel, or '' if it can."""
    data, weight = conv.args
    attrs = conv.attrs
    if not isinstance(weight, tvm.ir.GenericConst):
        return "weight is not a constant (bind parameters first)"
    if not _is_static_tensor(data):
        return "input shape is not static"
    if weight.ty.dtype != "float32" or data.ty.dtype != "float32":
        return f"dtype {data.ty.dtype}/{weight.ty.dtype}: only float32 is supported"
    if int(attrs.groups) != 1:
        return f"groups={int(attrs.groups)} (grouped/depthwise conv) not supported"
    if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW" or attrs.out_layout != "NCHW":
        return f"layout {attrs.data_layout}/{attrs.kernel_layout}: only NCHW/OIHW is supported"
    if any(int(d) != 1 for d in attrs.dilation):
        return f"dilation {tuple(int(d) for d in attrs.dilation)} not supported"
    strides = {int(s) for s in attrs.strides}
    if len(strides) != 1:
        return f"strides {tuple(int(s) for s in attrs.strides)}: only equal H/W strides"
    if attrs.out_dtype not in (None, "", "float32"):
        return f"out_dtype {attrs.out_dtype} not supported"
    if preset.family is None:
        target = preset.tvm_target()
        return (f"no sparse schedule for target {target.kind.name} (keys {', '.join(map(str, target.keys))}) "
                f"yet; scheduled families: {', '.join(topi_sparse.SCHEDULED_FAMILIES)}")
    return ""


# ---------------------------------------------------------------- rewriting
@dataclass(frozen=True)
class _EpiloguePattern:
    expr: object
    conv: object
    weight: object
    data: object
    add: object | None
    bias: object | None
    act: object | None


def _epilogue_patterns() -> list[_EpiloguePattern]:
    """conv2d with optional bias add and activation, longest first.

    rewrite_call rewrites the first binding a pattern matches, so the fused forms must
    run before the bare conv, or the conv would be taken alone.
    """
    out = []
    for with_bias, with_act in ((True, True), (True, False), (False, True), (False, False)):
        data, weight = wildcard(), is_const()
        conv = is_op("relax.nn.conv2d")(data, weight)
        expr, add, bias, act = conv, None, None, None
        if with_bias:
            bias = is_const()
            expr = add = is_op("relax.add")(expr, bias)
        if with_act:
            act = is_op("relax.nn.relu")(expr) | is_op("relax.clip")(expr, wildcard(), wildcard())
            expr = act
        out.append(_EpiloguePattern(expr, conv, weight, data, add, bias, act))
    return out


class _Rewriter:
    """The rewrite callback for each pattern: builds the kernel and the call_tir."""

    def __init__(self, builder, plans, preset):
        self.builder = builder
        self.plans = plans
        self.preset = preset
        self.shared: set = set()  # values with other uses: not fusable (set per pattern)

    def __call__(self, pattern: _EpiloguePattern):
        def rewrite(expr: relax.Expr, matches) -> relax.Expr:
            conv = matches[pattern.conv]
            plan = self.plans.get(_conv_key(conv))
            if plan is None:
                return expr
            inner = [conv] + ([matches[pattern.add]] if pattern.add and pattern.act else [])
            if pattern.expr is not pattern.conv and any(v in self.shared for v in inner):
                return expr  # an intermediate is needed elsewhere: a shorter pattern takes it
            bias = _bias_vector(matches[pattern.bias], plan.packed.shape[0]) if pattern.bias else None
            if pattern.bias is not None and bias is None:
                return expr  # not a per-channel bias: leave it to the bare-conv pattern
            clip = _clip_bounds(matches[pattern.act]) if pattern.act else None
            if pattern.act is not None and clip is None:
                return expr
            return self._emit(conv, matches[pattern.data], plan, bias, clip)

        return rewrite

    def _emit(self, conv, data, plan: _Plan, bias, clip) -> relax.Expr:
        attrs = conv.attrs
        padding = tuple(int(p) for p in attrs.padding)
        if len(padding) == 2:
            padding = (padding[0], padding[1], padding[0], padding[1])
        row_channel, row_tap = plan.packed.row_channels_and_taps()
        kernel = topi_sparse.build_pattern_conv2d(
            tuple(int(d) for d in data.ty.shape), plan.packed.shape, plan.packed.row_ptr,
            row_channel, row_tap, plan.packed.values, stride=int(attrs.strides[0]),
            padding=padding, family=self.preset.family, with_bias=bias is not None, clip=clip,
        )
        # Opaque to FuseOps: a fused epilogue would change the workload that tuning logs
        # are keyed by and that our schedules expect; bias and activation are fused here.
        prim = kernel.compute.without_attr("global_symbol").with_attr("op_pattern", _OPAQUE)
        gvar = self.builder.add_func(prim, "pattern_conv2d")
        plan.record.function = gvar.name_hint
        if kernel.input_shape != tuple(int(d) for d in data.ty.shape):
            data = relax.op.reshape(data, kernel.input_shape)  # a view, no copy
        order = plan.packed.filter_order  # the kernel computes filters in packed order
        args = [data, relax.const(kernel.values), relax.const(kernel.offsets)]
        if bias is not None:
            args.append(relax.const(bias if order is None else np.ascontiguousarray(bias[order])))
        plan.record.fused = (["bias"] if bias is not None else []) + (
            [_clip_name(clip)] if clip is not None else []
        )
        out = relax.call_tir(gvar, args, relax.TensorType(kernel.output_shape, "float32"))
        if order is None:
            return out
        position = np.argsort(order).astype(np.int32)  # where each filter's output landed
        return relax.op.take(out, relax.const(position), axis=1)


def _bias_vector(const: tvm.ir.GenericConst, out_channels: int) -> np.ndarray | None:
    """The [O] bias of a constant shaped [O,1,1] / [1,O,1,1], else None."""
    value = const.value.numpy()
    if value.dtype != np.float32 or value.size != out_channels:
        return None
    if value.ndim not in (3, 4) or value.shape[-3] != out_channels:
        return None
    return np.ascontiguousarray(value.reshape(out_channels))


def _clip_bounds(act: relax.Call) -> tuple[float | None, float | None] | None:
    if act.op.name == "relax.nn.relu":
        return (0.0, None)
    bounds = []
    for bound in act.args[1:3]:
        if not isinstance(bound, (tvm.tirx.FloatImm, tvm.tirx.IntImm)):
            bound = getattr(bound, "value", None)  # R.prim_value wrapping the bound
        if not isinstance(bound, (tvm.tirx.FloatImm, tvm.tirx.IntImm)):
            return None
        bounds.append(float(bound.value))
    return (bounds[0], bounds[1])


def _clip_name(clip: tuple[float | None, float | None]) -> str:
    return "relu" if clip == (0.0, None) else f"clip{clip}"
