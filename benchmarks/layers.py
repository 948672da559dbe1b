"""Layer benchmark: every distinct conv of the project's VGG-16 / ResNet-50 / MobileNetV2 at 224x224.

Side by side, in one process, same threads: torch dense (oneDNN), onnxruntime dense,
TVM dense (MetaSchedule-tuned, tuning log in autotune_logs/) and mcpruner sparse.

Each layer runs as a one-conv module **conv (with bias) + ReLU**, batch 1, the shape it
has in the model (found by forward hooks on ``get_model(...)`` at 224x224, deduplicated
by (C, O, H, W, k, stride, pad)). The dense frameworks run the unpruned layer (its time
does not depend on the values); mcpruner runs the layer pruned by ``mcp.prune`` at each
sparsity, checked against torch on the same pruned weights.

  sparsity A: pattern_k=4 (4-of-9 taps) + keep_kernels=keep_pointwise=0.5   (3x3: 4.5x fewer MACs; 1x1: 2x)
  sparsity B: pattern_k=4 (4-of-9 taps) + keep_kernels=keep_pointwise=0.25  (3x3: 9x;              1x1: 4x)

The MAC reduction reported is what the compiled kernel achieved (``sparse_layers``
records), never assumed; GFLOP/s count non-zero work (2 x non-zero weights x output
pixels / time; dense MACs for the dense frameworks).

    python benchmarks/layers.py --suite all --sparsity both --threads 2 --tune-trials 64
    python benchmarks/layers.py --quick                 # 3 small layers, untuned TVM (CI)
    python benchmarks/layers.py --tune-only --tune-trials 64   # only fill the tuning log
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import torch
from torch import nn

import tvm_mcpruner as mcp
from tvm_mcpruner.pruning import bake

SPARSITIES = {"A": 0.5, "B": 0.25}  # keep_kernels; pattern_k = 4 for both
PATTERN_K = 4
MIN_IN_CHANNELS = 16  # stems (3 input channels) stay dense: not part of the suite
SUITE_MODELS = {"3x3": ("vgg16", "resnet50"), "1x1": ("resnet50", "mobilenet_v2")}
TARGETS = {"3x3_A": 2.5, "3x3_B": 4.0, "3x3_peak_pct": 55.0, "1x1_4x": 1.5}
# Half the work at B should take at most this share of the time at A (per layer, median).
MAX_B_OVER_A = 0.65


# ----------------------------------------------------------------------------- the layer list
@dataclass(frozen=True)
class ConvShape:
    """A conv as it runs in a model: what makes two layers the same workload."""

    cin: int
    cout: int
    height: int
    width: int
    kernel: int
    stride: int
    pad: int

    @property
    def out_hw(self) -> tuple[int, int]:
        out = lambda n: (n + 2 * self.pad - self.kernel) // self.stride + 1
        return out(self.height), out(self.width)

    @property
    def dense_macs(self) -> int:
        oh, ow = self.out_hw
        return self.cin * self.cout * self.kernel**2 * oh * ow

    @property
    def label(self) -> str:
        return (f"{self.cin}->{self.cout} {self.kernel}x{self.kernel}/s{self.stride} "
                f"@{self.height}x{self.width}")


@dataclass
class SuiteLayer:
    suite: str  # "3x3" | "1x1"
    shape: ConvShape
    found_in: list[str] = field(default_factory=list)  # "model:module" where it occurs


def model_convs(model_name: str, size: int = 224) -> list[tuple[str, nn.Conv2d, tuple[int, ...]]]:
    """(module name, conv, input shape) of every conv a forward pass at ``size`` runs."""
    torch.manual_seed(0)
    model = mcp.models.get_model(model_name, num_classes=1000).eval()
    seen: list[tuple[str, nn.Conv2d, tuple[int, ...]]] = []
    handles = [
        module.register_forward_hook(
            lambda mod, inp, _out, name=name: seen.append((name, mod, tuple(inp[0].shape))))
        for name, module in model.named_modules() if isinstance(module, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        for handle in handles:
            handle.remove()
    return seen


def suite_of(conv: nn.Conv2d) -> str | None:
    if conv.groups != 1 or conv.dilation != (1, 1) or conv.kernel_size[0] != conv.kernel_size[1]:
        return None
    if conv.kernel_size == (3, 3) and conv.in_channels >= MIN_IN_CHANNELS:
        return "3x3"
    if conv.kernel_size == (1, 1):
        return "1x1"
    return None


def discover_layers(suites: list[str]) -> list[SuiteLayer]:
    """The deduplicated layer list of the asked suites, in model order."""
    layers: dict[tuple[str, ConvShape], SuiteLayer] = {}
    for suite in suites:
        for model_name in SUITE_MODELS[suite]:
            for name, conv, in_shape in model_convs(model_name):
                if suite_of(conv) != suite:
                    continue
                shape = ConvShape(conv.in_channels, conv.out_channels, in_shape[2], in_shape[3],
                                  conv.kernel_size[0], conv.stride[0], conv.padding[0])
                entry = layers.setdefault((suite, shape), SuiteLayer(suite, shape))
                entry.found_in.append(f"{model_name}:{name}")
    return list(layers.values())


def quick_layers(layers: list[SuiteLayer]) -> list[SuiteLayer]:
    """The two cheapest 3x3 layers and the cheapest 1x1 layer (CI smoke run)."""
    by_cost = sorted(layers, key=lambda layer: layer.shape.dense_macs)
    return ([lay for lay in by_cost if lay.suite == "3x3"][:2] + [lay for lay in by_cost if lay.suite == "1x1"][:1])


def layer_module(shape: ConvShape, seed: int = 0) -> nn.Module:
    """conv (with bias) + ReLU, like a model conv whose BN has been folded."""
    torch.manual_seed(seed)
    conv = nn.Conv2d(shape.cin, shape.cout, shape.kernel, shape.stride, shape.pad, bias=True)
    with torch.no_grad():
        conv.bias.uniform_(-0.1, 0.1)
    return nn.Sequential(conv, nn.ReLU()).eval()


def layer_input(shape: ConvShape, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(1, shape.cin, shape.height, shape.width)


# ----------------------------------------------------------------------------- measuring
@dataclass
class SparseCase:
    """One pruned variant of a layer, built and ready to time."""

    name: str  # sparsity key
    runner: C.Runner
    ref: np.ndarray
    dense_macs: int
    nonzero_macs: int
    record: Any  # the layer's SparseLayerRecord (or None)
    compile_s: float


def dense_runners(layer: SuiteLayer, tuner: C.DenseTuner, threads: int, workdir: Path
                  ) -> tuple[dict[str, C.Runner], np.ndarray]:
    """torch, onnxruntime and TVM dense on the unpruned layer (time does not depend on values)."""
    model, x = layer_module(layer.shape), layer_input(layer.shape)
    run_tvm, _vm = C.vm_runner(tuner.compile(mcp.from_torch(model, (x,))), x.numpy())
    runners = {"torch": C.torch_runner(model, x),
               "onnxruntime": C.onnxruntime_runner(model, x, threads, workdir),
               "tvm-dense": run_tvm}
    return runners, model(x).detach().numpy()


def sparse_case(layer: SuiteLayer, name: str, threads: int, target: str = "host") -> SparseCase:
    """The layer pruned by ``mcp.prune`` at sparsity ``name`` and compiled by ``mcp.compile``,
    both for the preset ``target``."""
    model, x = layer_module(layer.shape), layer_input(layer.shape)
    keep = SPARSITIES[name]
    pruned, _report = mcp.prune(model, target=target, pattern_k=PATTERN_K, keep_kernels=keep,
                                keep_pointwise=keep, min_in_channels=MIN_IN_CHANNELS, example_input=x)
    pruned = bake(pruned).eval()
    dense_macs, nonzero_macs = C.nonzero_conv_macs(pruned, x)
    build = C.mcpruner_build(mcp.from_torch(pruned, (x,)), x.numpy(), threads, target)
    record = build.compiled.sparse_layers[0] if build.compiled.sparse_layers else None
    return SparseCase(name, build.runner, pruned(x).detach().numpy(), dense_macs, nonzero_macs,
                      record, build.compile_s)


def layer_results(layer: SuiteLayer, sparsities: list[str], tuner: C.DenseTuner, threads: int,
                  repeats: int, target: str = "host") -> list[dict[str, Any]]:
    """Time the three dense frameworks and mcpruner at each sparsity, interleaved."""
    with tempfile.TemporaryDirectory() as tmp:
        runners, dense_ref = dense_runners(layer, tuner, threads, Path(tmp))
        refs = dict.fromkeys(runners, dense_ref)
        cases = {name: sparse_case(layer, name, threads, target) for name in sparsities}
        for name, case in cases.items():
            runners[f"mcpruner@{name}"], refs[f"mcpruner@{name}"] = case.runner, case.ref
        probe, probe_flops = C.fma_peak_probe(threads)
        runners[C.PEAK_PROBE], refs[C.PEAK_PROBE] = probe, None
        notes = {"torch": "oneDNN", "tvm-dense": f"{tuner.trials_per_task} trials/task"}
        timings = C.measure_all(runners, refs, repeats, notes)
    concurrent_peak = probe_flops / (timings.pop(C.PEAK_PROBE).median_ms * 1e-3) / 1e9
    dense = [timings[f] for f in C.DENSE_FRAMEWORKS]
    fastest = min(dense, key=lambda t: t.median_ms)
    same_isa = C.same_isa_dense_frameworks()
    fastest_same_isa = (min((timings[f] for f in same_isa), key=lambda t: t.median_ms) if same_isa else None)
    return [row(layer, cases[name], dense, timings[f"mcpruner@{name}"], fastest, concurrent_peak, fastest_same_isa)
            for name in sparsities]


def row(layer: SuiteLayer, case: SparseCase, dense: list[C.Timing], sparse: C.Timing,
        fastest: C.Timing, concurrent_peak: float, fastest_same_isa: C.Timing | None = None) -> dict[str, Any]:
    gflops = 2 * case.nonzero_macs / (sparse.median_ms * 1e-3) / 1e9
    record = case.record
    return {
        "suite": layer.suite, "layer": layer.shape.label, "shape": asdict(layer.shape),
        "found_in": layer.found_in, "sparsity": case.name, "keep_kernels": SPARSITIES[case.name],
        "pattern_k": PATTERN_K, "dense_macs": layer.shape.dense_macs, "nonzero_macs": case.nonzero_macs,
        "mac_reduction": float(record.mac_reduction) if record else 1.0,
        "nonzero_reduction": layer.shape.dense_macs / max(case.nonzero_macs, 1),
        "sparse_kernel": bool(record.sparse) if record else False,
        "kernel": record.kernel if record else None,
        "kernel_reason": record.reason if record else "no conv record",
        "mcpruner_compile_s": round(case.compile_s, 2),
        "timings": [t.to_dict() for t in (*dense, sparse)],
        "dense_gflops": {t.framework: 2 * layer.shape.dense_macs / (t.median_ms * 1e-3) / 1e9 for t in dense},
        "mcpruner_gflops_nonzero": gflops, "mcpruner_pct_peak": None,  # set once the run's peak is known
        # the FMA loop timed in the same interleaved rounds as this layer (C.fma_peak_probe)
        "concurrent_peak_gflops": concurrent_peak, "mcpruner_pct_concurrent_peak": 100 * gflops / concurrent_peak,
        "fastest_dense": fastest.framework, "speedup_vs_fastest_dense": fastest.median_ms / sparse.median_ms,
        # with the host preset built for a narrower CPU: the dense frameworks held to its ISA
        "fastest_same_isa_dense": fastest_same_isa.framework if fastest_same_isa else None,
        "speedup_vs_fastest_same_isa_dense": (fastest_same_isa.median_ms / sparse.median_ms
                                              if fastest_same_isa else None),
    }


# ----------------------------------------------------------------------------- summary
def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each target: the measured value, the goal, reached or missed by how much."""
    def entry(values: list[float], goal: float, what: str) -> dict[str, Any]:
        if not values:
            return {"what": what, "goal": goal, "value": None, "reached": None, "layers": 0,
                    "note": "no layer measured for this target"}
        value = statistics.median(values)
        return {"what": what, "goal": goal, "value": round(value, 3), "reached": value >= goal,
                "short_by": None if value >= goal else round(goal - value, 3),
                "short_by_pct": None if value >= goal else round(100 * (1 - value / goal), 1),
                "layers": len(values)}

    pick = lambda suite, sp=None: [r for r in rows if r["suite"] == suite and sp in (None, r["sparsity"])]
    one_by_one_4x = [r for r in pick("1x1") if r["mac_reduction"] >= 3.5]
    out = {
        "3x3_A": entry([r["speedup_vs_fastest_dense"] for r in pick("3x3", "A")], TARGETS["3x3_A"],
                       "median speedup over the fastest dense framework, 3x3 suite, sparsity A (x)"),
        "3x3_B": entry([r["speedup_vs_fastest_dense"] for r in pick("3x3", "B")], TARGETS["3x3_B"],
                       "median speedup over the fastest dense framework, 3x3 suite, sparsity B (x)"),
        "3x3_peak_pct": entry([r["mcpruner_pct_peak"] for r in pick("3x3")], TARGETS["3x3_peak_pct"],
                              "median non-zero work as % of measured peak, 3x3 suite, A and B (%)"),
        "3x3_concurrent_peak_pct": entry(
            [r["mcpruner_pct_concurrent_peak"] for r in pick("3x3")], TARGETS["3x3_peak_pct"],
            "the same, as % of the peak measured interleaved with each layer's timings "
            "(host drift divided out) (%)"),
        "1x1_4x": entry([r["speedup_vs_fastest_dense"] for r in one_by_one_4x], TARGETS["1x1_4x"],
                        "median speedup over the fastest dense framework, 1x1 layers with >= 3.5x "
                        "fewer MACs achieved (x)"),
    }
    if any(r.get("speedup_vs_fastest_same_isa_dense") for r in rows):
        for sp in ("A", "B"):
            out[f"3x3_{sp}_same_isa"] = entry(
                [r["speedup_vs_fastest_same_isa_dense"] for r in pick("3x3", sp)], TARGETS[f"3x3_{sp}"],
                f"median speedup over the fastest dense framework held to the same ISA, 3x3 suite, "
                f"sparsity {sp} (x)")
    b_over_a = _time_b_over_a(pick("3x3"))
    if b_over_a:
        value = statistics.median(b_over_a)
        out["3x3_B_over_A"] = {
            "what": "median over the 3x3 layers of mcpruner's time at B / its time at A (x; lower is better: "
                    "B keeps half of A's work)", "goal": MAX_B_OVER_A, "value": round(value, 3),
            "reached": value <= MAX_B_OVER_A, "short_by": None if value <= MAX_B_OVER_A else round(value - MAX_B_OVER_A, 3),
            "short_by_pct": None if value <= MAX_B_OVER_A else round(100 * (value / MAX_B_OVER_A - 1), 1),
            "layers": len(b_over_a)}
    if pick("1x1") and not one_by_one_4x:
        best = max(r["mac_reduction"] for r in pick("1x1"))
        out["1x1_4x"]["note"] = (f"mcp.prune / the compiler reached at most {best:.2f}x fewer MACs on "
                                 "the 1x1 layers: the 4x target could not be measured")
    return out


