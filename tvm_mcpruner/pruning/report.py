"""What pruning did, layer by layer, counted by the pattern-aware format itself.

Counts of pruned layers (kept kernels, issued multiply-adds, fill) come from
``pack_pattern_weights(final_weight, V)`` -- the same packing the TVM pass and kernels
use -- so the report states what the compiled kernel will actually do, padding lanes
of a short last group included (the caller packs; ``prune`` reuses its mask check's).
Dense layers count their full weight.

MACs: with an ``example_input`` each layer's per-pixel weight MACs are multiplied by
its output pixels per image (from one forward pass); without one the totals are the
per-output-pixel weight MACs summed over layers (a weights-only measure that treats
every layer as if it had one output pixel).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..sparse_format import PatternSparseWeight
from .patterns import draw_patterns

__all__ = ["LayerReport", "PruneReport", "dense_layer_report", "pruned_layer_report"]


@dataclass
class LayerReport:
    """One conv layer: whether it was pruned, why (not), and its counts."""

    name: str
    shape: tuple[int, ...]
    pruned: bool
    reason: str
    patterns_used: tuple[int, ...]  # library ids used by the layer's kept kernels
    kept_kernels: int  # (filter, input channel) 3x3 kernels with any weight kept
    total_kernels: int
    stored_kernels: int  # kernels the format stores: one per (filter group, kept channel)
    nnz: int
    fill: float | None  # share of issued MACs with a non-zero weight (pruned layers; the
    # padding lanes of a short last group count as issued, so fill < 1 when O % V != 0)
    dense_macs_per_pixel: int
    sparse_macs_per_pixel: int  # what the kernel issues per output pixel
    output_pixels: int | None = None  # per image; None without example_input

    @property
    def mac_reduction(self) -> float:
        return self.dense_macs_per_pixel / max(self.sparse_macs_per_pixel, 1)

    def macs(self, per_image: bool) -> tuple[int, int]:
        """(dense, issued) MACs of this layer on the report's basis."""
        scale = (self.output_pixels or 0) if per_image else 1
        return self.dense_macs_per_pixel * scale, self.sparse_macs_per_pixel * scale


def pruned_layer_report(
    name: str, weight: torch.Tensor, packed: PatternSparseWeight, pattern_ids: torch.Tensor, keep_channels: int
) -> LayerReport:
    """Report a pattern-pruned layer from ``packed``, the packed form of its final (masked) ``weight``."""
    o, c = weight.shape[:2]
    lanes = packed.lanes
    group_sizes = np.minimum(lanes, o - lanes * np.arange(packed.num_groups))
    kept = int((np.diff(packed.group_ptr) * group_sizes).sum())
    used = tuple(int(i) for i in torch.unique(pattern_ids[pattern_ids >= 0]).tolist())
    reason = f"{keep_channels}/{c} channels kept per group of {lanes}"
    if o % lanes:
        reason += f"; last group {o % lanes} of {lanes} lanes"
    real_macs = int((np.diff(packed.row_ptr) * group_sizes).sum())  # padding lanes excluded
    if packed.nnz < real_macs:  # exact zeros inside the kept structure: wasted lanes
        reason += f"; {real_macs - packed.nnz} zero weights inside the structure"
    return LayerReport(
        name=name, shape=tuple(weight.shape), pruned=True, reason=reason, patterns_used=used,
        kept_kernels=kept, total_kernels=o * c, stored_kernels=packed.num_kept_kernels,
        nnz=packed.nnz, fill=packed.fill, dense_macs_per_pixel=packed.dense_macs_per_pixel,
        sparse_macs_per_pixel=packed.stored_macs_per_pixel,
    )


