"""Per-layer latency of a pruned model (torch dense, onnxruntime dense, mcpruner sparse) and its plot.

Each conv and linear layer of the pruned model runs on its own, as a one-layer module
holding that layer's pruned weights, fed the activation it receives in the model
(captured by a forward hook), in one process with the same threads for every framework.
The MAC reduction is what the compiled sparse kernel issues (its ``SparseLayerRecord``),
never assumed from the pruning settings.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .benchmark import (
    flushed_denormals,
    onnxruntime_session,
    rel_error,
    time_interleaved,
)

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

    from .benchmark import ComparisonResult
    from .targets import TargetPreset

__all__ = ["LAYER_FRAMEWORKS", "LayerTiming", "layer_table", "plot_layers", "time_layers"]

LAYER_FRAMEWORKS = ("torch", "onnxruntime", "mcpruner")
_COLORS = {"torch": "tab:orange", "onnxruntime": "tab:green", "mcpruner": "tab:blue"}
_LABELS = {"torch": "torch (oneDNN, dense)", "onnxruntime": "onnxruntime (dense)", "mcpruner": "mcpruner (sparse)"}
# A layer takes microseconds: each repeat is sized to >= 20 ms of back-to-back calls and
# idles 50 ms before it, so a model of ~20 layers is timed in seconds, not minutes.
LAYER_MIN_REPEAT_MS = 20.0
LAYER_SETTLE_S = 0.05


@dataclass
class LayerTiming:
    """One layer of the model, timed on its own in each framework."""

    name: str  # module name in the torch model
    op: str  # "conv3x3", "conv1x1", "linear", ...
    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    dense_macs: int
    sparse: bool  # whether mcpruner runs it as a sparse kernel
    mac_reduction: float  # dense MACs / MACs the compiled kernel issues
    reason: str  # the compiler's reason for its decision
    median_ms: dict[str, float]  # framework -> median latency
    times_ms: dict[str, list[float]]  # framework -> every repeat
    max_rel_error: float  # mcpruner against torch on this layer

    @property
    def label(self) -> str:
        if self.op == "linear":
            return f"{self.name} linear {self.weight_shape[1]}->{self.weight_shape[0]}"
        height, width = self.input_shape[-2:]
        return f"{self.name} {self.op[4:]} {self.weight_shape[1]}->{self.weight_shape[0]} @{height}x{width}"


def _captured_layers(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[str, Any, torch.Tensor]]:
    """(name, module, input) of every Conv2d / Linear a forward pass of ``model`` on ``x`` runs."""
    import torch

    seen: dict[str, tuple[str, Any, torch.Tensor]] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], _out: Any) -> None:
            seen.setdefault(name, (name, module, inputs[0].detach().clone()))  # first call only
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules()
               if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return list(seen.values())


def _op_name(module: Any) -> str:
    import torch

    if isinstance(module, torch.nn.Linear):
        return "linear"
    kh, kw = module.kernel_size
    return f"conv{kh}x{kw}" + (f"/s{module.stride[0]}" if module.stride[0] != 1 else "")


def time_layers(
    model: torch.nn.Module,
    example_input: torch.Tensor,
    *,
    preset: TargetPreset,
    threads: int,
    repeat: int = 5,
    warmup: int = 2,
    progress: Callable[[str], None] | None = None,
) -> list[LayerTiming]:
    """Time every conv / linear layer of ``model`` alone in torch, onnxruntime and mcpruner.

    The caller sets the thread count (``benchmark.set_threads``); the repeats of the three
    frameworks are interleaved (:func:`benchmark.time_interleaved`) and medians reported.
    """
    import torch
    import tvm

    from .compiler import compile as mcp_compile
    from .frontend import export_onnx, from_torch

    say = progress or (lambda _msg: None)
    model = model.eval()
    captured = _captured_layers(model, example_input)
    rows: list[LayerTiming] = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, (name, module, x) in enumerate(captured):
            say(f"layer {index + 1}/{len(captured)}: {name} ({_op_name(module)}, input {tuple(x.shape)})")
            # a copy keeps the pruning reparametrization (weight_orig * weight_mask) and the bias
            layer = copy.deepcopy(module).eval()
            with torch.inference_mode():
                ref = layer(x).numpy()
                weight = layer.weight.detach()
            session = onnxruntime_session(export_onnx(layer, (x,), Path(tmp) / f"layer{index}.onnx"), threads)
            feed = {session.get_inputs()[0].name: x.numpy()}
            cm = mcp_compile(from_torch(layer, (x,)), target=preset, threads=threads)
            arg = tvm.runtime.tensor(np.ascontiguousarray(x.numpy()))
            main = cm.vm["main"]
            error = rel_error(main(arg).numpy(), ref)

            def run_torch(layer: Any = layer, x: torch.Tensor = x) -> Any:
                with torch.inference_mode(), flushed_denormals():
                    return layer(x)

            runners = {"torch": run_torch,
                       "onnxruntime": lambda session=session, feed=feed: session.run(None, feed),
                       "mcpruner": lambda main=main, arg=arg: main(arg)}
            times = time_interleaved(runners, repeats=repeat, warmup=warmup,
                                     min_repeat_ms=LAYER_MIN_REPEAT_MS, settle_s=LAYER_SETTLE_S)
            record = cm.sparse_layers[0] if cm.sparse_layers else None
            pixels = int(np.prod(ref.shape[2:])) if ref.ndim == 4 else 1
            rows.append(LayerTiming(
                name=name, op=_op_name(module), input_shape=tuple(x.shape), weight_shape=tuple(weight.shape),
                dense_macs=int(weight.numel()) * pixels * int(x.shape[0]),
                sparse=bool(record and record.sparse),
                mac_reduction=float(record.mac_reduction) if record else 1.0,
                reason=record.reason if record else "not rewritten: TVM's dense lowering",
                median_ms={fw: statistics.median(t) for fw, t in times.items()},
                times_ms=times, max_rel_error=error,
            ))
    return rows


def layer_table(layers: list[LayerTiming]) -> str:
    """One line per layer: medians of each framework, mcpruner's speedup over torch, MAC reduction."""
    head = (f"{'layer':<44} {'torch ms':>9} {'ORT ms':>9} {'mcpruner ms':>11} {'vs torch':>8} "
            f"{'fewer MACs':>10}")
    lines = [head, "-" * len(head)]
    for row in layers:
        ms = row.median_ms
        lines.append(f"{row.label:<44} {ms['torch']:>9.4f} {ms['onnxruntime']:>9.4f} {ms['mcpruner']:>11.4f} "
                     f"{ms['torch'] / ms['mcpruner']:>7.2f}x {row.mac_reduction:>9.2f}x"
                     + ("" if row.sparse else "  (dense)"))
    return "\n".join(lines)


