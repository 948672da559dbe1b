"""The pattern-aware sparse weight format: defined here once, used everywhere.

A conv weight ``W[O, C, KH, KW]`` is cut into *filter groups* of ``lanes`` consecutive
output channels (``lanes`` = the target's fp32 vector width). Inside one group every
filter shares one structure: the same kept kernels (input channels) and, for each kept
kernel, the same *pattern* (set of kept taps out of KH*KW). That shared structure is what
lets one vector register hold the weights of ``lanes`` filters for one (channel, tap):
no per-lane indices, no remainder lanes (when O is a multiple of ``lanes``).

Arrays, all in the order the kernel reads them::

    patterns    [P, KH*KW] bool   the pattern library: each row a tap mask
    group_ptr   [G+1]      int32  kept kernels of group g are group_ptr[g]:group_ptr[g+1]
    channels    [K]        int32  input channel of each kept kernel
    pattern_ids [K]        int32  pattern of each kept kernel (row of ``patterns``)
    values      [T, lanes] fp32   one row per (kept kernel, kept tap), taps in raster
                                  order; lane v is filter g*lanes + v (zero past O)

Packing takes the *union* structure of each group, so any weight packs and
``unpack`` returns it exactly; how much of the stored work is real (``fill``) tells
whether the weight really has the aligned structure. A weight whose filters share
structure but not with their neighbours (pruned by a tool that grouped other filters)
can be packed with ``reorder=True``: filters are then grouped by similarity and
``filter_order`` records the permutation (packed filter p is filter ``filter_order[p]``). Only numpy is needed here, so
the torch pruning helper can use it without TVM.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "MIN_MAC_REDUCTION",
    "PatternSparseWeight",
    "group_similar_filters",
    "pack_pattern_weights",
    "unpack_pattern_weights",
]

# A layer whose packed form issues fewer than this many times fewer MACs than its dense
# weight is not worth running (or pruning) sparse: the pruner leaves it dense and the
# compiler runs it as a direct dense conv.
MIN_MAC_REDUCTION = 1.25

# Reordering filters must cut the issued MACs by at least this share to be kept (it
# costs an output permutation), and is only tried on layers this small (O * O * C * taps):
# the similarity of every filter pair is one matrix product.
REORDER_MIN_GAIN = 0.05
REORDER_MAX_WORK = 4e9


@dataclass(frozen=True, eq=False)
class PatternSparseWeight:
    """A conv2d weight packed in the pattern-aware format (see module docstring)."""

    shape: tuple[int, int, int, int]
    lanes: int
    patterns: np.ndarray
    group_ptr: np.ndarray
    channels: np.ndarray
    pattern_ids: np.ndarray
    values: np.ndarray
    filter_order: np.ndarray | None = None  # [O] int32; None: filters in their own order

    # ---- sizes -------------------------------------------------------------------
    @property
    def num_groups(self) -> int:
        return len(self.group_ptr) - 1

    @property
    def num_kept_kernels(self) -> int:
        """Kept (input channel, filter group) kernels, each shared by ``lanes`` filters."""
        return len(self.channels)

    @property
    def pattern_sizes(self) -> np.ndarray:
        """Taps kept by each pattern of the library."""
        return self.patterns.sum(axis=1).astype(np.int32)

    @property
    def row_ptr(self) -> np.ndarray:
        """[G+1]: the value rows of group g are ``values[row_ptr[g]:row_ptr[g+1]]``."""
        taps = self.pattern_sizes[self.pattern_ids]
        kernel_group = np.repeat(np.arange(self.num_groups), np.diff(self.group_ptr))
        per_group = np.bincount(kernel_group, weights=taps, minlength=self.num_groups)
        return np.concatenate([[0], np.cumsum(per_group)]).astype(np.int32)

    def row_channels_and_taps(self) -> tuple[np.ndarray, np.ndarray]:
        """Input channel and flat tap index (ky*KW + kx) of every value row, in read order."""
        sizes = self.pattern_sizes[self.pattern_ids]
        row_channel = np.repeat(self.channels, sizes).astype(np.int32)
        taps = [np.flatnonzero(self.patterns[p]) for p in self.pattern_ids]
        row_tap = np.concatenate(taps).astype(np.int32) if taps else np.zeros(0, np.int32)
        return row_channel, row_tap

    # ---- how good the structure is ----------------------------------------------
    @property
    def nnz(self) -> int:
        return int(np.count_nonzero(self.values))

    @property
    def dense_macs_per_pixel(self) -> int:
        o, c, kh, kw = self.shape
        return o * c * kh * kw

    @property
    def stored_macs_per_pixel(self) -> int:
        """Multiply-adds the kernel issues per output pixel (zeros inside the structure
        and padding lanes of the last group included)."""
        return int(self.values.shape[0]) * self.lanes

    @property
    def fill(self) -> float:
        """Share of stored multiply-adds that carry a non-zero weight (1.0 = perfectly aligned)."""
        return self.nnz / max(self.stored_macs_per_pixel, 1)

    @property
    def mac_reduction(self) -> float:
        """Dense MACs over the MACs the sparse kernel issues."""
        return self.dense_macs_per_pixel / max(self.stored_macs_per_pixel, 1)

    @property
    def nbytes(self) -> int:
        """Bytes the packed weight occupies (values + indices + pattern library)."""
        order = 0 if self.filter_order is None else self.filter_order.nbytes
        return int(
            self.values.nbytes + self.group_ptr.nbytes + self.channels.nbytes
            + self.pattern_ids.nbytes + self.patterns.size + order
        )

    def to_dense(self) -> np.ndarray:
        return unpack_pattern_weights(self)


def pack_pattern_weights(weight: np.ndarray, lanes: int, reorder: bool = False) -> PatternSparseWeight:
    """Pack a dense conv weight into groups of ``lanes`` filters.

    Any weight packs (the union structure of each group is stored); whether packing
    paid off is read from :attr:`PatternSparseWeight.fill` and ``mac_reduction``.

    Parameters
    ----------
    weight : numpy.ndarray
        ``[O, C, KH, KW]``.
    lanes : int
        Filters per group: the target's fp32 vector width.
    reorder : bool
        When the weight in its own filter order packs with wasted lanes, also try groups
        of similar filters (:func:`group_similar_filters`) and keep that packing if it
        issues at least ``REORDER_MIN_GAIN`` fewer MACs.

    Returns
    -------
    packed : PatternSparseWeight
    """
    weight = np.asarray(weight)
    if weight.ndim != 4:
        raise ValueError(f"expected a 4-d conv weight [O, C, KH, KW], got shape {weight.shape}")
    if lanes < 1:
        raise ValueError(f"lanes must be >= 1, got {lanes}")
    plain = _pack(weight, lanes)
    o = weight.shape[0]
    if not reorder or plain.fill >= 1.0 or o <= 1 or o * weight[0].size * o > REORDER_MAX_WORK:
        return plain
    order = group_similar_filters(weight, lanes)
    grouped = _pack(weight[order], lanes)
    if grouped.stored_macs_per_pixel > (1 - REORDER_MIN_GAIN) * plain.stored_macs_per_pixel:
        return plain
    return replace(grouped, shape=plain.shape, filter_order=order.astype(np.int32))


def group_similar_filters(weight: np.ndarray, lanes: int) -> np.ndarray:
    """A filter order in which each run of ``lanes`` filters shares as much structure as it can.

    Greedy: the remaining filter with the most non-zeros seeds a group, and the
    ``lanes - 1`` remaining filters whose non-zero sets overlap it most (Jaccard) join
    it. Filters with identical structure always end up together.
    """
    o = weight.shape[0]
    structure = (weight.reshape(o, -1) != 0).astype(np.float32)
    overlap = structure @ structure.T  # shared non-zeros of every filter pair
    nnz = np.diag(overlap).copy()
    jaccard = overlap / np.maximum(nnz[:, None] + nnz[None, :] - overlap, 1.0)
    remaining = np.ones(o, dtype=bool)
    order: list[int] = []
    while remaining.any():
        candidates = np.flatnonzero(remaining)
        seed = candidates[np.argmax(nnz[candidates])]  # first of the largest: deterministic
        remaining[seed] = False
        others = np.flatnonzero(remaining)
        best = others[np.argsort(-jaccard[seed, others], kind="stable")[: lanes - 1]]
        remaining[best] = False
        order += [int(seed), *sorted(int(i) for i in best)]
    return np.asarray(order, dtype=np.int64)


def _pack(weight: np.ndarray, lanes: int) -> PatternSparseWeight:
    o, c, kh, kw = weight.shape
    groups = -(-o // lanes)
    padded = np.zeros((groups * lanes, c, kh * kw), dtype=np.float32)
    padded[:o] = weight.reshape(o, c, kh * kw)
    by_group = padded.reshape(groups, lanes, c, kh * kw)
    # Union over the lanes of a group: a tap is kept if any filter of the group uses it.
    masks = (by_group != 0).any(axis=1)  # [G, C, taps]
    kept = masks.any(axis=2)  # [G, C]

    library, pattern_ids = np.unique(masks[kept], axis=0, return_inverse=True)
    group_ptr = np.concatenate([[0], np.cumsum(kept.sum(axis=1))]).astype(np.int32)
    g_idx, channels = np.nonzero(kept)  # row-major: groups in order, channels ascending
    # Values in read order: for each kept kernel, its kept taps in raster order, each a
    # row of `lanes` filter weights.
    kernel_masks = masks[g_idx, channels]  # [K, taps]
    k_idx, taps = np.nonzero(kernel_masks)
    values = by_group[g_idx[k_idx], :, channels[k_idx], taps]  # [T, lanes]
    return PatternSparseWeight(
        shape=(o, c, kh, kw),
        lanes=lanes,
        patterns=library.reshape(-1, kh * kw).astype(bool),
        group_ptr=group_ptr,
        channels=channels.astype(np.int32),
        pattern_ids=np.asarray(pattern_ids, dtype=np.int32).reshape(-1),
        values=np.ascontiguousarray(values, dtype=np.float32),
    )


def unpack_pattern_weights(packed: PatternSparseWeight) -> np.ndarray:
    """The dense ``[O, C, KH, KW]`` float32 weight that ``packed`` was made from."""
    o, c, kh, kw = packed.shape
    lanes = packed.lanes
    dense = np.zeros((packed.num_groups, c, kh * kw, lanes), dtype=np.float32)
    kernel_group = np.repeat(np.arange(packed.num_groups), np.diff(packed.group_ptr))
    sizes = packed.pattern_sizes[packed.pattern_ids]
    row_group = np.repeat(kernel_group, sizes)
    row_channel, row_tap = packed.row_channels_and_taps()
    dense[row_group, row_channel, row_tap] = packed.values
    dense = dense.transpose(0, 3, 1, 2).reshape(packed.num_groups * lanes, c, kh, kw)[:o]
    if packed.filter_order is not None:
        restored = np.empty_like(dense)
        restored[packed.filter_order] = dense
        dense = restored
    return np.ascontiguousarray(dense)
