"""Whole-model benchmark: VGG-16 and ResNet-50 (the project's definitions), 224x224, batch 1.

Side by side, in one process, same threads: torch dense (oneDNN), onnxruntime dense,
TVM dense (MetaSchedule-tuned, tuning log in autotune_logs/) and mcpruner sparse, all on
the *same pruned weights* (the dense frameworks run them dense).

  VGG-16:    4-of-9 patterns + keep_kernels 0.28125 (9/32) -> 2.25 x 3.56 = 8x fewer 3x3 MACs
  ResNet-50: 4-of-9 patterns + keep_kernels 0.5             -> 4.5x fewer 3x3 MACs

1x1 convs get ``mcp.prune``'s connectivity pruning at ``--keep-pointwise`` (default: the
keep_kernels share, i.e. 2x fewer on ResNet-50's 1x1s), Linear layers stay dense unless
``--keep-linear`` is given; the MAC reductions reported are the achieved ones. Weights are random
(seeded); BatchNorm statistics are set from one forward pass of the pruned model on
random inputs, so activations keep a trained network's scale (no vanishing values,
no denormals). Also reported: weight bytes, dense fp32 vs the packed operands, and a
per-kernel time table (TVM VM instrumentation) showing where each build spends its time.

    python benchmarks/models.py --threads 2 --repeats 5 --tune-trials 64
    python benchmarks/models.py --quick                  # width 1/4 models at 64x64, untuned (CI)
    python benchmarks/models.py --tune-only --tune-trials 64
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import torch
import tvm
from torch import nn
from tvm import relax

import tvm_mcpruner as mcp
from tvm_mcpruner.pruning import bake

PATTERN_K = 4
MIN_IN_CHANNELS = 16  # the RGB stem stays dense


@dataclass(frozen=True)
class ModelCase:
    name: str  # get_model name
    keep_kernels: float
    goal_speedup: float
    kwargs: tuple[tuple[str, Any], ...] = ()
    keep_pointwise: float | None = None  # 1x1 convs' kept share (None: mcp.prune's default, keep_kernels)
    keep_linear: float | None = None  # Linear layers' kept share (None: left dense)

    @property
    def three_by_three_reduction(self) -> float:
        return 9 / PATTERN_K / self.keep_kernels


CASES = {
    "vgg16": ModelCase("vgg16", 9 / 32, 2.5, (("head", "full"),)),
    "resnet50": ModelCase("resnet50", 0.5, 1.8, keep_pointwise=0.18),  # 1x1s ~5.5x: ~4.5x over all convs
}


# ----------------------------------------------------------------------------- preparing
def calibrate_batch_norm(model: nn.Module, size: int, batch: int = 2, seed: int = 2) -> None:
    """Set every BatchNorm's running statistics to those of one forward pass on random data."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: after one batch, exactly its statistics
    torch.manual_seed(seed)
    model.train()
    with torch.no_grad():
        model(torch.randn(batch, 3, size, size))
    model.eval()


def prepare(case: ModelCase, size: int, width: float) -> tuple[nn.Module, torch.Tensor, Any]:
    """(pruned baked model, input, prune report) for a case; deterministic."""
    torch.manual_seed(0)
    kwargs = dict(case.kwargs)
    if width != 1.0:  # quick runs: narrow model, and VGG's small head instead of 4096-wide FCs
        kwargs["width"] = width
        if case.name.startswith("vgg"):
            kwargs["head"] = "small"
    model = mcp.models.get_model(case.name, num_classes=1000, **kwargs).eval()
    x = torch.randn(1, 3, size, size)
    pruned, report = mcp.prune(model, target="host", pattern_k=PATTERN_K, keep_kernels=case.keep_kernels,
                               keep_pointwise=case.keep_pointwise, keep_linear=case.keep_linear,
                               min_in_channels=MIN_IN_CHANNELS, example_input=x)
    calibrate_batch_norm(pruned, size)
    return bake(pruned).eval(), x, report


