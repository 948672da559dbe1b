"""AccuratePooling: global average pooling as blocked fp32 sums, so large inputs keep fp32 accuracy.

TVM lowers a mean to one reduction loop per output: a running fp32 sum over the whole
pooled extent, whose rounding error grows with the extent (a 2048x2048 map: ~1e-3 relative
in the pooled values, where torch's fp32 stays within a few ulps). Summing in blocks of at
most ``BLOCK`` elements, then the block sums in blocks again, bounds every running sum to
``BLOCK`` terms.
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm import relax
from tvm.ir import IRModule
from tvm.relax.dpl import is_op, rewrite_call, wildcard

__all__ = ["BLOCK", "AccuratePooling", "blocked_mean"]

# Terms per running fp32 sum: a sequential sum of 256 same-sign values is off by ~1e-7
# relative (median; at most 255 half-ulps), a few ulps, as torch's own fp32 pooling is.
# Pools of at most this many elements are left to TVM's single loop: blocks would not change it.
BLOCK = 256


@relax.transform.function_pass(opt_level=0)
class AccuratePooling:
    """Rewrite global average pooling over more than ``block`` elements into blocked sums.

    Matched, on float tensors of static shape: ``relax.mean`` over one contiguous run of
    axes; ``relax.nn.avg_pool2d`` whose window is the whole (unpadded, undilated) input
    and ``relax.nn.adaptive_avg_pool2d`` with a 1x1 output (both: the H and W axes of the
    layout, same in and out layout). Emitted (:func:`blocked_mean`): the pooled axes
    reshaped into one axis of ``n`` elements, then repeatedly ``reshape`` to
    ``[n / b, b]`` and ``relax.sum`` over the ``b`` axis (``b <= block``; zero padding up
    to a multiple of ``block`` where ``n`` has no divisor in ``(block / 2, block]``), a
    last ``relax.sum`` over what is left, ``relax.divide`` by ``n``, and a reshape to the
    original result shape. fp32 throughout: OpenCL targets such as Mali have no fp64.
    """

    def __init__(self, block: int = BLOCK) -> None:
        self.block = block
        self.pattern = (is_op("relax.mean")(wildcard()) | is_op("relax.nn.avg_pool2d")(wildcard())
                        | is_op("relax.nn.adaptive_avg_pool2d")(wildcard()))

    def transform_function(self, func: relax.Function, mod: IRModule, ctx: Any) -> relax.Function:
        """Rewrite every large global average pooling in ``func``."""
        return rewrite_call(self.pattern, self._rewrite, func)

    def _rewrite(self, call: relax.Call, _matches: dict) -> relax.Expr:
        data = call.args[0]
        shape = _static_shape(data)
        out_shape = _static_shape(call)
        if shape is None or out_shape is None or not str(data.ty.dtype).startswith("float"):
            return call
        axes = _pooled_axes(call, shape, out_shape)
        if axes is None or _prod(shape[a] for a in axes) <= self.block:
            return call
        return blocked_mean(data, shape, axes, out_shape, self.block)


def blocked_mean(data: relax.Expr, shape: list[int], axes: list[int], out_shape: list[int],
                 block: int = BLOCK) -> relax.Expr:
    """Mean of ``data`` (``shape``) over the contiguous ``axes``, as blocked sums, in ``out_shape``.

    Used by :class:`AccuratePooling`; ``block`` bounds the terms of every running sum.
    """
    first, last = axes[0], axes[-1]
    pre, post = shape[:first], shape[last + 1:]
    count = _prod(shape[a] for a in axes)
    rest, acc = count, data
    while rest > block:
        size = _block_size(rest, block)
        if size is None:  # no divisor fits: zeros pad the sum to a multiple of block
            acc = relax.op.reshape(acc, pre + [rest] + post)
            padded = -(-rest // block) * block
            widths = [0] * (2 * (len(pre) + 1 + len(post)))  # (before, after) per axis
            widths[2 * first + 1] = padded - rest
            acc = relax.op.nn.pad(acc, widths)
            rest, size = padded, block
        acc = relax.op.reshape(acc, pre + [rest // size, size] + post)
        acc = relax.op.sum(acc, axis=[first + 1])
        rest //= size
    if acc is data:  # the caller pools at most block elements: one plain sum
        acc = relax.op.sum(acc, axis=axes)
    else:
        acc = relax.op.sum(acc, axis=[first])
    acc = relax.op.reshape(acc, out_shape) if out_shape != pre + post else acc
    return relax.op.divide(acc, relax.const(float(count), str(data.ty.dtype)))


def _block_size(count: int, block: int) -> int | None:
    """The largest divisor of ``count`` in ``(block / 2, block]`` (None: there is none)."""
    for size in range(block, block // 2, -1):
        if count % size == 0:
            return size
    return None


def _pooled_axes(call: relax.Call, shape: list[int], out_shape: list[int]) -> list[int] | None:
    """The axes ``call`` averages over, if it is a plain global mean over contiguous axes."""
    name, attrs = call.op.name, call.attrs
    ndim = len(shape)
    if name == "relax.mean":
        if attrs.axis is None:
            axes = list(range(ndim))
        else:
            axes = sorted(int(a) % ndim for a in attrs.axis)
    else:
        if attrs.layout != attrs.out_layout:
            return None
        axes = sorted([attrs.layout.index("H"), attrs.layout.index("W")])
        if any(out_shape[a] != 1 for a in axes):
            return None
        if name == "relax.nn.avg_pool2d" and (
                [int(k) for k in attrs.pool_size] != [shape[a] for a in axes]
                or any(int(p) for p in attrs.padding) or any(int(d) != 1 for d in attrs.dilation)):
            return None
    if not axes or axes != list(range(axes[0], axes[-1] + 1)):
        return None
    return axes


def _static_shape(expr: relax.Expr) -> list[int] | None:
    shape = getattr(expr.ty, "shape", None)
    if shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in shape):
        return None
    return [int(d) for d in shape]


def _prod(values) -> int:
    result = 1
    for v in values:
        result *= int(v)
    return result
