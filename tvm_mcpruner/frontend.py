"""Import (pruned) torch / ONNX models into Relax with every weight bound as a constant.

Why constants: the sparse rewrite (``relay_passes``) recognises pattern / connectivity
sparsity *from the weight values alone*, so every ``relax.nn.conv2d`` must see its
weight as a ``Constant`` -- and that constant must be the weight the kernel will really
use, i.e. with BatchNorm already folded in.  Folding multiplies each output filter by
one per-channel scale, so a weight that was exactly zero stays exactly zero and the
pruned structure survives the import unchanged.

After import a conv + BN + ReLU reads::

    lv = R.nn.conv2d(x, <const folded weight>, strides=..., padding=..., ...)
    lv1 = R.add(lv, <const bias (1, C, 1, 1)>)
    lv2 = R.nn.relu(lv1)

Both paths bake ``torch.nn.utils.prune`` reparametrizations (``weight_orig`` x
``weight_mask``) first, on a deep copy, so the caller's model is left untouched.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import tvm
from torch import nn
from tvm import relax
from tvm.ir import GenericConst, IRModule

from relay_passes import fold_batch_norm

from .pruning import bake

__all__ = ["from_torch", "export_onnx", "from_onnx"]

_ONNX_OPSET = 17


# --------------------------------------------------------------------------- torch side


def _prepare(model: nn.Module) -> nn.Module:
    """A baked deep copy in eval mode: the caller's model is never changed."""
    dtypes = sorted({str(t.dtype).replace("torch.", "") for t in [*model.parameters(), *model.buffers()]
                     if t.is_floating_point()} - {"float32"})
    if dtypes:  # the sparse kernels and the BatchNorm fold are float32
        raise TypeError(f"the model has {', '.join(dtypes)} parameters; only float32 is supported: "
                        "convert it with model.float() first")
    return bake(model).eval()


def _as_tuple(example_inputs: Any) -> tuple:
    """Accept a bare tensor as a convenience; exporters want a tuple."""
    return example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)


def from_torch(model: nn.Module, example_inputs: tuple) -> IRModule:
    """Import a torch model through ``torch.export`` into Relax, BN folded into conv weights.

    Parameters
    ----------
    model : torch.nn.Module
        The (pruned) model; pruning reparametrizations are baked on a copy first.
    example_inputs : tuple of torch.Tensor
        Inputs of the shapes the module is built for (shapes are static).

    Returns
    -------
    mod : tvm.IRModule
        ``main`` takes one tensor (named after ``forward``'s argument) and returns one;
        every parameter is a constant, no ``relax.nn.batch_norm`` is left, and constant
        subexpressions are folded.
    """
    from tvm.relax.frontend.torch import from_exported_program

    model = _prepare(model)
    inputs = _as_tuple(example_inputs)
    with torch.no_grad():
        program = torch.export.export(model, inputs)
    mod = from_exported_program(
        program, keep_params_as_input=False, unwrap_unit_return_tuple=True
    )
    return _finalize(mod)


def export_onnx(model: nn.Module, example_inputs: tuple, path: str | Path) -> Path:
    """Export to ONNX (TorchScript exporter, opset 17, static shapes); masks baked first.

    The TorchScript exporter (``dynamo=False``) folds eval-mode BatchNorm into the conv
    itself, which keeps pruned zeros at zero as the Relax folding does.  The input is
    named after ``forward``'s first argument and the output ``output``.
    """
    model = _prepare(model)
    inputs = _as_tuple(example_inputs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter is chosen on purpose (see above): hush its deprecation
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model, inputs, str(path), dynamo=False, opset_version=_ONNX_OPSET,
            input_names=_input_names(model, len(inputs)), output_names=["output"],
            do_constant_folding=True,
        )
    return path


