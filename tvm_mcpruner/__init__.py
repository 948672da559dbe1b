"""tvm-mcpruner: pattern + connectivity pruning aligned to the vector width, compiled by TVM.

Public API (everything else is private)::

    pruned, report = prune(model, target="host", pattern_k=4, keep_kernels=0.5)
    mod = from_torch(pruned, (example_input,))        # or from_onnx(path)
    cm = compile(mod, target="host")                   # CompiledModel: numpy in, numpy out
    tune(mod, target="hikey970-cpu", tracker="HOST:9190", key="hikey970", trials=2000)
                                                       # then compile applies autotune_logs/<device>

The TVM-dependent names are imported on first use, so the torch pruning helper works
(and imports fast) without loading TVM. The ``"mcpruner"`` Relax pipeline is registered
by ``import relay_passes``, by the first TVM-dependent name used here, or right away
when TVM is already imported (``import tvm, tvm_mcpruner``).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from .sparse_format import PatternSparseWeight, pack_pattern_weights, unpack_pattern_weights
from .targets import TargetPreset, get_preset, preset_names

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily, see module docstring)
_LAZY = {
    "prune": ".pruning",
    "PruneReport": ".pruning",
    "save_pruned": ".pruning",
    "load_pruned": ".pruning",
    "from_torch": ".frontend",
    "from_onnx": ".frontend",
    "export_onnx": ".frontend",
    "compile": ".compiler",
    "CompiledModel": ".compiler",
    "SparseLayerRecord": ".compiler",
    "tune": ".tuning",
    "TuningReport": ".tuning",
    "TuningLogError": ".tuning_log",
    "configure_thread_pool": ".thread_pool",
    "models": ".models",
}

__all__ = [
    "PatternSparseWeight",
    "pack_pattern_weights",
    "unpack_pattern_weights",
    "TargetPreset",
    "get_preset",
    "preset_names",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'tvm_mcpruner' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name], __name__)
    value = module if name == "models" else getattr(module, name)
    globals()[name] = value
    return value


if "tvm" in sys.modules:  # TVM is loaded anyway: make get_pipeline("mcpruner") work now
    importlib.import_module("relay_passes")
