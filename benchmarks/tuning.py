"""What MetaSchedule tuning buys our sparse kernels on this machine (issue 5).

Part 1, per layer of the CPU suite (``layers.py``'s layers at sparsity A): ``mcp.tune``
with XGBoost for ``--trials`` trials into a fresh log, then the layer compiled with its
default schedule and with the log, timed side by side in this process (interleaved
medians, same threads). Part 2, on ``--compare`` layers: XGBoost-guided evolutionary
search against random search (``search="random"``: replayed random samples of the same
design spaces) for the same budget, reading the best latency found after each budget
from the logs (records are appended in measurement order).

    nice -n 19 python benchmarks/tuning.py                       # both parts (~40 min)
    python benchmarks/tuning.py --quick                          # two small layers, CI-sized
    python benchmarks/tuning.py --ship-log autotune_logs/znver5  # also append records there

Writes ``tuning.json`` + ``.md`` (``tuning_quick`` for --quick) to benchmarks/results.
Times from the tuner are its own measurements (LocalRunner, real packed operands);
default-vs-tuned speedups come from the side-by-side timing, not from the tuner. The
tuned build applies what ``mcp.compile`` picks from the log (median of each schedule's
runs after ``mcp.tune``'s confirmation rounds; the default unless beaten by
``tvm_mcpruner.tuning_log.CHOICE_MARGIN``); a row says when that is the default itself.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402  (puts the repository on sys.path)
import layers as L  # noqa: E402
import numpy as np  # noqa: E402
import tvm  # noqa: E402

import tvm_mcpruner as mcp  # noqa: E402
from tvm_mcpruner.pruning import bake  # noqa: E402
from tvm_mcpruner.tuning_log import CHOICE_MARGIN  # noqa: E402
from tvm_mcpruner.tuning import CONFIRM_CANDIDATES, CONFIRM_ROUNDS, tune  # noqa: E402
from tvm_mcpruner.tuning_log import RECORD_FILE  # noqa: E402

SPARSITY = "A"
CONFIRM_NOTE = f"{CONFIRM_ROUNDS} confirmation rounds of the {CONFIRM_CANDIDATES} fastest and the default"
COMPARE_BUDGETS = (64, 128, 256)  # the issue's budgets; --compare-budgets changes them
DEFAULT_COMPARE = ("256->256 3x3/s1 @14x14", "128->128 3x3/s1 @28x28", "512->512 3x3/s1 @7x7")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--trials", type=int, default=48, help="XGBoost trials per layer (part 1)")
    p.add_argument("--suites", default="3x3,1x1")
    p.add_argument("--compare", default=",".join(DEFAULT_COMPARE),
                   help="layer labels for part 2 (xgb vs random); '' skips it")
    p.add_argument("--compare-budgets", default=",".join(map(str, COMPARE_BUDGETS)),
                   help="trial counts at which part 2 reads the best latency (the search runs to the largest)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="two small layers, 8 trials, no part 2")
    p.add_argument("--ship-log", type=Path, help="also append part 1's records to this log folder")
    p.add_argument("--out", type=Path, default=C.REPO_ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.trials, args.compare, args.repeats = 8, "", 3
    try:
        args.compare_budgets = sorted({int(k) for k in args.compare_budgets.split(",") if k})
    except ValueError:
        p.error(f"--compare-budgets: comma-separated trial counts, got {args.compare_budgets!r}")
    if args.compare and (not args.compare_budgets or min(args.compare_budgets) < 1):
        p.error("--compare-budgets needs at least one count >= 1")
    return args


def pruned_layer(layer: L.SuiteLayer):
    """The layer pruned at sparsity A (as layers.py prunes it), imported to Relax."""
    model, x = L.layer_module(layer.shape), L.layer_input(layer.shape)
    keep = L.SPARSITIES[SPARSITY]
    pruned, _ = mcp.prune(model, target="host", pattern_k=L.PATTERN_K, keep_kernels=keep,
                          keep_pointwise=keep, min_in_channels=L.MIN_IN_CHANNELS, example_input=x)
    pruned = bake(pruned).eval()
    _, nonzero_macs = C.nonzero_conv_macs(pruned, x)
    return mcp.from_torch(pruned, (x,)), x.numpy(), pruned(x).detach().numpy(), nonzero_macs


def sparse_task(report) -> Any:
    return next(t for t in report.tasks if t.kind == "sparse")


def best_after(log_dir: Path, budgets: tuple[int, ...]) -> dict[int, float]:
    """Best latency (ms) among the first k measured records of a one-task log, per k.

    The first record is the default schedule (measured before the search), so every
    search starts from the same point. Part 2 tunes without confirmation rounds, so the
    log holds the search's measurements only.
    """
    times = []
    with open(log_dir / RECORD_FILE) as f:
        for line in f:
            run_secs = json.loads(line)[1][1]
            if run_secs:
                times.append(float(np.median(run_secs)) * 1e3)
    return {k: min(times[:k + 1]) for k in budgets if times}


def side_by_side(mod, x, ref, log_dir: Path, threads: int, repeats: int) -> dict[str, Any]:
    """Default and tuned builds timed interleaved, plus the default build timed a second
    time under another name as an A/A control: its ratio to the first is this run's
    measurement noise on this layer (same code, so any difference is the machine's)."""
    builds = {"default": mcp.compile(mod, "host", threads=threads, tuning_log=None),
              "tuned": mcp.compile(mod, "host", threads=threads, tuning_log=log_dir)}
    arg = tvm.runtime.tensor(np.ascontiguousarray(x))
    runners = {}
    for name, compiled in builds.items():
        err = float(np.abs(compiled(x) - ref).max())
        if err > 1e-3 * max(1.0, float(np.abs(ref).max())):
            raise AssertionError(f"{name} build differs from torch by {err}")
        main = compiled.vm["main"]
        runners[name] = lambda main=main: main(arg)
    runners["default_again"] = runners["default"]
    # The FMA probe in the same rounds: it reads about half when the VM's two vCPUs share
    # one core, a state in which schedules rank differently (tuning_3x3_znver5_2026-11-24T1102.md).
    runners[C.PEAK_PROBE], probe_flops = C.fma_peak_probe(threads)
    times = C.time_interleaved(runners, repeats=repeats)
    probe = [probe_flops / (t * 1e-3) / 1e9 for t in times.pop(C.PEAK_PROBE)]
    knobs = [k for k in builds["tuned"].tuned_knobs.values() if k is not None]
    return {name: statistics.median(ts) for name, ts in times.items()} | {
        "tuned_functions": builds["tuned"].tuned_functions,
        "tuned_knobs": knobs[0].describe() if knobs else None,
        "probe_gflops_min": min(probe), "probe_gflops_max": max(probe)}


def part1(layers, args, workdir: Path) -> list[dict[str, Any]]:
    rows = []
    for layer in layers:
        mod, x, ref, nonzero = pruned_layer(layer)
        log_dir = workdir / "xgb" / layer.shape.label.replace(" ", "_").replace("/", "_")
        report = tune(mod, "host", trials=args.trials, log_dir=log_dir, sparse_only=True,
                      threads=args.threads, progress=sys.stderr.isatty())
        task = sparse_task(report)
        timed = side_by_side(mod, x, ref, log_dir, args.threads, args.repeats)
        row = {"layer": layer.shape.label, "suite": layer.suite, "trials": task.trials,
               "tune_wall_s": round(report.wall_s, 1), "tuner_default_ms": task.default_ms,
               "tuner_best_ms": task.best_ms, "chose_default": bool(task.kept_default),
               "default_ms": timed["default"], "tuned_ms": timed["tuned"],
               "speedup": timed["default"] / timed["tuned"], "nonzero_macs": nonzero,
               "default_again_ms": timed["default_again"], "aa_ratio": timed["default"] / timed["default_again"],
               "tuned_gflops_nonzero": 2 * nonzero / (timed["tuned"] * 1e-3) / 1e9,
               "default_gflops_nonzero": 2 * nonzero / (timed["default"] * 1e-3) / 1e9,
               "log_dir": str(log_dir), "log_applied": bool(timed["tuned_functions"]),
               "applied_knobs": timed["tuned_knobs"],
               "probe_gflops_min": timed["probe_gflops_min"], "probe_gflops_max": timed["probe_gflops_max"]}
        # The FMA bound of this layer in the state it was timed in: no schedule issues fewer
        # FMAs than the non-zero MACs, nor faster than the probe in the same rounds.
        row["default_pct_probe"] = 100 * row["default_gflops_nonzero"] / row["probe_gflops_max"]
        row["ceiling"] = row["probe_gflops_max"] / row["default_gflops_nonzero"]
        print(f"{row['layer']:<28} default {row['default_ms']:.4f} ms  tuned {row['tuned_ms']:.4f} ms  "
              f"{row['speedup']:.2f}x  A/A {row['aa_ratio']:.2f}  ({row['trials']} trials, {row['tune_wall_s']:.0f} s"
              f"{', default kept' if row['chose_default'] else ''})",
              flush=True)
        rows.append(row)
        if args.ship_log:
            append_log(log_dir, args.ship_log)
    return rows


def append_log(source: Path, destination: Path) -> None:
    """Append a finished one-layer log to the shipped log (both files, via MetaSchedule)."""
    from tvm.s_tir import meta_schedule as ms

    from tvm_mcpruner.tuning_log import append_provenance, log_provenance, open_tuning_log

    src = open_tuning_log(source)
    dst = open_tuning_log(destination, C.host_target(), create=True)
    # Who measured these records travels with them: the source run's provenance lines.
    records_before = len(dst.get_all_tuning_records())
    for entry in log_provenance(source).entries:
        append_provenance(destination, {**entry, "records_before": records_before,
                                        # a log shipped from a scratch one keeps the commit that measured it
                                        "commit": entry.get("commit") or _git_commit(),
                                        "note": "appended by benchmarks/tuning.py --ship-log"})
    for record in src.get_all_tuning_records():
        workload = dst.commit_workload(record.workload.mod)
        dst.commit_tuning_record(ms.database.TuningRecord(
            record.trace, workload, record.run_secs, record.target, record.args_info))


def _git_commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=C.REPO_ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def part2(layers, args, workdir: Path) -> list[dict[str, Any]]:
    wanted = [label for label in args.compare.split(",") if label]
    by_label = {layer.shape.label: layer for layer in layers}
    rows = []
    for label in wanted:
        if label not in by_label:
            raise SystemExit(f"--compare: no layer {label!r}; known: {sorted(by_label)}")
        mod, _, _, _ = pruned_layer(by_label[label])
        row = {"layer": label, "budgets": list(args.compare_budgets)}
        for search in ("xgb", "random"):
            log_dir = workdir / f"compare-{search}" / label.replace(" ", "_").replace("/", "_")
            report = tune(mod, "host", trials=max(args.compare_budgets), log_dir=log_dir, sparse_only=True,
                          search=search, threads=args.threads, progress=sys.stderr.isatty(), seed=1,
                          confirm_rounds=0)
            task = sparse_task(report)
            row[search] = {"best_ms_after": best_after(log_dir, args.compare_budgets), "trials": task.trials,
                           "wall_s": round(report.wall_s, 1)}
        print(f"{label:<28} xgb {row['xgb']['best_ms_after']}  random {row['random']['best_ms_after']}", flush=True)
        rows.append(row)
    return rows


def markdown(info, peak, rows1, rows2, wall_s) -> str:
    text = [C.header_markdown("MetaSchedule tuning of the sparse kernels (issue 5)", info, peak, wall_s)]
    speedups = [r["speedup"] for r in rows1]
    if rows1:
        text.append(f"\n## Part 1: tuned vs default schedule, sparsity {SPARSITY} (XGBoost, "
                    f"{rows1[0]['trials']} measured candidates per layer incl. the default)\n")
        text.append(C.md_table(
            ["layer", "default ms", "tuned ms", "speedup", "A/A (noise)", "tuner: default/best", "applied",
             "tuned GF/s nz", "tuned % peak", "FMA probe GF/s (min-max)", "default % of probe", "ceiling",
             "trials", "tune s"],
            [[r["layer"], C.fmt(r["default_ms"], ".4f"), C.fmt(r["tuned_ms"], ".4f"), C.fmt(r["speedup"]),
              C.fmt(r.get("aa_ratio")), C.fmt(r["tuner_default_ms"] / r["tuner_best_ms"]),
              "default" if r.get("chose_default") else (r.get("applied_knobs") or "tuned"),
              C.fmt(r["tuned_gflops_nonzero"], ".0f"), C.fmt(r["tuned_pct_peak"], ".0f"),
              f"{C.fmt(r.get('probe_gflops_min'), '.0f')}-{C.fmt(r.get('probe_gflops_max'), '.0f')}",
              C.fmt(r.get("default_pct_probe"), ".0f"), C.fmt(r.get("ceiling")), r["trials"],
              C.fmt(r["tune_wall_s"], ".0f")] for r in rows1]))
        text.append(f"\nMedian speedup over the default knobs: {statistics.median(speedups):.2f}x "
                    f"(min {min(speedups):.2f}x, max {max(speedups):.2f}x); layers slower after tuning "
                    f"(< 0.97x): {sum(s < 0.97 for s in speedups)}. Tuning wall time: "
                    f"{sum(r['tune_wall_s'] for r in rows1):.0f} s.")
        noise = [abs(1 - r["aa_ratio"]) for r in rows1 if r.get("aa_ratio")]
        if noise:
            band = 2 * statistics.median(noise)
            text.append(f"\nA/A control (the default build timed twice in the same interleaving): "
                        f"median deviation {100 * statistics.median(noise):.1f}%, max {100 * max(noise):.1f}%. "
                        f"Layers slower after tuning beyond twice the median A/A deviation "
                        f"(< {1 - band:.3f}x): {sum(r['speedup'] < 1 - band for r in rows1)}. "
                        f"'tuner: default/best' is the tuner's own measurement of the gain: medians over "
                        f"each schedule's runs (the search's and {CONFIRM_NOTE}); 'applied' says whether "
                        f"compile kept the default or applied a tuned schedule, and then its knobs (a tuned "
                        f"one must beat the default's median by {100 * CHOICE_MARGIN:.0f}%). 'FMA probe' is the FMA "
                        f"loop timed in the same rounds: about half the run's peak means the two threads "
                        f"shared one core while that row was timed.")
        ceilings = [r["ceiling"] for r in rows1 if r.get("ceiling")]
        if ceilings:
            text.append(f"\nFMA bound: 'default % of probe' is the default's GFLOP/s on the non-zero MACs over "
                        f"the FMA probe timed in the same rounds (same threads); 'ceiling' is its inverse, the "
                        f"largest speedup any schedule could reach there (it would issue only the non-zero "
                        f"MACs, at the probe's rate). Median ceiling {statistics.median(ceilings):.2f}x "
                        f"(min {min(ceilings):.2f}x, max {max(ceilings):.2f}x); defaults within 5% of the "
                        f"bound (ceiling <= 1.05): {sum(c <= 1.05 for c in ceilings)} of {len(ceilings)}; "
                        f"layers where 1.2x is possible at all (ceiling >= 1.2): "
                        f"{sum(c >= 1.2 for c in ceilings)} of {len(ceilings)}.")
        tuned = [r["speedup"] for r in rows1 if not r.get("chose_default", False)]
        if tuned:
            text.append(f"\nLayers where a tuned schedule was applied: {len(tuned)} of {len(rows1)}, median "
                        f"speedup {statistics.median(tuned):.2f}x (min {min(tuned):.2f}x, max {max(tuned):.2f}x).")
    if rows2:
        text.append("\n## Part 2: XGBoost vs random search, best latency (ms) after k trials\n")
        text.append(C.md_table(
            ["layer", "search", *[f"k={k}" for k in rows2[0]["budgets"]], "trials", "wall s"],
            [[r["layer"], s, *[C.fmt(r[s]["best_ms_after"].get(k), ".4f") for k in r["budgets"]],
              r[s]["trials"], r[s]["wall_s"]] for r in rows2 for s in ("xgb", "random")]))
        text.append("\nk counts measured candidates after the default schedule; when a search has "
                    "measured every point of the space it stops early (trials < budget).")
    return "\n".join(text) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    C.setup(args.threads)
    start = time.perf_counter()
    layers = L.discover_layers(args.suites.split(","))
    part1_layers = L.quick_layers(layers)[:2] if args.quick else layers
    peak_before = C.measure_peak(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="mcpruner-tuning-bench-"))
    try:
        rows1 = part1(part1_layers, args, workdir)
        rows2 = part2(layers, args, workdir) if args.compare else []
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    peak = C.peak_of_run(peak_before, C.measure_peak(args.threads))
    for row in rows1:
        row["tuned_pct_peak"] = 100 * row["tuned_gflops_nonzero"] / peak["peak_gflops"]
    wall_s = time.perf_counter() - start
    info = C.run_info(args.threads, C.DenseTuner(0, threads=args.threads), args.repeats) | {
        "command": "python benchmarks/tuning.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    payload = {"info": info, "peak": peak, "part1": rows1, "part2": rows2, "wall_s": wall_s}
    C.write_results(args.out, "tuning_quick" if args.quick else "tuning", payload,
                    markdown(info, peak, rows1, rows2, wall_s))
    return payload


if __name__ == "__main__":
    main()
