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
whether the weight really has the aligned structure. Only numpy is needed here, so
the torch pruning helper can use it without TVM.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MIN_MAC_REDUCTION", "PatternSparseWeight", "pack_pattern_weights", "unpack_pattern_weights"]

# A layer whose packed form issues fewer than this many times fewer MACs than its dense
# weight is not worth running (or pruning) sparse: the pruner leaves it dense and the
# compiler runs it as a direct dense conv.
MIN_MAC_REDUCTION = 1.25


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
        return int(
            self.values.nbytes + self.group_ptr.nbytes + self.channels.nbytes
            + self.pattern_ids.nbytes + self.patterns.size
        )

    def to_dense(self) -> np.ndarray:
        return unpack_pattern_weights(self)


def pack_pattern_weights(weight: np.ndarray, lanes: int) -> PatternSparseWeight:
    """Pack a dense ``[O, C, KH, KW]`` weight into groups of ``lanes`` filters.

    Any weight packs (the union structure of each group is stored); whether packing
    paid off is read from :attr:`PatternSparseWeight.fill` and ``mac_reduction``.
    """
    weight = np.asarray(weight)
    if weight.ndim != 4:
        raise ValueError(f"expected a 4-d conv weight [O, C, KH, KW], got shape {weight.shape}")
    if lanes < 1:
        raise ValueError(f"lanes must be >= 1, got {lanes}")
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
    dense = dense.transpose(0, 3, 1, 2).reshape(packed.num_groups * lanes, c, kh, kw)
    return np.ascontiguousarray(dense[:o])