def _time_b_over_a(rows: list[dict[str, Any]]) -> list[float]:
    """Per layer measured at both sparsities: mcpruner's median time at B over its time at A."""
    ms: dict[str, dict[str, float]] = {}
    for r in rows:
        sparse = next(t for t in r["timings"] if t["framework"] == "mcpruner")
        ms.setdefault(r["layer"], {})[r["sparsity"]] = sparse["median_ms"]
    return [t["B"] / t["A"] for t in ms.values() if {"A", "B"} <= t.keys()]


def markdown(info: dict[str, Any], peak: dict[str, Any], rows: list[dict[str, Any]],
             summary: dict[str, Any], wall_s: float) -> str:
    same_isa = any(r.get("speedup_vs_fastest_same_isa_dense") for r in rows)
    headers = ["suite", "layer", "sp.", "dense MMAC", "MAC red. (kernel)", "torch ms", "ORT ms",
               "TVM ms", "mcp ms", "mcp GF/s nz", "% peak", "% conc. peak", "best dense GF/s",
               "speedup vs fastest dense", *(["speedup vs fastest same-ISA dense"] if same_isa else []),
               "max err"]
    table = []
    for r in rows:
        t = {x["framework"]: x for x in r["timings"]}
        table.append([
            r["suite"], r["layer"], r["sparsity"], f"{r['dense_macs'] / 1e6:.0f}",
            f"{r['mac_reduction']:.2f}x" + ("" if r["sparse_kernel"] else " (dense)"),
            *(C.fmt(t[f]["median_ms"], ".3f") for f in ("torch", "onnxruntime", "tvm-dense", "mcpruner")),
            f"{r['mcpruner_gflops_nonzero']:.0f}", f"{r['mcpruner_pct_peak']:.0f}",
            f"{r['mcpruner_pct_concurrent_peak']:.0f} of {r['concurrent_peak_gflops']:.0f}",
            f"{max(r['dense_gflops'].values()):.0f} ({r['fastest_dense']})",
            f"**{r['speedup_vs_fastest_dense']:.2f}x**",
            *([f"**{r['speedup_vs_fastest_same_isa_dense']:.2f}x** ({r['fastest_same_isa_dense']})"]
              if same_isa else []),
            f"{t['mcpruner']['max_rel_error']:.1e}",
        ])
    lines = [C.header_markdown("Layer benchmark: mcpruner sparse vs dense frameworks", info, peak, wall_s), "",
             ("Layers: one-conv modules, conv (with bias) + ReLU, batch 1, shapes from the project's "
             "models at 224x224. Sparsity A = 4-of-9 patterns + 50% kernels kept, B = 4-of-9 + 25% "
             "(on 1x1 layers only the kept share applies). 'MAC red. (kernel)' is what the compiled "
             "kernel achieved (`sparse_layers`); GF/s nz = non-zero work. '% peak' divides by the "
             "run's largest peak (measured before and after); '% conc. peak' by the FMA-loop peak "
             "timed in the same interleaved rounds as that layer (GFLOP/s given), which divides "
             "out the host's drift in available compute."), "",
             f"mcpruner target preset: `{info['mcpruner_target']}` "
             f"({mcp.get_preset(info['mcpruner_target']).description}); the peaks are this machine's.", "",
             "## Targets", ""]
    for key, s in summary.items():
        if s["value"] is None:
            state = "not measured" + (f" ({s['note']})" if s.get("note") else "")
        elif s["reached"]:
            state = "**reached**"
        else:
            state = f"**missed** by {s['short_by']:.3f} ({s['short_by_pct']}% short)"
        lines.append(f"- {key}: {s['what']}: {C.fmt(s['value'], '.3f')} vs goal {s['goal']} over "
                     f"{s['layers']} layer(s): {state}" + (f"; {s['note']}" if s.get("note") and s["value"] is not None else ""))
    lines += ["", "## Per layer", "", C.md_table(headers, table)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=["3x3", "1x1", "all"], default="all")
    p.add_argument("--sparsity", choices=["A", "B", "both"], default="both")
    p.add_argument("--threads", type=int, default=2, help="threads for every framework")
    p.add_argument("--target", default="host",
                   help="preset mcpruner prunes and compiles for, e.g. x86-avx2 (the dense frameworks "
                        "and the peak probes run as they do on this machine)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per framework (>= 5 for results)")
    p.add_argument("--tune-trials", type=int, default=None,
                   help="MetaSchedule trials per task for TVM dense (0 = untuned; default 64, "
                        "0 with --quick)")
    p.add_argument("--tune-only", action="store_true", help="fill the tuning log, measure nothing")
    p.add_argument("--no-tune", action="store_true",
                   help="use the tuning log as it is (tasks short of the budget are listed in the results)")
    p.add_argument("--quick", action="store_true", help="3 small layers, untuned TVM unless --tune-trials")
    p.add_argument("--limit", type=int, default=None, help="only the first N layers (debugging)")
    p.add_argument("--only", default=None, help="only layers whose label contains this text, e.g. '3x3/s2'")
    p.add_argument("--autotune-root", type=Path, default=C.REPO_ROOT / "autotune_logs")
    p.add_argument("--out", type=Path, default=C.REPO_ROOT / "benchmarks" / "results")
    p.add_argument("--stem", default="layers", help="result file names: <out>/<stem>.json and .md")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.tune_trials is None:
        args.tune_trials = 0 if args.quick else 64
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def selected_layers(args: argparse.Namespace) -> list[SuiteLayer]:
    suites = ["3x3", "1x1"] if args.suite == "all" else [args.suite]
    layers = discover_layers(suites)
    if args.quick:
        layers = [lay for lay in quick_layers(discover_layers(["3x3", "1x1"])) if lay.suite in suites]
    if args.only:
        layers = [lay for lay in layers if args.only in lay.shape.label]
    return layers[: args.limit] if args.limit else layers