def plot_layers(result: ComparisonResult, path: str | Path | None = None, *, dpi: int = 110) -> Figure:
    """Grouped horizontal bars per layer (log time), MAC reduction written beside each layer.

    Draws on a bare ``matplotlib.figure.Figure`` of ``dpi`` (no pyplot, so no GUI backend is
    touched); saves a PNG to ``path`` when given. In a notebook, display the returned figure.
    """
    from matplotlib.figure import Figure

    layers = result.layers
    if not layers:
        raise ValueError("no per-layer timings in this result: run compare_frameworks(..., per_layer=True)")
    count = len(layers)
    fig = Figure(figsize=(9.0, 1.9 + 0.3 * count), dpi=dpi, layout="constrained")
    ax = fig.subplots()
    positions = np.arange(count)
    height = 0.8 / len(LAYER_FRAMEWORKS)
    for i, framework in enumerate(LAYER_FRAMEWORKS):
        offset = (i - (len(LAYER_FRAMEWORKS) - 1) / 2) * height
        ax.barh(positions + offset, [row.median_ms[framework] for row in layers], height,
                color=_COLORS[framework], label=_LABELS[framework])
    ax.set_xscale("log")
    ax.set_yticks(positions, [row.label for row in layers], fontsize=8)
    ax.invert_yaxis()  # model order, top to bottom
    ax.set_xlabel("latency of the layer alone (ms, median, log scale)")
    ax.grid(axis="x", alpha=0.3)
    # Right of the bars, outside the axes: a column of what the sparse kernel saves.
    ax.annotate("fewer MACs", xy=(1.0, 1.0), xycoords="axes fraction", xytext=(6, 4),
                textcoords="offset points", fontsize=8, fontweight="bold", va="bottom")
    for position, row in zip(positions, layers):
        text = f"{row.mac_reduction:.2f}x" if row.sparse else "dense"
        ax.annotate(text, xy=(1.0, position), xycoords=("axes fraction", "data"), xytext=(6, 0),
                    textcoords="offset points", fontsize=8, va="center",
                    color="black" if row.sparse else "grey")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(LAYER_FRAMEWORKS), fontsize=8,
              frameon=False)
    machine = result.machine
    target = result.facts.get("target", "?")
    fig.suptitle(f"{result.model} {'x'.join(map(str, result.input_shape))}, per layer: dense vs sparse on "
                 f"{target}, {result.threads} threads\n{machine.get('cpu')} (LLVM: {machine.get('llvm_cpu')})",
                 fontsize=10)
    if path is not None:
        fig.savefig(path)
    return fig