# ----------------------------------------------------------------------------- weight bytes
def constant_bytes(mod: tvm.IRModule) -> dict[str, int]:
    """Bytes of the constants in ``main``, by who consumes them: a call_tir kernel (by
    name, digits stripped) or a Relax op left to TVM (``"relax ops"``)."""
    out: dict[str, int] = {}
    seen: set = set()  # TVM objects hash and compare by identity

    def add(bucket: str, const: Any) -> None:
        if isinstance(const, tvm.ir.GenericConst) and const not in seen:
            seen.add(const)
            out[bucket] = out.get(bucket, 0) + int(const.value.numpy().nbytes)

    def visit(expr: Any) -> None:
        if not isinstance(expr, relax.Call):
            return
        if expr.op.same_as(tvm.ir.Op.get("relax.call_tir")):
            bucket = expr.args[0].name_hint.rstrip("0123456789_")
            for arg in expr.args[1].fields:
                add(bucket, arg)
        else:
            for arg in expr.args:
                add("relax ops", arg)

    relax.analysis.post_order_visit(mod["main"], visit)
    return out


def weight_bytes(model: nn.Module, mod: tvm.IRModule) -> dict[str, Any]:
    """Dense fp32 bytes of conv/linear weights vs what the mcpruner build carries."""
    from relay_passes import RewriteSparseConv2d

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    convs = [m for m in layers if isinstance(m, nn.Conv2d) and m.groups == 1]
    dense_weights = sum(m.weight.numel() * 4 for m in layers)
    nonzero_values = sum(int(torch.count_nonzero(m.weight)) * 4 for m in layers)
    lanes = mcp.get_preset("host").vector_width
    dense_consts = constant_bytes(mod)
    sparse_consts = constant_bytes(RewriteSparseConv2d("host")(mod))
    return {
        "dense_weight_bytes": dense_weights,
        "nonzero_weight_value_bytes": nonzero_values,
        "conv_dense_weight_bytes": sum(m.weight.numel() * 4 for m in convs),
        "conv_nonzero_value_bytes": sum(int(torch.count_nonzero(m.weight)) * 4 for m in convs),
        "conv_sparse_format_bytes": sum(
            mcp.pack_pattern_weights(m.weight.detach().numpy(), lanes).nbytes for m in convs),
        "dense_model_constant_bytes": sum(dense_consts.values()),
        "mcpruner_model_constant_bytes": sum(sparse_consts.values()),
        "mcpruner_constants_by_consumer": sparse_consts,
        "compression_vs_dense": sum(dense_consts.values()) / max(sum(sparse_consts.values()), 1),
    }


# ----------------------------------------------------------------------------- per-kernel profile
def kernel_profile(vm: relax.VirtualMachine, x: np.ndarray, runs: int = 3) -> list[dict[str, Any]]:
    """Per compiled-kernel call, in execution order: name, input/output shape, median ms.

    Uses ``VirtualMachine.set_instrument`` (called before and after every call); VM
    builtins are skipped. Timing one kernel at a time adds a little overhead per call.
    """
    calls: list[list[Any]] = []
    state: dict[str, Any] = {}

    def instrument(_func, symbol, before, _ret, *args):
        if symbol.startswith("vm.") or "." in symbol:
            return 0
        if before:
            state["t"] = time.perf_counter()
            return 0
        elapsed = (time.perf_counter() - state["t"]) * 1e3
        shapes = [tuple(int(d) for d in a.shape) for a in args if hasattr(a, "shape")]
        calls.append([symbol, shapes[0] if shapes else (), shapes[-1] if shapes else (), elapsed])
        return 0

    arg = tvm.runtime.tensor(np.ascontiguousarray(x))
    vm["main"](arg)  # warm-up
    vm.set_instrument(instrument)
    per_run = []
    try:
        for _ in range(runs):
            calls.clear()
            vm["main"](arg)
            per_run.append([list(c) for c in calls])
    finally:
        vm.set_instrument(lambda *a: 0)
    first = per_run[0]
    return [{"kernel": c[0], "input": c[1], "output": c[2],
             "ms": statistics.median(run[i][3] for run in per_run)} for i, c in enumerate(first)]


def is_conv_kernel(name: str) -> bool:
    return "conv" in name