def dense_layer_report(name: str, weight: torch.Tensor, reason: str) -> LayerReport:
    """Report a conv left dense: it runs as the ordinary dense op, every weight a MAC."""
    o, c = weight.shape[:2]
    macs = int(weight.numel())
    return LayerReport(
        name=name, shape=tuple(weight.shape), pruned=False, reason=reason, patterns_used=(),
        kept_kernels=o * c, total_kernels=o * c, stored_kernels=o * c,
        nnz=int(torch.count_nonzero(weight.detach())), fill=None,
        dense_macs_per_pixel=macs, sparse_macs_per_pixel=macs,
    )


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _ids(ids: tuple[int, ...], library_size: int, limit: int = 24) -> str:
    if not ids:
        return "-"
    if len(ids) == library_size and library_size > 1:
        return f"all {library_size}"
    text = ",".join(str(i) for i in ids)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class PruneReport:
    """The outcome of :func:`tvm_mcpruner.pruning.prune`: per-conv entries, totals, library."""

    target: str
    vector_width: int
    pattern_k: int
    keep_kernels: float
    num_patterns: int  # as requested; the library may be smaller (see ``library``)
    library: tuple[tuple[int, ...], ...]  # tap indices (ky*3 + kx) kept by each pattern
    layers: list[LayerReport] = field(default_factory=list)
    library_usage: tuple[int, ...] = ()  # stored kernels using each pattern, whole model
    macs_basis: str = "per output pixel, weights only"

    @property
    def per_image(self) -> bool:
        return self.macs_basis.startswith("per image")

    @property
    def dense_macs(self) -> int:
        return sum(layer.macs(self.per_image)[0] for layer in self.layers)

    @property
    def sparse_macs(self) -> int:
        return sum(layer.macs(self.per_image)[1] for layer in self.layers)

    @property
    def mac_reduction(self) -> float:
        """Whole-model conv MACs dense over issued, dense layers included."""
        return self.dense_macs / max(self.sparse_macs, 1)

    @property
    def pruned_layers(self) -> list[LayerReport]:
        return [layer for layer in self.layers if layer.pruned]

    def library_masks(self) -> np.ndarray:
        """The library as ``[P, 9]`` bool tap masks."""
        masks = np.zeros((len(self.library), 9), dtype=bool)
        for row, taps in enumerate(self.library):
            masks[row, list(taps)] = True
        return masks

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: every field plus the derived totals and per-layer reductions."""
        out = asdict(self)
        for entry, layer in zip(out["layers"], self.layers):
            entry["mac_reduction"] = layer.mac_reduction
        out.update(dense_macs=self.dense_macs, sparse_macs=self.sparse_macs, mac_reduction=self.mac_reduction)
        return out

    def _table(self) -> list[str]:
        header = ("layer", "shape", "patterns", "kept kernels", "MAC red.", "note")
        rows = [header]
        for layer in self.layers:
            share = layer.kept_kernels / max(layer.total_kernels, 1)
            rows.append((
                layer.name or "(model)",
                "x".join(str(d) for d in layer.shape),
                _ids(layer.patterns_used, len(self.library)),
                f"{layer.kept_kernels}/{layer.total_kernels} ({share:.0%})",
                f"{layer.mac_reduction:.2f}x",
                layer.reason,
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        align = ("<", "<", "<", ">", ">", "<")
        return ["  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(r, align, widths)).rstrip() for r in rows]

    def __str__(self) -> str:
        title = (
            f"MCPruner pattern pruning: target {self.target} (V={self.vector_width}), "
            f"k={self.pattern_k} of 9 taps, keep {self.keep_kernels:g} of kernels, "
            f"{len(self.pruned_layers)}/{len(self.layers)} conv layers pruned"
        )
        total = (
            f"total conv MACs ({self.macs_basis}): {_human(self.dense_macs)} dense -> "
            f"{_human(self.sparse_macs)} issued, {self.mac_reduction:.2f}x reduction"
        )
        lib_title = (
            f"pattern library ({len(self.library)} of {self.num_patterns} requested, '#' = kept tap, "
            f"n = stored kernels using it):"
        )
        labels = [f"p{i} n={n}" for i, n in enumerate(self.library_usage)] or None
        drawing = draw_patterns(torch.from_numpy(self.library_masks()), labels)
        return "\n".join([title, *self._table(), total, lib_title, *drawing])
