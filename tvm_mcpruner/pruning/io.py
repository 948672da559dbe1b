"""Save and load pruned models: masks, weights and how to rebuild the architecture.

Two file formats, chosen by the suffix:

* ``.safetensors`` (when the ``safetensors`` package is installed): tensors only, the
  metadata as JSON in the header;
* anything else: a ``torch.save`` dict ``{"state_dict": ..., "meta": ...}`` holding only
  tensors, strings and numbers, so :func:`load_pruned` reads it with
  ``torch.load(weights_only=True)`` -- no pickled code runs.

``meta`` may name the model (``{"model": "vgg11_small", "model_kwargs": {...}}``) so
that :func:`load_pruned` can rebuild it without the caller building one first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .masks import load_pruned_state_dict

__all__ = ["save_pruned", "load_pruned", "read_pruned"]

JsonDict = dict[str, Any]


def _is_safetensors(path: Path) -> bool:
    return path.suffix == ".safetensors"


def save_pruned(model: nn.Module, path: str | Path, meta: JsonDict | None = None) -> Path:
    """Write ``model.state_dict()`` (``*_orig`` / ``*_mask`` pairs included) and ``meta``."""
    path = Path(path)
    meta = dict(meta or {})
    json.dumps(meta)  # fail now, not at load time, on values JSON cannot hold
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if _is_safetensors(path):
        from safetensors.torch import save_file  # optional dependency; .pt needs nothing

        save_file(state, str(path), metadata={"mcpruner": json.dumps(meta)})
    else:
        torch.save({"state_dict": state, "meta": json.dumps(meta)}, path)
    return path


def read_pruned(path: str | Path) -> tuple[dict[str, torch.Tensor], JsonDict]:
    """The saved ``(state_dict, meta)`` of ``path``, without building a model."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pruned model file {path} not found")
    if _is_safetensors(path):
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("mcpruner", "{}"))
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise ValueError(f"{path} was not written by save_pruned (no 'state_dict' entry)")
    return saved["state_dict"], json.loads(saved.get("meta", "{}"))


def load_pruned(path: str | Path, model: nn.Module | None = None) -> tuple[nn.Module, JsonDict]:
    """Load a file written by :func:`save_pruned` into ``model`` (masks re-created).

    Without ``model`` the architecture is rebuilt from ``meta["model"]`` and
    ``meta["model_kwargs"]`` with :func:`tvm_mcpruner.models.get_model`.
    Returns ``(model in eval mode, meta)``.
    """
    state, meta = read_pruned(path)
    if model is None:
        if "model" not in meta:
            raise ValueError(f"{path} does not name its model (meta has no 'model'); pass model=")
        from ..models import get_model

        model = get_model(meta["model"], **meta.get("model_kwargs", {}))
    load_pruned_state_dict(model, state)
    return model.eval(), meta