def per_layer_table(sparse: list[dict[str, Any]], dense: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conv kernels of both builds joined by (output shape, n-th occurrence) -- inputs differ,
    as mcpruner's kernels read a padded, flattened layout; the other kernels summed per build."""
    def keyed(calls: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
        out, count = {}, {}
        for c in calls:
            if is_conv_kernel(c["kernel"]):
                k = tuple(c["output"])
                count[k] = count.get(k, 0) + 1
                out[(k, count[k])] = c
        return out

    s, d = keyed(sparse), keyed(dense)
    rows = []
    for key, c in s.items():
        other = d.get(key)
        rows.append({"input": tuple(other["input"]) if other else tuple(c["input"]), "output": key[0],
                     "mcpruner_kernel": c["kernel"], "mcpruner_ms": c["ms"],
                     "tvm_dense_kernel": other["kernel"] if other else None,
                     "tvm_dense_ms": other["ms"] if other else None})
    rows.append({"input": "-", "output": "-", "mcpruner_kernel": "all other kernels",
                 "mcpruner_ms": sum(c["ms"] for c in sparse if not is_conv_kernel(c["kernel"])),
                 "tvm_dense_kernel": "all other kernels (TVM dense)",
                 "tvm_dense_ms": sum(c["ms"] for c in dense if not is_conv_kernel(c["kernel"]))})
    return rows


# ----------------------------------------------------------------------------- one model
def model_tasks(case: ModelCase, size: int, width: float, tuner: C.DenseTuner) -> list[C.TuningTask]:
    model, x, _ = prepare(case, size, width)
    return tuner.tasks(mcp.from_torch(model, (x,)))


def run_model(case: ModelCase, size: int, width: float, tuner: C.DenseTuner, threads: int,
              repeats: int) -> dict[str, Any]:
    print(f"[{case.name}] pruning and importing", flush=True)
    model, x, report = prepare(case, size, width)
    mod = mcp.from_torch(model, (x,))
    dense_macs, nonzero_macs = C.nonzero_conv_macs(model, x)
    conv_dense_macs, conv_nonzero_macs = C.nonzero_conv_macs(model, x, (nn.Conv2d,))
    xn = x.numpy()
    with torch.no_grad():
        ref = model(x).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"[{case.name}] building onnxruntime, TVM dense, mcpruner", flush=True)
        runners = {"torch": C.torch_runner(model, x),
                   "onnxruntime": C.onnxruntime_runner(model, x, threads, Path(tmp))}
        start = time.perf_counter()
        runners["tvm-dense"], dense_vm = C.vm_runner(tuner.compile(mod), xn)
        dense_compile_s = time.perf_counter() - start
        build = C.mcpruner_build(mod, xn, threads)
        runners["mcpruner"] = build.runner
        print(f"[{case.name}] timing", flush=True)
        notes = {"torch": "oneDNN", "tvm-dense": f"{tuner.trials_per_task} trials/task", "mcpruner": "sparse"}
        timings = C.measure_all(runners, dict.fromkeys(runners, ref), repeats, notes)
    print(f"[{case.name}] per-kernel profile", flush=True)
    sparse_profile = kernel_profile(build.compiled.vm, xn)
    dense_profile = kernel_profile(dense_vm, xn)
    dense = [timings[f] for f in C.DENSE_FRAMEWORKS]
    fastest = min(dense, key=lambda t: t.median_ms)
    ours = timings["mcpruner"].median_ms
    gflops = 2 * nonzero_macs / (ours * 1e-3) / 1e9
    speedup = fastest.median_ms / ours
    records = build.compiled.sparse_layers
    return {
        "model": case.name, "input": list(x.shape), "pattern_k": PATTERN_K, "keep_kernels": case.keep_kernels,
        "keep_pointwise": case.keep_pointwise, "keep_linear": case.keep_linear,
        "model_kwargs": dict(case.kwargs), "width": width,
        "conv_3x3_mac_reduction_nominal": case.three_by_three_reduction,
        "prune_report_mac_reduction": report.mac_reduction,
        "dense_macs": dense_macs, "nonzero_macs": nonzero_macs, "nonzero_reduction": dense_macs / max(nonzero_macs, 1),
        "conv_nonzero_reduction": conv_dense_macs / max(conv_nonzero_macs, 1),
        "sparse_layers": sum(r.sparse for r in records), "conv_layers": len(records),
        "layer_records": [{"name": r.name, "weight_shape": list(r.weight_shape), "sparse": r.sparse,
                           "kernel": r.kernel, "mac_reduction": r.mac_reduction, "reason": r.reason}
                          for r in records],
        "timings": [t.to_dict() for t in timings.values()],
        "fastest_dense": fastest.framework, "speedup_vs_fastest_dense": speedup,
        "goal_speedup": case.goal_speedup, "reached": speedup >= case.goal_speedup,
        "short_by_pct": None if speedup >= case.goal_speedup else round(100 * (1 - speedup / case.goal_speedup), 1),
        "mcpruner_gflops_nonzero": gflops, "mcpruner_pct_peak": None,  # set once the run's peak is known
        "dense_gflops": {t.framework: 2 * dense_macs / (t.median_ms * 1e-3) / 1e9 for t in dense},
        "mcpruner_compile_s": round(build.compile_s, 1), "tvm_dense_compile_s": round(dense_compile_s, 1),
        "weight_bytes": weight_bytes(model, mod),
        "per_layer": per_layer_table(sparse_profile, dense_profile),
        "kernel_profile": {"mcpruner": sparse_profile, "tvm-dense": dense_profile},
    }


# ----------------------------------------------------------------------------- report
def markdown(info: dict[str, Any], peak: dict[str, Any], results: list[dict[str, Any]], wall_s: float) -> str:
    lines = [C.header_markdown("Model benchmark: mcpruner sparse vs dense frameworks", info, peak, wall_s), "",
             ("All frameworks run the same pruned weights (the dense ones dense); batch 1. "
             "Weights are random (seeded), BatchNorm statistics calibrated on random inputs."), "",
             "## Targets", ""]
    for r in results:
        state = "**reached**" if r["reached"] else f"**missed** by {r['short_by_pct']}%"
        pointwise = r["keep_pointwise"] if r["keep_pointwise"] is not None else r["keep_kernels"]
        lines.append(f"- {r['model']} (keep_kernels {r['keep_kernels']:.4g}, 1x1 keep {pointwise:.4g}, "
                     f"Linear {'keep ' + format(r['keep_linear'], '.4g') if r['keep_linear'] else 'dense'}; "
                     f"3x3 MACs {r['conv_3x3_mac_reduction_nominal']:.2f}x fewer, "
                     f"all convs {r['conv_nonzero_reduction']:.2f}x, whole model {r['nonzero_reduction']:.2f}x "
                     "fewer non-zero MACs): "
                     f"{r['speedup_vs_fastest_dense']:.2f}x over {r['fastest_dense']} vs goal "
                     f"{r['goal_speedup']}x: {state}")
    headers = ["model", "input", "dense GMAC", "MAC red. (non-zero)", "sparse convs", "torch ms", "ORT ms",
               "TVM ms", "mcp ms", "mcp GF/s nz", "% peak", "speedup vs fastest dense", "max err"]
    rows = []
    for r in results:
        t = {x["framework"]: x for x in r["timings"]}
        rows.append([r["model"], "x".join(map(str, r["input"])), f"{r['dense_macs'] / 1e9:.2f}",
                     f"{r['nonzero_reduction']:.2f}x", f"{r['sparse_layers']}/{r['conv_layers']}",
                     *(C.fmt(t[f]["median_ms"], ".2f") for f in ("torch", "onnxruntime", "tvm-dense", "mcpruner")),
                     f"{r['mcpruner_gflops_nonzero']:.0f}", f"{r['mcpruner_pct_peak']:.0f}",
                     f"**{r['speedup_vs_fastest_dense']:.2f}x** ({r['fastest_dense']})",
                     f"{t['mcpruner']['max_rel_error']:.1e}"])
    lines += ["", "## Whole models", "", C.md_table(headers, rows), "", "## Weight bytes", ""]
    wb_rows = [[r["model"], f"{r['weight_bytes']['dense_weight_bytes'] / 2**20:.1f}",
                f"{r['weight_bytes']['nonzero_weight_value_bytes'] / 2**20:.1f}",
                f"{r['weight_bytes']['dense_model_constant_bytes'] / 2**20:.1f}",
                f"{r['weight_bytes']['mcpruner_model_constant_bytes'] / 2**20:.1f}",
                f"{r['weight_bytes']['compression_vs_dense']:.2f}x",
                ", ".join(f"{k} {v / 2**20:.1f}" for k, v in r["weight_bytes"]["mcpruner_constants_by_consumer"].items())]
               for r in results]
    conv_rows = [[r["model"], f"{r['weight_bytes']['conv_dense_weight_bytes'] / 2**20:.1f}",
                  f"{r['weight_bytes']['conv_nonzero_value_bytes'] / 2**20:.1f}",
                  f"{r['weight_bytes']['conv_sparse_format_bytes'] / 2**20:.1f}",
                  f"{r['weight_bytes']['conv_dense_weight_bytes'] / max(r['weight_bytes']['conv_sparse_format_bytes'], 1):.2f}x",
                  f"{r['weight_bytes']['conv_sparse_format_bytes'] / max(r['weight_bytes']['conv_nonzero_value_bytes'], 1):.3f}"]
                 for r in results]
    lines.append(C.md_table(["model", "conv weights, dense fp32 MiB", "non-zero values MiB",
                             "packed (sparse format) MiB", "compression", "packed / non-zero values"], conv_rows))
    lines += ["", "Whole build (every constant the compiled model carries; Linear layers dense unless --keep-linear):", ""]
    lines.append(C.md_table(["model", "dense conv+fc weights MiB", "non-zero values MiB", "dense build constants MiB",
                             "mcpruner build constants MiB", "compression", "mcpruner constants by consumer (MiB)"],
                            wb_rows))
    for r in results:
        lines += ["", f"## Where the time goes: {r['model']} (per conv kernel, TVM VM instrumentation)", "",
                  _per_layer_markdown(r["per_layer"])]
    return "\n".join(lines)


def _per_layer_markdown(rows: list[dict[str, Any]]) -> str:
    total_s = sum(r["mcpruner_ms"] for r in rows)
    total_d = sum(r["tvm_dense_ms"] or 0 for r in rows)
    table = [["x".join(map(str, r["input"])) if r["input"] != "-" else "-",
              "x".join(map(str, r["output"])) if r["output"] != "-" else "-",
              r["mcpruner_kernel"], f"{r['mcpruner_ms']:.3f}", f"{100 * r['mcpruner_ms'] / max(total_s, 1e-9):.1f}",
              C.fmt(r["tvm_dense_ms"], ".3f"),
              C.fmt(r["tvm_dense_ms"] / r["mcpruner_ms"] if r["tvm_dense_ms"] and r["mcpruner_ms"] else None)]
             for r in rows]
    table.append(["total", "", "", f"{total_s:.2f}", "100", f"{total_d:.2f}", C.fmt(total_d / max(total_s, 1e-9))])
    return C.md_table(["input", "output", "mcpruner kernel", "mcp ms", "% of mcp", "TVM dense ms",
                       "TVM dense / mcp"], table)


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="vgg16,resnet50", help=f"comma-separated, of {', '.join(CASES)}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--tune-trials", type=int, default=None,
                   help="MetaSchedule trials per task for TVM dense (0 = untuned; default 64, 0 with --quick)")
    p.add_argument("--tune-only", action="store_true", help="fill the tuning log, measure nothing")
    p.add_argument("--no-tune", action="store_true",
                   help="use the tuning log as it is (tasks short of the budget are listed in the results)")
    p.add_argument("--quick", action="store_true", help="width-1/4 models at 64x64, untuned TVM (CI smoke run)")
    p.add_argument("--keep-pointwise", type=float, default=None,
                   help="kept share of 1x1 convs (default: the model case's, else its keep_kernels)")
    p.add_argument("--keep-linear", type=float, default=None, help="kept share of Linear layers (default: dense)")
    p.add_argument("--size", type=int, default=None, help="input height/width (default 224; 64 with --quick)")
    p.add_argument("--autotune-root", type=Path, default=C.REPO_ROOT / "autotune_logs")
    p.add_argument("--out", type=Path, default=C.REPO_ROOT / "benchmarks" / "results")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    args.model_list = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.model_list if m not in CASES]
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {', '.join(CASES)}")
    if args.tune_trials is None:
        args.tune_trials = 0 if args.quick else 64
    args.size = args.size or (64 if args.quick else 224)
    args.width = 0.25 if args.quick else 1.0
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    start = time.perf_counter()
    C.setup(args.threads, args.verbose)
    tuner = C.DenseTuner(args.tune_trials, args.autotune_root, threads=args.threads)
    overrides = {k: v for k, v in (("keep_pointwise", args.keep_pointwise), ("keep_linear", args.keep_linear))
                 if v is not None}  # flags given on the command line win over the case's own
    cases = [replace(CASES[m], **overrides) for m in args.model_list]
    tasks = [t for case in cases for t in model_tasks(case, args.size, args.width, tuner)] if args.tune_trials else []
    tuning, peak_before = C.tune_then_open_peak(tuner, tasks, args)
    if peak_before is None:  # --tune-only
        return tuning
    results = [run_model(case, args.size, args.width, tuner, args.threads, args.repeats) for case in cases]
    peak = C.close_peak(peak_before, results, args.threads, repeats=max(args.repeats, 3))
    wall_s = time.perf_counter() - start
    info = C.run_info(args.threads, tuner, args.repeats, tuning)
    payload = {**info, "wall_s": round(wall_s, 1), "peak": peak, "quick": args.quick, "models": results}
    text = markdown(info, peak, results, wall_s)
    return C.publish(args.out, "models", payload, text, summary_end="## Where the time goes")


if __name__ == "__main__":
    main()
