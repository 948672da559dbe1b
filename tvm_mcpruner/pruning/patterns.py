"""The pattern library: which k-of-9 tap masks a pruned 3x3 kernel may keep.

PatDNN keeps every 3x3 kernel in one of a *small* set of shapes (patterns) so the
compiler can emit one code path per pattern instead of one per kernel. Candidates are
all ``k``-of-9 tap subsets that contain the centre tap (the centre is the tap that
matters most for a 3x3 kernel and keeping it makes every pattern "connected").

Library rule (PatDNN's "pattern frequency" rule, the one chosen here): every kernel
*votes* for the candidate that keeps the most of its squared magnitude; the
``num_patterns`` candidates with the most votes form the library (ties: more total
kept squared magnitude wins, then the lower candidate index, so the result is
deterministic). The alternative rule, "total squared magnitude kept summed over all
kernels", is linear in the per-tap energy summed over the model, so it degenerates to
the few patterns made of the model's strongest taps and ignores what individual
kernels prefer; voting gives a library that fits the kernels' own shapes.

The voters are the *aligned* kernels: one per (filter group of V lanes, input
channel), with the group's squared magnitudes summed, because that is the unit that
later picks one pattern (see :mod:`.masks`). Torch only; no TVM.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

__all__ = ["CENTRE_TAP", "NUM_TAPS", "candidate_patterns", "select_library", "draw_patterns"]

NUM_TAPS = 9
CENTRE_TAP = 4  # raster index (ky*3 + kx) of the centre of a 3x3 kernel


def candidate_patterns(pattern_k: int) -> torch.Tensor:
    """All ``pattern_k``-of-9 tap masks containing the centre, ``[N, 9]`` bool, N = C(8, k-1).

    Rows are in lexicographic order of their non-centre taps, which fixes candidate
    indices used for deterministic tie-breaking.
    """
    if not 1 <= pattern_k <= NUM_TAPS:
        raise ValueError(f"pattern_k must be in 1..{NUM_TAPS}, got {pattern_k}")
    others = [t for t in range(NUM_TAPS) if t != CENTRE_TAP]
    rows = []
    for combo in itertools.combinations(others, pattern_k - 1):
        row = torch.zeros(NUM_TAPS, dtype=torch.bool)
        row[[CENTRE_TAP, *combo]] = True
        rows.append(row)
    return torch.stack(rows)


def select_library(energies: Sequence[torch.Tensor], pattern_k: int, num_patterns: int) -> torch.Tensor:
    """Pick the model's pattern library by PatDNN's frequency vote (module docstring).

    ``energies``: one tensor per eligible layer whose last dim holds the 9 per-tap
    squared magnitudes of one voting kernel (e.g. ``[G, C, 9]`` group energies).
    Returns ``[min(num_patterns, N), 9]`` bool, most-voted pattern first; empty
    ``[0, 9]`` when there is nothing to vote.
    """
    if num_patterns < 1:
        raise ValueError(f"num_patterns must be >= 1, got {num_patterns}")
    candidates = candidate_patterns(pattern_k)
    if not energies:
        return candidates[:0]
    weights = candidates.to(torch.float64)
    votes = torch.zeros(len(candidates), dtype=torch.int64)
    kept = torch.zeros(len(candidates), dtype=torch.float64)
    for energy in energies:
        scores = energy.reshape(-1, NUM_TAPS).to(torch.float64) @ weights.T  # [K, N]
        if scores.shape[0] == 0:
            continue
        votes += torch.bincount(scores.argmax(dim=1), minlength=len(candidates))
        kept += scores.sum(dim=0)
    order = sorted(range(len(candidates)), key=lambda i: (-int(votes[i]), -float(kept[i]), i))
    return candidates[order[:num_patterns]]


def draw_patterns(library: torch.Tensor, labels: Sequence[str] | None = None) -> list[str]:
    """Render tap masks as small 3x3 pictures side by side ('#' kept, '.' pruned)."""
    if len(library) == 0:
        return ["  (empty: no layer was pattern-pruned)"]
    labels = list(labels) if labels is not None else [f"p{i}" for i in range(len(library))]
    width = max(5, *(len(s) for s in labels))
    lines = [("  " + " ".join(s.ljust(width) for s in labels)).rstrip()]
    for ky in range(3):
        cells = ("".join("#" if bool(p[ky * 3 + kx]) else "." for kx in range(3)) for p in library)
        lines.append(("  " + " ".join(c.ljust(width) for c in cells)).rstrip())
    return lines