def layer_tasks(layers: list[SuiteLayer], tuner: C.DenseTuner) -> list[C.TuningTask]:
    """The TVM dense MetaSchedule tasks of the layer modules."""
    return [task for layer in layers
            for task in tuner.tasks(mcp.from_torch(layer_module(layer.shape), (layer_input(layer.shape),)))]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from tqdm import tqdm

    args = parse_args(argv)
    start = time.perf_counter()
    C.setup(args.threads, args.verbose)
    tuner = C.DenseTuner(args.tune_trials, args.autotune_root, threads=args.threads)
    layers = selected_layers(args)
    print(f"{len(layers)} layers: " + "; ".join(f"{lay.suite} {lay.shape.label}" for lay in layers), flush=True)
    tasks = layer_tasks(layers, tuner) if args.tune_trials else []
    tuning, peak_before = C.tune_then_open_peak(tuner, tasks, args)
    if peak_before is None:  # --tune-only
        return tuning
    sparsities = ["A", "B"] if args.sparsity == "both" else [args.sparsity]
    rows = []
    for layer in tqdm(layers, desc="layers", unit="layer", file=sys.stdout):
        rows += layer_results(layer, sparsities, tuner, args.threads, args.repeats, args.target)
    peak = C.close_peak(peak_before, rows, args.threads, repeats=max(args.repeats, 3))
    summary = summarize(rows)
    wall_s = time.perf_counter() - start
    info = {**C.run_info(args.threads, tuner, args.repeats, tuning), "mcpruner_target": args.target}
    payload = {**info, "wall_s": round(wall_s, 1), "peak": peak, "quick": args.quick,
               "sparsities": {k: {"pattern_k": PATTERN_K, "keep_kernels": SPARSITIES[k]} for k in sparsities},
               "layer_module": "conv (with bias) + ReLU, batch 1", "targets": summary, "layers": rows}
    text = markdown(info, peak, rows, summary, wall_s)
    return C.publish(args.out, args.stem, payload, text, summary_end="## Per layer")


if __name__ == "__main__":
    main()
