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
    """The saved ``(state_dict, meta)`` of ``path``, without building a model.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for
    one that :func:`save_pruned` did not write (empty, truncated, another format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pruned model file {path} not found")
    try:
        if _is_safetensors(path):
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("mcpruner", "{}"))
                state = {k: f.get_tensor(k) for k in f.keys()}
        else:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(saved, dict) or "state_dict" not in saved:
                raise ValueError("no 'state_dict' entry")
            state, meta = saved["state_dict"], json.loads(saved.get("meta", "{}"))
    except Exception as exc:  # torch.load and safetensors raise many kinds for a bad file
        raise ValueError(f"{path} was not written by save_pruned "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    if not isinstance(meta, dict) or not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: its metadata is not a JSON object, or its state is not tensors by name")
    return state, meta


def load_pruned(path: str | Path, model: nn.Module | None = None) -> tuple[nn.Module, JsonDict]:
    """Load a file written by :func:`save_pruned` into ``model`` (masks re-created).

    Without ``model`` the architecture is rebuilt from ``meta["model"]`` and
    ``meta["model_kwargs"]`` with :func:`tvm_mcpruner.models.get_model`, after checking,
    on a model built without memory (``torch.device("meta")``), that its tensors have the
    saved shapes: a file whose metadata asks for another (larger) model is refused before
    anything is allocated. Returns ``(model in eval mode, meta)``.
    """
    state, meta = read_pruned(path)
    if model is None:
        model = _model_from_meta(Path(path), meta, state)
    load_pruned_state_dict(model, state)
    return model.eval(), meta


def _model_from_meta(path: Path, meta: JsonDict, state: dict[str, torch.Tensor]) -> nn.Module:
    from ..models import get_model

    name, kwargs = meta.get("model"), meta.get("model_kwargs", {})
    if not isinstance(name, str):
        raise ValueError(f"{path} does not name its model (meta has no 'model'); pass model=")
    if not isinstance(kwargs, dict):
        raise ValueError(f"{path}: meta['model_kwargs'] must be a JSON object, got {kwargs!r}")
    try:
        with torch.device("meta"):
            skeleton = get_model(name, **kwargs)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: its metadata names a model that cannot be built ({name!r}, {kwargs}): "
                         f"{exc}") from None
    for key, tensor in skeleton.state_dict().items():
        saved = state.get(key, state.get(_orig_name(key)))
        if saved is None or tuple(saved.shape) != tuple(tensor.shape):
            found = "missing" if saved is None else f"saved as {tuple(saved.shape)}"
            raise ValueError(f"{path}: its metadata describes a model whose {key} is {tuple(tensor.shape)}, "
                             f"but that tensor is {found}; the file and its metadata disagree")
    return get_model(name, **kwargs)


def _orig_name(key: str) -> str:
    """``a.weight`` -> ``a.weight_orig``: how a pruned tensor is saved."""
    module, _, tensor = key.rpartition(".")
    return f"{module}.{tensor}_orig" if module else f"{tensor}_orig"
