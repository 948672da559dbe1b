"""Fold inference BatchNorm into the conv weights it follows, so pruned zeros stay visible.

The sparse rewrite reads the aligned structure off a conv's constant weight: that
constant must be the weight the kernel will use, BatchNorm included. Folding scales each
output filter by one factor, so an exact zero stays an exact zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.ir import GenericConst, IRModule
from tvm.relax.dpl import TupleGetItemPattern, is_const, is_op, rewrite_call, wildcard

__all__ = ["FoldConstLayout", "FoldConvBatchNorm", "fold_batch_norm"]


@relax.transform.function_pass(opt_level=0)
class FoldConvBatchNorm:
    """Fold ``batch_norm(conv2d(x, W) [+ b])[0]`` into ``conv2d(x, W * s) + b'``.

    Matched: an inference ``relax.nn.batch_norm`` (NCHW, axis 1) whose input is a
    ``relax.nn.conv2d`` (OIHW) with a constant weight, optionally followed by a constant
    bias ``relax.add`` (how importers emit ``Conv2d(bias=True)``); all BN operands
    constant.  Emitted: the conv with weight ``W * s[o]`` (``s = gamma / sqrt(var + eps)``)
    as one new constant, then ``relax.add`` of a (1, C, 1, 1) constant bias
    ``(b - mean) * s + beta``.  Computed in numpy (float64) so exact zeros in ``W`` stay
    exact (+0.0) zeros.  TVM's ``FoldBatchnormToConv2D`` covers only the bias-free case
    and ignores BN's ``center``/``scale`` flags, hence this pass.
    """

    def __init__(self) -> None:
        self.weight = is_const()
        self.conv = is_op("relax.nn.conv2d")(wildcard(), self.weight)
        self.conv_bias = is_const()
        self.biased = is_op("relax.add")(self.conv, self.conv_bias)
        self.bn_args = [is_const() for _ in range(4)]  # gamma, beta, mean, var
        self.bn = is_op("relax.nn.batch_norm")(self.conv | self.biased, *self.bn_args)
        self.pattern = TupleGetItemPattern(self.bn, 0)

    def transform_function(self, func: relax.Function, mod: IRModule, ctx: Any) -> relax.Function:
        """Rewrite every matching conv(+bias)+BN in ``func``."""
        return rewrite_call(self.pattern, self._rewrite, func)

    def _rewrite(self, expr: relax.Expr, matches: dict) -> relax.Expr:
        conv, bn = matches[self.conv], matches[self.bn]
        if (conv.attrs["kernel_layout"] != "OIHW" or conv.attrs["out_layout"] != "NCHW"
                or int(bn.attrs["axis"]) != 1 or bool(bn.attrs["training"])):
            return expr
        weight = _const_np(matches[self.weight])
        channels = weight.shape[0]
        gamma, beta, mean, var = (_const_np(matches[p]).astype(np.float64).reshape(-1)
                                  for p in self.bn_args)
        if not bn.attrs["scale"]:
            gamma = np.ones(channels)
        if not bn.attrs["center"]:
            beta = np.zeros(channels)
        scale = gamma / np.sqrt(var + float(bn.attrs["epsilon"]))
        bias = np.zeros(channels)
        if self.biased in matches:
            bias = _const_np(matches[self.conv_bias]).astype(np.float64)
            if bias.size != channels:
                return expr
            bias = bias.reshape(-1)
        new_w = (weight.astype(np.float64) * scale.reshape(-1, 1, 1, 1)).astype(weight.dtype)
        new_w += 0  # turn -0.0 (zero times a negative scale) into +0.0
        new_b = ((bias - mean) * scale + beta).astype(weight.dtype).reshape(1, channels, 1, 1)
        new_conv = relax.Call(conv.op, [conv.args[0], relax.const(new_w)], conv.attrs)
        return relax.op.add(new_conv, relax.const(new_b))


@relax.transform.function_pass(opt_level=0)
class FoldConstLayout:
    """``reshape`` / ``permute_dims`` of a constant -> the rearranged constant, in numpy.

    Importers wrap every conv bias in a reshape (ONNX) and every Linear weight in a
    transpose (torch); FoldConstant would build and run one TIR kernel per such op
    for what is a layout change.
    """

    def __init__(self) -> None:
        self.data = is_const()
        self.pattern = is_op("relax.reshape")(self.data, wildcard()) | is_op(
            "relax.permute_dims"
        )(self.data)

    def transform_function(self, func: relax.Function, mod: IRModule, ctx: Any) -> relax.Function:
        """Rewrite every reshape / transpose of a constant with a static result shape."""
        return rewrite_call(self.pattern, self._rewrite, func)

    def _rewrite(self, expr: relax.Expr, matches: dict) -> relax.Expr:
        shape = getattr(expr.ty, "shape", None)
        if shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in shape):
            return expr
        value = _const_np(matches[self.data])
        if expr.op.same_as(tvm.ir.Op.get("relax.permute_dims")):
            axes = expr.attrs["axes"]
            value = np.transpose(value, None if axes is None else [int(a) for a in axes])
        value = np.ascontiguousarray(value).reshape([int(d) for d in shape])
        return relax.const(value)


def _const_np(const: GenericConst) -> np.ndarray:
    """Value of a Relax constant as numpy (0.27: ``GenericConst.value``, not ``.data``)."""
    return const.value.numpy()


def fold_batch_norm(mod: IRModule) -> IRModule:
    """Fold conv-adjacent BN into conv weights; decompose any other BN into arithmetic.

    BN that follows something other than a conv (rare in CNNs) cannot carry into a
    weight; DecomposeOpsForInference turns it into constant multiply/add so that no
    ``relax.nn.batch_norm`` remains either way.
    """
    mod = FoldConstLayout()(mod)  # reshape(bias) -> constant, for matching
    mod = relax.transform.FoldConstant()(mod)
    mod = FoldConvBatchNorm()(mod)
    if _has_op(mod, "relax.nn.batch_norm"):
        mod = relax.transform.DecomposeOpsForInference()(mod)
    return mod


def _has_op(mod: IRModule, op_name: str) -> bool:
    """Whether any Relax function in ``mod`` calls the operator ``op_name``."""
    op = tvm.ir.Op.get(op_name)
    found: list[bool] = []

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and expr.op.same_as(op):
            found.append(True)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    return bool(found)

