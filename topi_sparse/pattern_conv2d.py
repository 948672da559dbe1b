"""TE compute of the pattern-sparse conv2d (NCHW in, NCHW out): *what* is computed.

Operands (built at compile time from the packed weight, see :func:`kernel_operands`):

* ``values  [G, E, V]``  the weights of ``V`` filters (one vector) for each of the
  ``E`` (kept kernel, kept tap) entries of filter group ``g``, in read order;
  groups with fewer entries are padded with zero rows so every group has ``E``.
* ``offsets [G, E]``  int32 offset of each entry's input row in the zero-padded input
  flattened as ``[C * Hp * Wp]``: ``(channel * Hp + ky) * Wp + kx``. One scalar load per
  entry serves all ``V`` lanes and all output columns of a register tile: lanes share
  structure, so there are no per-lane indices.
* ``bias [O]`` (optional), fused with an optional clip (ReLU = clip(0, inf), ReLU6 =
  clip(0, 6)) into the write-out.

Stages::

    pad[n, i]               zero-padded input, flattened per image
    acc[n, g, oh, ow, v]    = sum_e values[g, e, v] * pad[n, offsets[g, e] + oh*s*Wp + ow*s]
    out[n, o, oh, ow]       = clip(acc[n, o // V, oh, ow, o % V] + bias[o])

``acc`` is computed over ``OWp >= OW`` columns (a multiple of the register tile width)
and, when the kernel makes a padded copy, ``OHp >= OH`` rows (a multiple of
:data:`ROW_MULTIPLE`), so that every register tile is full whatever its size; the padded
input is large enough that the extra rows and columns read zeros, and ``out`` drops them.
Padding rows costs nothing while a tile is one row high (only the rows ``out`` needs are
computed); it lets a 7-row output use 2- or 4-row tiles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tvm import te, tirx

__all__ = ["KERNEL_ATTR", "ROW_MULTIPLE", "PatternConvShape", "is_kernel", "is_unscheduled_kernel",
           "kernel_operands", "pattern_conv2d_compute", "pattern_conv2d_nchw"]

# PrimFunc attribute that marks our kernels (value: the kernel's name); the Relax
# pipeline schedules marked functions that tuning did not schedule already.
KERNEL_ATTR = "mcpruner.kernel"

# acc's rows are padded to a multiple of this (when a padded input copy exists): every
# register tile height up to it that divides it fits every layer.
ROW_MULTIPLE = 4


@dataclass(frozen=True)
class PatternConvShape:
    """Everything the compute needs to know about one layer (all static)."""

    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel: tuple[int, int]
    stride: int
    padding: tuple[int, int, int, int]  # top, left, bottom, right
    lanes: int
    entries: int  # E: entries per group after padding to the largest group

    @property
    def groups(self) -> int:
        return -(-self.out_channels // self.lanes)

    @property
    def out_height(self) -> int:
        top, _, bottom, _ = self.padding
        return (self.height + top + bottom - self.kernel[0]) // self.stride + 1

    @property
    def out_width(self) -> int:
        _, left, _, right = self.padding
        return (self.width + left + right - self.kernel[1]) // self.stride + 1

    def padded_width(self, tile_w: int) -> int:
        """Columns of the padded input row: enough for ``acc``'s padded output columns."""
        ow_padded = -(-self.out_width // tile_w) * tile_w
        _, left, _, right = self.padding
        return max((ow_padded - 1) * self.stride + self.kernel[1], self.width + left + right)

    def acc_rows(self, tile_w: int) -> int:
        """Rows of ``acc``: OH, rounded up to :data:`ROW_MULTIPLE` when the input is copied.

        A kernel that reads its input directly cannot read rows past the input's end,
        so its ``acc`` keeps exactly OH rows.
        """
        if self.reads_input_directly(tile_w):
            return self.out_height
        return -(-self.out_height // ROW_MULTIPLE) * ROW_MULTIPLE

    def padded_height(self, tile_w: int) -> int:
        """Rows of the padded input per channel: enough for ``acc``'s padded rows."""
        top, _, bottom, _ = self.padding
        return max(self.height + top + bottom, (self.acc_rows(tile_w) - 1) * self.stride + self.kernel[0])

    def reads_input_directly(self, tile_w: int) -> bool:
        """True when no padded copy is needed: the kernel then reads the input itself.

        That is the case without padding when the register tiles' columns stay inside
        the input row (typical of 1x1 convs, where a copy would cost as much as the conv);
        the input is then passed flattened ``[N, C*H*W]`` (a free reshape in Relax).
        """
        return not any(self.padding) and self.padded_width(tile_w) == self.width


def kernel_operands(
    row_ptr: np.ndarray,
    row_channel: np.ndarray,
    row_tap: np.ndarray,
    values: np.ndarray,
    kernel_w: int,
    padded_h: int,
    padded_w: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn a packed weight's rows into the kernel's ``values [G,E,V]`` and ``offsets [G,E]``.

    Groups shorter than the longest are padded with zero-weight rows at offset 0
    (valid memory, no effect): the compute needs one static E per layer.
    """
    groups = len(row_ptr) - 1
    lanes = values.shape[1]
    counts = np.diff(row_ptr)
    entries = max(int(counts.max()) if groups else 0, 1)
    ky, kx = np.divmod(row_tap, kernel_w)
    row_offset = (row_channel.astype(np.int64) * padded_h + ky) * padded_w + kx
    if row_offset.size and row_offset.max() >= np.iinfo(np.int32).max:
        raise ValueError("input too large for int32 offsets")
    packed_values = np.zeros((groups, entries, lanes), dtype=np.float32)
    packed_offsets = np.zeros((groups, entries), dtype=np.int32)
    for g in range(groups):
        lo, hi = int(row_ptr[g]), int(row_ptr[g + 1])
        packed_values[g, : hi - lo] = values[lo:hi]
        packed_offsets[g, : hi - lo] = row_offset[lo:hi]
    return packed_values, packed_offsets


def pattern_conv2d_nchw(
    shape: PatternConvShape,
    tile_w: int,
    with_bias: bool,
    clip: tuple[float | None, float | None] | None = None,
    *,
    entry_offset: Callable[[tirx.Expr, tirx.Expr], tirx.Expr] | None = None,
) -> list[te.Tensor]:
    """Declare the pattern-sparse conv2d; returns ``[data, values, offsets, (bias,) out]``.

    ``data`` is ``[N, C, H, W]``, or ``[N, C*H*W]`` when
    :meth:`PatternConvShape.reads_input_directly` (no padded copy is made then).
    ``entry_offset(g, e)``, when given, replaces the load ``offsets[g, e]`` (``offsets``
    stays a parameter): benchmarks/kernel_variants.py measures the kernel without index
    loads that way.
    """
    n_, c_, h_, w_ = shape.batch, shape.in_channels, shape.height, shape.width
    v_, g_, e_ = shape.lanes, shape.groups, shape.entries
    top, left, _, _ = shape.padding
    s = shape.stride
    hp, wp = shape.padded_height(tile_w), shape.padded_width(tile_w)
    oh_, ow_ = shape.out_height, shape.out_width
    owp = -(-ow_ // tile_w) * tile_w
    ohp = shape.acc_rows(tile_w)
    # hp and wp cover acc's padded rows and columns: every read stays in [0, C * Hp * Wp).
    flat = c_ * hp * wp

    values = te.placeholder((g_, e_, v_), "float32", name="values")
    offsets = te.placeholder((g_, e_), "int32", name="offsets")
    if shape.reads_input_directly(tile_w):
        data = pad = te.placeholder((n_, flat), "float32", name="data")
    else:
        data = te.placeholder((n_, c_, h_, w_), "float32", name="data")

        def pad_value(n, i):
            row, x = i // wp, i % wp
            c, y = row // hp, row % hp
            inside = tirx.all(y >= top, y < h_ + top, x >= left, x < w_ + left)
            return tirx.if_then_else(inside, data[n, c, y - top, x - left], tirx.const(0.0, "float32"))

        pad = te.compute((n_, flat), pad_value, name="pad")
    offset = entry_offset or (lambda g, e: offsets[g, e])
    e = te.reduce_axis((0, e_), name="e")
    acc = te.compute(
        (n_, g_, ohp, owp, v_),
        lambda n, g, oh, ow, v: te.sum(
            values[g, e, v] * pad[n, offset(g, e) + oh * (s * wp) + ow * s], axis=e
        ),
        name="acc",
    )
    bias = te.placeholder((shape.out_channels,), "float32", name="bias") if with_bias else None

    def epilogue(n, o, oh, ow):
        y = acc[n, o // v_, oh, ow, o % v_]
        if bias is not None:
            y = y + bias[o]
        lo, hi = clip or (None, None)
        if lo is not None:
            y = tirx.max(y, tirx.const(lo, "float32"))
        if hi is not None:
            y = tirx.min(y, tirx.const(hi, "float32"))
        return y

    out = te.compute((n_, shape.out_channels, oh_, ow_), epilogue, name="out")
    return [data, values, offsets, *([bias] if bias is not None else []), out]


def pattern_conv2d_compute(
    shape: PatternConvShape,
    tile_w: int,
    *,
    with_bias: bool = False,
    clip: tuple[float | None, float | None] | None = None,
) -> tirx.PrimFunc:
    """The unscheduled PrimFunc ``(data, values, offsets[, bias], out)`` of one layer.

    ``tile_w`` pads ``acc``'s columns to a multiple of it; any schedule whose register
    tile divides that padded width fits the same compute (the tuning workload).
    """
    tensors = pattern_conv2d_nchw(shape, tile_w, with_bias, clip)
    return te.create_prim_func(tensors).with_attrs({
        KERNEL_ATTR: "pattern_conv2d",
        "mcpruner.padded_width": shape.padded_width(tile_w),
        "mcpruner.tile_w": tile_w,
        "mcpruner.lanes": shape.lanes,
    })


def is_kernel(func) -> bool:
    """True for a PrimFunc of one of our kernels (marked :data:`KERNEL_ATTR`), scheduled or not."""
    return isinstance(func, tirx.PrimFunc) and bool(func.attrs) and KERNEL_ATTR in func.attrs


def is_unscheduled_kernel(func) -> bool:
    """True for a ``topi_sparse`` compute that no schedule (default or tuned) reached yet."""
    return is_kernel(func) and not func.attrs.get("tirx.is_scheduled", False)
