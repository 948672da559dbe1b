"""Before/after a code change, in one run: the layer suite built by two revisions, timed together.

Each revision is checked out into a temporary git worktree and builds, in its own
process, every layer of the suite (a pruned conv + ReLU, the same seed for both) with
``mcp.compile(..., tuning_log=None)``, exporting one library per layer and the layer's
generated assembly. This process then loads all libraries and times them interleaved:
before, after, and the before-library loaded a second time (an A/A control: the noise of
timing one library twice). Identical assembly says the change cannot have moved the
speed; the timings say what the machine measured anyway.

Usage: ``python benchmarks/ab_builds.py --before <rev> --after <rev> [--suite 3x3] [--quick]``.
Writes ``ab_<suite>_<llvm cpu>_<date>.json/.md`` to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO)]

import numpy as np  # noqa: E402
import tvm  # noqa: E402
from tqdm import tqdm  # noqa: E402
from tvm import relax  # noqa: E402

import layers  # noqa: E402  (the layer suite's definition)
from tvm_mcpruner.benchmark import machine_info, set_threads  # noqa: E402
from tvm_mcpruner.targets import usable_cpus  # noqa: E402
KEEP = 0.5  # sparsity A of the layer suite

# Run inside each revision's checkout: build every layer, export it and its assembly.
_BUILD = r"""
import json, sys, hashlib, torch
import tvm_mcpruner as mcp
shapes, out = json.loads(sys.argv[1]), sys.argv[2]
for i, s in enumerate(shapes):
    torch.manual_seed(i)
    conv = torch.nn.Conv2d(s["cin"], s["cout"], s["kernel"], stride=s["stride"], padding=s["pad"], bias=False)
    model = torch.nn.Sequential(conv, torch.nn.ReLU()).eval()
    pruned, _ = mcp.prune(model, target="host", pattern_k=4, keep_kernels=float(sys.argv[3]), min_in_channels=1)
    x = torch.randn(1, s["cin"], s["height"], s["width"])
    cm = mcp.compile(mcp.from_torch(pruned, (x,)), target="host", tuning_log=None)
    cm.export_library(f"{out}/layer{i}.so")
    asm = cm.executable.mod.inspect_source("asm")
    open(f"{out}/layer{i}.asm.sha256", "w").write(hashlib.sha256(asm.encode()).hexdigest())
"""


def build(rev: str, shapes: list[dict], workdir: Path) -> Path:
    """Libraries of every layer as ``rev`` builds them, in ``workdir/<rev>``."""
    checkout, out = workdir / f"src-{rev}", workdir / f"lib-{rev}"
    out.mkdir(parents=True)
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(checkout), rev], check=True)
    try:
        # The checkout goes first on sys.path, so its packages are the ones imported.
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(checkout)!r})\n" + _BUILD,
                        json.dumps(shapes), str(out), str(KEEP)], check=True, cwd=checkout)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(checkout)], check=True)
    return out


def timer(lib_path: Path, shape: dict):
    """A zero-argument function timing one call of the library's ``main`` (seconds per call)."""
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib_path)), tvm.cpu())
    x = tvm.runtime.tensor(np.random.default_rng(0).standard_normal(
        (1, shape["cin"], shape["height"], shape["width"])).astype(np.float32))
    evaluate = vm.time_evaluator("main", tvm.cpu(), number=10, repeat=1, min_repeat_ms=20)
    return lambda: float(evaluate(x).mean)


def measure(shapes: list[dict], before: Path, after: Path, repeats: int) -> list[dict]:
    rows = []
    for i, shape in enumerate(tqdm(shapes, desc="timing")):
        timers = {"before": timer(before / f"layer{i}.so", shape), "after": timer(after / f"layer{i}.so", shape),
                  "before again": timer(before / f"layer{i}.so", shape)}
        times: dict[str, list[float]] = {name: [] for name in timers}
        for _ in range(repeats):  # interleaved: every variant sees the same spells of the machine
            for name, run in timers.items():
                times[name].append(run())
        ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
        same = (before / f"layer{i}.asm.sha256").read_text() == (after / f"layer{i}.asm.sha256").read_text()
        rows.append({**shape, "ms": ms, "after_over_before": ms["after"] / ms["before"],
                     "aa": ms["before again"] / ms["before"], "same_assembly": same})
    return rows


def markdown(result: dict) -> str:
    m, rows = result["machine"], result["rows"]
    lines = [f"# Layer suite {result['suite']} built by {result['before']} (before) and {result['after']} (after)",
             "", f"{m['llvm_cpu']} ({m['cpu']}), {result['threads']} threads, {result['repeats']} interleaved "
             f"repeats, keep {KEEP} of the kernels (4-of-9 patterns); {result['date']}.", "",
             "| layer | before ms | after ms | after / before | A/A | same assembly |", "|---|---|---|---|---|---|"]
    for r in rows:
        label = f"{r['cin']}->{r['cout']} {r['kernel']}x{r['kernel']}/s{r['stride']} @{r['height']}"
        lines.append(f"| {label} | {r['ms']['before']:.3f} | {r['ms']['after']:.3f} | {r['after_over_before']:.3f} "
                     f"| {r['aa']:.3f} | {'yes' if r['same_assembly'] else 'no'} |")
    ratio = [r["after_over_before"] for r in rows]
    aa = [r["aa"] for r in rows]
    lines += ["", f"after / before: median {statistics.median(ratio):.3f} ({min(ratio):.3f}-{max(ratio):.3f}); "
              f"A/A: median {statistics.median(aa):.3f} ({min(aa):.3f}-{max(aa):.3f}); "
              f"{sum(r['same_assembly'] for r in rows)} of {len(rows)} layers compile to the same assembly."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git revision built as 'before'")
    parser.add_argument("--after", default="HEAD", help="git revision built as 'after' (default HEAD)")
    parser.add_argument("--suite", default="3x3", choices=["3x3", "1x1"])
    parser.add_argument("--quick", action="store_true", help="a few layers only")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=usable_cpus())
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    args.before, args.after = (subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], check=True,
                                              capture_output=True, text=True).stdout.strip()
                               for rev in (args.before, args.after))
    suite = layers.discover_layers([args.suite])
    if args.quick:
        suite = layers.quick_layers(suite)
    shapes = [{f: getattr(layer.shape, f) for f in ("cin", "cout", "height", "width", "kernel", "stride", "pad")}
              for layer in suite]
    with tempfile.TemporaryDirectory(prefix="mcpruner-ab-") as tmp:
        libs = [build(rev, shapes, Path(tmp)) for rev in (args.before, args.after)]
        set_threads(args.threads)
        rows = measure(shapes, *libs, repeats=args.repeats)
    result = {"machine": machine_info(), "suite": args.suite, "before": args.before, "after": args.after,
              "threads": args.threads, "repeats": args.repeats, "rows": rows,
              "date": datetime.datetime.now().isoformat(timespec="minutes")}
    stem = args.out / f"ab_{args.suite}_{result['machine']['llvm_cpu']}_{result['date'][:10]}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
