"""Kernel-only efficiency of the pattern-sparse conv on the 3x3 layer suite (issue 3).

``benchmarks/layers.py`` times whole one-layer models through each framework. This script
times the scheduled ``topi_sparse`` kernel alone (one packed-function call on prepared
operands: no Relax VM, no output allocation), interleaved with the FMA-loop peak probe,
so each row's non-zero GFLOP/s can be read against the compute the host gave in the
same minutes. It is a diagnostic for kernel work, not a replacement for the layer
benchmark's end-to-end figures.

Weights have the pruner's aligned structure (per group of ``lanes`` filters the same kept
input channels, each with one 4-tap pattern containing the centre), at the layer
benchmark's sparsities A (50% of kernels kept) and B (25%).

Usage::

    python benchmarks/kernels.py [--threads 2] [--repeats 11] [--out benchmarks/results]

Writes ``kernels.json`` + ``.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402  (puts the repository on sys.path)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import tvm  # noqa: E402
from tqdm import tqdm  # noqa: E402

from kernel_variants import prepare_kernel  # noqa: E402
from layers import SPARSITIES, discover_layers  # noqa: E402
from tvm_mcpruner.benchmark import machine_info, rel_error  # noqa: E402

GOAL_PCT = 55.0
MAX_REL_ERROR = 1e-4  # against torch's dense conv on the same weights (fp32 sums in another order)


def _kernel_runner(c: int, o: int, size: int, stride: int, keep: float, seed: int, *,
                   other_order: bool = False):
    """(runner, non-zero FLOPs per call, knobs) of one layer's default-scheduled kernel, or,
    with ``other_order``, of the same kernel with the loop order the default did not pick."""
    prepared = prepare_kernel(c, o, size, stride, seed, keep=keep)
    if other_order:
        # the default picks "group" or "row" (topi_sparse.cheaper_loop_order): time the other one
        flipped = "row" if prepared.kernel.knobs.order == "group" else "group"
        prepared = prepare_kernel(c, o, size, stride, seed, keep=keep, knobs_change={"order": flipped})
    kernel, operands, out, x, w = prepared.kernel, prepared.operands, prepared.out, prepared.x, prepared.weight
    lib = tvm.compile(tvm.IRModule({"main": kernel.func}), target=_common.host_target())
    lib(*operands, out)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=stride, padding=1)
    error = rel_error(out.numpy(), ref.numpy())
    if error > MAX_REL_ERROR:
        raise AssertionError(f"{c}->{o} @{size} s{stride} keep {keep}: kernel differs from torch ({error:.1e})")
    flops = 2.0 * int(np.count_nonzero(w)) * kernel.shape.out_height * kernel.shape.out_width
    return (lambda: lib(*operands, out)), flops, kernel.knobs


def measure_layer(c: int, o: int, size: int, stride: int, threads: int, repeats: int,
                  compare_orders: bool = False) -> list[dict]:
    """Both sparsities of one layer and the FMA probe (and, with ``compare_orders``, each
    kernel with the other loop order), timed interleaved."""
    probe, probe_flops = _common.fma_peak_probe(threads)
    runners, flops, knobs = {_common.PEAK_PROBE: probe}, {}, {}
    for name, keep in SPARSITIES.items():
        runners[name], flops[name], knobs[name] = _kernel_runner(c, o, size, stride, keep, seed=c + size)
        if compare_orders:
            runners[f"{name}:other"] = _kernel_runner(c, o, size, stride, keep, seed=c + size, other_order=True)[0]
    times = _common.time_interleaved(runners, repeats=repeats)
    peak = probe_flops / (statistics.median(times.pop(_common.PEAK_PROBE)) * 1e-3) / 1e9
    rows = []
    for name in SPARSITIES:
        t = times[name]
        ms = statistics.median(t)
        gflops = flops[name] / (ms * 1e-3) / 1e9
        row = {"layer": f"{c}->{o} 3x3/s{stride} @{size}x{size}", "sparsity": name,
               "keep_kernels": SPARSITIES[name], "tile": f"{knobs[name].tile_h}x{knobs[name].tile_w}",
               "order": knobs[name].order, "ms": ms, "times_ms": t, "gflops_nonzero": gflops,
               "concurrent_peak_gflops": peak, "pct_concurrent_peak": 100 * gflops / peak}
        if compare_orders:
            other_ms = statistics.median(times[f"{name}:other"])
            row.update(other_order_ms=other_ms, default_speedup_over_other_order=other_ms / ms)
        rows.append(row)
    return rows


def _order_summary(rows: list[dict]) -> dict:
    gains = [r["default_speedup_over_other_order"] for r in rows]
    row_order = [r["default_speedup_over_other_order"] for r in rows if r["order"] == "row"]
    return {"median": statistics.median(gains), "min": min(gains), "max": max(gains),
            "rows_where_default_is_row": len(row_order),
            "median_where_default_is_row": statistics.median(row_order) if row_order else None}


def _markdown(info: dict, payload: dict, rows: list[dict], args: argparse.Namespace) -> str:
    headers = ["layer", "sp.", "tile, order", "kernel ms", "GF/s non-zero", "FMA peak GF/s (same rounds)", "% of it"]
    cells = [[r["layer"], r["sparsity"], f"{r['tile']} {r['order']}", f"{r['ms']:.4f}", f"{r['gflops_nonzero']:.0f}",
              f"{r['concurrent_peak_gflops']:.0f}", f"{r['pct_concurrent_peak']:.0f}"] for r in rows]
    order_lines = []
    if "order_comparison" in payload:
        headers += ["other order ms", "default vs other"]
        for r, line in zip(rows, cells):
            line += [f"{r['other_order_ms']:.4f}", f"{r['default_speedup_over_other_order']:.2f}x"]
        o = payload["order_comparison"]
        at_row = o["median_where_default_is_row"]
        order_lines = ["", f"Loop order: the default's kernel is {o['median']:.2f}x as fast as the other "
                           f"order's (median; {o['min']:.2f}-{o['max']:.2f}x); on the "
                           f"{o['rows_where_default_is_row']} rows where the default picks \"row\": median "
                           + (f"{at_row:.2f}x." if at_row is not None else "n/a.")]
    return "\n".join([
        "# Kernel-only efficiency of the sparse 3x3 kernels", "",
        f"- {info['date']}, `{info['command']}`, {info['machine']['cpu']}, {args.threads} threads; "
        f"medians of {args.repeats} interleaved repeats (each the mean of back-to-back calls "
        ">= 50 ms), one packed-function call per run (no Relax VM), default knobs",
        "- weights: the pruner's aligned structure, sparsity A = 4-of-9 patterns + 50% kernels "
        f"kept, B = 25% kept; GF/s counts the non-zero MACs only; every kernel's output is "
        f"checked against torch's dense conv (relative error <= {MAX_REL_ERROR:g}) before timing",
        "- a diagnostic for kernel work; the end-to-end figures of issue 3 are `layers.md`", "",
        _common.md_table(headers, cells), "",
        f"Median over {len(rows)} rows: {payload['median_gflops_nonzero']:.0f} GFLOP/s non-zero, "
        f"{payload['median_pct_concurrent_peak']:.1f}% of the FMA peak timed in the same rounds (the layer "
        f"benchmark's goal for end-to-end figures: {GOAL_PCT:.0f}%).", *order_lines])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--limit", type=int, default=0, help="only the first N layers (tests)")
    parser.add_argument("--compare-orders", action="store_true",
                        help="also time each kernel with the loop order its default did not pick")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    _common.setup(args.threads)
    start = time.perf_counter()
    suite = [lay.shape for lay in discover_layers(["3x3"])][: args.limit or None]
    rows = []
    for s in tqdm(suite, desc="layers", unit="layer", file=sys.stdout):
        rows += measure_layer(s.cin, s.cout, s.height, s.stride, args.threads, args.repeats,
                              compare_orders=args.compare_orders)
    median_pct = statistics.median(r["pct_concurrent_peak"] for r in rows)
    median_gflops = statistics.median(r["gflops_nonzero"] for r in rows)
    info = {"machine": machine_info(), "threads": args.threads, "repeats": args.repeats,
            "command": " ".join(["python", "benchmarks/kernels.py", *(argv if argv is not None else sys.argv[1:])]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    payload = {**info, "rows": rows, "median_pct_concurrent_peak": median_pct,
               "median_gflops_nonzero": median_gflops, "goal_pct": GOAL_PCT,
               "wall_s": round(time.perf_counter() - start, 1)}
    if args.compare_orders:
        payload["order_comparison"] = _order_summary(rows)
    markdown = _markdown(info, payload, rows, args)
    _common.write_results(args.out, "kernels", payload, markdown)
    print(f"median {median_gflops:.0f} GF/s, {median_pct:.1f}% of concurrent peak; wrote {args.out}/kernels.json/.md")
    return payload


if __name__ == "__main__":
    main()
