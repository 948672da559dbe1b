"""``mcpruner demo``: the whole flow on an embedded default, no data or network needed.

A ResNet-18-style model (fixed seed, random weights with non-trivial BatchNorm
statistics so outputs depend on the input) is pruned 4-of-9 with half the kernels kept,
compiled by mcpruner, and timed beside torch (oneDNN), onnxruntime and TVM's own dense
build of the same pruned weights.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from .benchmark import ComparisonResult, compare_frameworks
from .models import get_model
from .pruning import prune

__all__ = ["run_demo"]


def _randomize_batch_norm(model: torch.nn.Module, generator: torch.Generator) -> None:
    # Fresh BatchNorm layers (mean 0, var 1, affine 1/0) make deep random nets collapse
    # to nearly input-independent outputs; trained-like statistics keep errors meaningful.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=generator) * 0.1)


def run_demo(
    size: int = 224,
    batch: int = 1,
    threads: int | None = None,
    repeat: int = 5,
    seed: int = 0,
    target: str = "host",
    json_path: str | Path | None = None,
) -> ComparisonResult:
    """Prune, compile and time the embedded ResNet-18-style model; print one table."""
    start = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {msg}", flush=True)

    torch.manual_seed(seed)
    say(f"building resnet18 (seed {seed}), input {batch}x3x{size}x{size}")
    model = get_model("resnet18", num_classes=1000, stem="imagenet").eval()
    _randomize_batch_norm(model, torch.Generator().manual_seed(seed))
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed + 1))

    say("pruning: 4-of-9 patterns, keep 0.5 of the kernels, aligned to the target's vector width")
    pruned, report = prune(model, target=target, pattern_k=4, keep_kernels=0.5, example_input=x)
    result = compare_frameworks(
        pruned, x, target=target, threads=threads, repeat=repeat, model_name="resnet18", progress=say
    )
    result.facts["conv_mac_reduction"] = round(report.mac_reduction, 3)
    result.facts["pruned_layers"] = sum(layer.pruned for layer in report.layers)
    result.facts["wall_s"] = round(time.perf_counter() - start, 1)
    print()
    print(_summary(result))
    if json_path:
        Path(json_path).write_text(json.dumps(result.to_dict(), indent=2))
    return result


def _summary(result: ComparisonResult) -> str:
    f: dict[str, Any] = result.facts
    m = result.machine
    lines = [
        f"mcpruner demo: {result.model}, input {'x'.join(map(str, result.input_shape))}, "
        f"target {f['target']} ({f['target_description']})",
        f"machine: {m['cpu']}, {result.threads} threads for every framework; "
        f"median of {len(result.timings[0].times_ms)} runs after warm-up",
        "",
        result.table(),
        "",
        f"conv MAC reduction: {f['conv_mac_reduction']:.2f}x  "
        f"sparse layers: {f['sparse_layers']} of {f['layers']} conv/dense layers "
        f"(pruned by the helper: {f['pruned_layers']})",
        f"mcpruner compile: {f['mcpruner_compile_s']:.1f} s; demo wall time: {f['wall_s']:.1f} s",
        "tvm-dense is TVM's default pipeline without tuning (no schedules for conv2d).",
        "torch and onnxruntime run with denormals flushed to zero; mcpruner without.",
    ]
    return "\n".join(lines)