def _input_names(model: nn.Module, count: int) -> list[str]:
    """``forward``'s parameter names, so both import paths name the input alike."""
    params = [p.name for p in inspect.signature(model.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(params) >= count:
        return params[:count]
    return [f"input{i}" for i in range(count)]


# --------------------------------------------------------------------------- ONNX side


def from_onnx(
    path_or_model: str | Path | Any,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> IRModule:
    """Import an ONNX model into Relax, weights as constants.

    Parameters
    ----------
    path_or_model : str, pathlib.Path or onnx.ModelProto
        The model file, or the model.
    input_shapes : dict of str to list of int, optional
        Shapes of the graph inputs; required when the model declares dynamic (symbolic or
        unknown) input dims, because the sparse kernels are generated for static shapes.

    Returns
    -------
    mod : tvm.IRModule
        As :func:`from_torch` returns it.

    Raises
    ------
    ValueError
        For a missing file, an invalid model, or dynamic inputs without ``input_shapes``.
    """
    model = _load_onnx(path_or_model)
    shapes = _resolve_input_shapes(model, input_shapes)
    return _finalize(_import_onnx(model, shapes))


def _load_onnx(path_or_model: str | Path | Any) -> Any:
    """Load and check an ONNX model, turning every failure into a ValueError saying why."""
    import onnx

    if isinstance(path_or_model, onnx.ModelProto):
        model = path_or_model
        source = "the given ModelProto"
    else:
        path = Path(path_or_model)
        if not path.exists():
            raise ValueError(f"ONNX file not found: {path}")
        if not path.is_file():
            raise ValueError(f"not an ONNX file (a directory or special file): {path}")
        source = str(path)
        try:
            model = onnx.load(source)
        except Exception as err:  # protobuf DecodeError and friends
            raise ValueError(f"{source} is not a valid ONNX model: {err}") from err
    try:
        # a path lets the checker handle models with external data (> 2 GB)
        onnx.checker.check_model(model if source.startswith("the given") else source)
    except Exception as err:  # onnx.checker.ValidationError
        raise ValueError(f"{source} is not a valid ONNX model: {err}") from err
    if len(model.graph.node) == 0:
        raise ValueError(f"{source} is not a valid ONNX model: its graph has no nodes")
    return model


def _graph_inputs(model: Any) -> dict[str, list[int | str | None]]:
    """Real graph inputs (initializers excluded) -> dims (int, symbol name, or None)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs: dict[str, list[int | str | None]] = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims: list[int | str | None] = []
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(int(dim.dim_value))
            else:
                dims.append(dim.dim_param or None)
        inputs[value.name] = dims
    return inputs


def _resolve_input_shapes(
    model: Any, input_shapes: Mapping[str, Sequence[int]] | None
) -> dict[str, list[int]]:
    """Static shape per graph input, from the model or ``input_shapes``; ValueError if unknown."""
    inputs = _graph_inputs(model)
    given = {k: [int(d) for d in v] for k, v in (input_shapes or {}).items()}
    unknown = sorted(set(given) - set(inputs))
    if unknown:
        raise ValueError(f"input_shapes names {unknown}, but the model's inputs are {sorted(inputs)}")
    shapes: dict[str, list[int]] = {}
    for name, dims in inputs.items():
        if name in given:
            shapes[name] = given[name]
        elif all(isinstance(d, int) for d in dims):
            shapes[name] = [int(d) for d in dims]  # type: ignore[arg-type]
        else:
            raise ValueError(
                f"ONNX input {name!r} has dynamic dims {dims}; pass "
                f"input_shapes={{{name!r}: [...]}} with a static shape"
            )
    return shapes


def _import_onnx(model: Any, shapes: dict[str, list[int]]) -> IRModule:
    """TVM's ``relax.frontend.onnx.from_onnx`` with :class:`_ClipAwareImporter` inside.

    Mirrors that function's body (opset detection, then ``from_onnx`` on the graph),
    parameters kept as constants (``keep_params_in_input=False``).
    """
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    importer = _clip_aware_importer_cls()(shapes, "float32", keep_params_in_input=False)
    try:
        return importer.from_onnx(model.graph, opset)
    except tvm.error.OpNotImplemented as exc:  # TVM's message names the operator
        raise ValueError(f"the ONNX model uses an operator TVM's importer does not support: {exc}") from None


@functools.lru_cache(maxsize=None)
def _clip_aware_importer_cls() -> type:
    """Subclass of TVM's ONNX importer that imports constant-bound Clip as ``relax.clip``.

    TVM 0.27 converts ``Clip`` into ``call_tir(topi.maximum/minimum)`` behind
    ``where(isnan(bound))`` guards: opaque to Relax pattern matching (a sparse conv
    rewrite cannot fuse a ReLU6 epilogue) and ~0.25 s of FoldConstant kernel builds per
    Clip (9 s for MobileNetV2).  With constant non-NaN bounds ``relax.clip`` means the
    same -- and is what ``from_torch`` produces, so both paths give the same Relax.
    Built lazily so that importing this module does not import onnx.
    """
    from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

    class _ClipAwareImporter(ONNXGraphImporter):
        def _convert_operator(self, op_name: str, inputs: list, attrs: dict, opset: int):
            if op_name == "Clip" and opset >= 11:
                bounds = [_scalar_bound(e) for e in (list(inputs[1:3]) + [None, None])[:2]]
                if all(b is not None for b in bounds):
                    lo, hi = (b if b is not False else d for b, d in zip(bounds, (-np.inf, np.inf)))
                    return self.bb.normalize(relax.op.clip(inputs[0], _prim(lo), _prim(hi)))
            return super()._convert_operator(op_name, inputs, attrs, opset)

    return _ClipAwareImporter


def _scalar_bound(expr: Any) -> float | bool | None:
    """A Clip bound: False when omitted, its value when a one-element non-NaN constant, else None."""
    if expr is None:
        return False
    if not isinstance(expr, GenericConst):
        return None
    value = expr.value.numpy()
    if value.size != 1 or np.isnan(value).any():
        return None
    return float(value.reshape(-1)[0])


def _prim(value: float) -> relax.Expr:
    """A float64 PrimValue, as ``relax.clip`` takes its bounds (and as from_torch emits them)."""
    return relax.prim_value(tvm.tirx.FloatImm("float64", value))


def _finalize(mod: IRModule) -> IRModule:
    """BN folding, constant folding and dead-binding cleanup shared by both importers."""
    mod = fold_batch_norm(mod)
    mod = relax.transform.FoldConstant()(mod)
    mod = relax.transform.CanonicalizeBindings()(mod)
    return relax.transform.DeadCodeElimination(["main"])(mod)
