"""The torch pruning helper: pattern + connectivity pruning aligned to a target's vector width.

Torch only (no TVM import), so pruning and fine-tuning run anywhere torch does::

    pruned, report = prune(model, target="hikey970-cpu", pattern_k=4, keep_kernels=0.5)
    print(report)                                     # per-layer table + pattern library
    ...fine-tune `pruned` (masks stay applied)...
    torch.save(pruned.state_dict(), path)
    model = load_pruned_state_dict(build_model(), torch.load(path))
    exportable = bake(model)                          # masks made permanent, hooks gone
"""

from .api import prune
from .io import load_pruned, save_pruned
from .masks import PatternPruningMethod, bake, load_pruned_state_dict
from .report import LayerReport, PruneReport
from .schedules import SCHEDULES
from .train import TrainConfig, enforce_masks, evaluate, fit

__all__ = [
    "prune", "PruneReport", "LayerReport", "load_pruned_state_dict", "bake", "PatternPruningMethod",
    "SCHEDULES", "save_pruned", "load_pruned", "TrainConfig", "fit", "evaluate", "enforce_masks",
]
