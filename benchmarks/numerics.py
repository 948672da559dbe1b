"""How far compiled outputs are from exact arithmetic, next to torch's own fp32 error.

Two fp32 programs that sum in different orders differ by about the rounding error each
makes; for a deep net that error is set by the net, not by either program. So both our
compiled model and torch fp32 are compared with the same model run in float64:

- ``end_to_end``: the nets of ``tests/tvm_mcpruner/test_end_to_end.py`` (VGG-11,
  ResNet-18, MobileNetV2 on 32x32; pruned with ``keep_kernels=0.5``, BatchNorm
  statistics calibrated on data), imported through torch.export and through ONNX,
  batch 1 and 4, two inputs each: max |ours - f64| and
  max |torch32 - f64|, both relative to max |f64|, and their ratio.
- ``stages``: MobileNetV2 cut after each block of ``features``, each prefix compiled on
  its own: where along the net the error grows, for ours and for torch.

Usage: ``python benchmarks/numerics.py`` (``MCPRUNER_HOST_CPU=znver1`` builds the AVX2
kernels on an AVX-512 host). Writes ``numerics_<llvm cpu>.json/.md`` to
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _repo  # noqa: E402,F401  (puts the repository root on sys.path)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

import tvm_mcpruner as mcp  # noqa: E402
from tests._models import exact_output, randomize_bn, torch_output  # noqa: E402  (the end-to-end tests' own)
from tvm_mcpruner.benchmark import machine_info  # noqa: E402
from tvm_mcpruner.models import get_model  # noqa: E402
from tvm_mcpruner.targets import usable_cpus  # noqa: E402

NETS = {
    "vgg11": dict(name="vgg11", width=0.25),
    "resnet18": dict(name="resnet18", width=0.5, stem="cifar"),
    "mobilenet_v2": dict(name="mobilenet_v2", width=0.5),
}
SIZE = 32


def pruned_net(family: str) -> nn.Module:
    """The pruned net of the end-to-end tests, with data-calibrated BatchNorm."""
    torch.manual_seed(0)
    kwargs = dict(NETS[family])
    model = get_model(kwargs.pop("name"), **kwargs)
    pruned, _ = mcp.prune(model, target="host", pattern_k=4, keep_kernels=0.5)
    calib = torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(100 + SIZE))
    return randomize_bn(pruned, seed=7, example_input=calib)


def errors(model: nn.Module, compiled, x: torch.Tensor) -> dict:
    """Max abs errors of ours and of torch fp32 against float64, relative to max |f64|."""
    exact = exact_output(model, x)
    torch32 = torch_output(model, x).astype(np.float64)
    ours = np.asarray(compiled(x.numpy()), np.float64)
    scale = float(np.abs(exact).max())
    row = {"scale": scale,
           "ours": float(np.abs(ours - exact).max()) / scale,
           "torch": float(np.abs(torch32 - exact).max()) / scale,
           "ours_vs_torch": float(np.abs(ours - torch32).max()) / scale}
    row["ratio"] = row["ours"] / row["torch"] if row["torch"] > 0 else float("inf")
    return row


def end_to_end(workdir: Path) -> list[dict]:
    """Both import paths (torch.export and ONNX), batch 1 and 4, two inputs each."""
    rows = []
    for family in tqdm(NETS, desc="end to end"):
        model = pruned_net(family)
        for batch in (1, 4):
            gen = torch.Generator().manual_seed(batch * 1000 + SIZE)
            inputs = [torch.randn(batch, 3, SIZE, SIZE, generator=gen) for _ in range(2)]
            onnx_path = mcp.export_onnx(model, (inputs[0],), workdir / f"{family}_{batch}.onnx")
            for path, mod in (("torch", mcp.from_torch(model, (inputs[0],))), ("onnx", mcp.from_onnx(onnx_path))):
                compiled = mcp.compile(mod, target="host", tuning_log=None)
                for i, x in enumerate(inputs):
                    rows.append({"net": family, "path": path, "batch": batch, "input": i, **errors(model, compiled, x)})
    return rows


def stages() -> list[dict]:
    """MobileNetV2 prefixes: features[:k] for every k, compiled and compared on one input."""
    model = pruned_net("mobilenet_v2")
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1000 + SIZE))
    rows = []
    for k in tqdm(range(1, len(model.features) + 1), desc="mobilenet_v2 stages"):
        prefix = nn.Sequential(*model.features[:k]).eval()
        compiled = mcp.compile(mcp.from_torch(prefix, (x,)), target="host", tuning_log=None)
        rows.append({"blocks": k, "sparse_layers": compiled.num_sparse_layers, **errors(prefix, compiled, x)})
    return rows


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# Output error against float64 ({m['llvm_cpu']}"
             + (f", kernels built for {m['built_for_llvm_cpu']}" if "built_for_llvm_cpu" in m else "")
             + f", host preset {result['preset']})", "",
             "Errors are max |y - y_f64| / max |y_f64| over the output; ratio = ours / torch.", "",
             "| net | import | batch | input | ours | torch fp32 | ratio | ours vs torch |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["end_to_end"]:
        lines.append(f"| {r['net']} | {r.get('path', 'torch')} | {r['batch']} | {r['input']} | {r['ours']:.2e} "
                     f"| {r['torch']:.2e} | {r['ratio']:.2f} | {r['ours_vs_torch']:.2e} |")
    ratios = [r["ratio"] for r in result["end_to_end"]]
    lines += ["", f"Ratio: median {statistics.median(ratios):.2f}, max {max(ratios):.2f}.", "",
              "## MobileNetV2 (width 0.5, 32x32), cut after each block of `features`", "",
              "| blocks | sparse layers | ours | torch fp32 | ratio |", "|---|---|---|---|---|"]
    for r in result["stages"]:
        lines.append(f"| {r['blocks']} | {r['sparse_layers']} | {r['ours']:.2e} | {r['torch']:.2e} | {r['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--no-stages", action="store_true", help="skip the per-block MobileNetV2 table")
    args = parser.parse_args()
    torch.set_num_threads(usable_cpus())
    with tempfile.TemporaryDirectory(prefix="mcpruner-numerics-") as workdir:
        rows = end_to_end(Path(workdir))
    result = {"machine": machine_info(), "preset": mcp.get_preset("host").description,
              "end_to_end": rows, "stages": [] if args.no_stages else stages()}
    cpu = result["machine"].get("built_for_llvm_cpu", result["machine"]["llvm_cpu"])
    stem = args.out / (f"numerics_{cpu}_on_{result['machine']['llvm_cpu']}"
                       if "built_for_llvm_cpu" in result["machine"] else f"numerics_{cpu}")
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
