"""How much could weight-specialised code generation save over index buffers? (issue 3)

Our kernel reads each (kept kernel, tap) entry's input offset from an ``offsets`` buffer:
one scalar load per entry, amortised over a register tile of ``tile_w`` FMAs. Baking
the offsets into the generated code (PatDNN's per-pattern code) removes that load. This
benchmark bounds the gain from above: the *ablation* variant computes every offset from
a closed form of the entry index, so it has no index load at all and walks the input in
the friendliest order; its outputs are wrong by construction and it only exists here.
Fully weight-specialised code (every offset an immediate) is not an option: a 512x512
layer would unroll into ~460k FMA instructions, and compile times must stay bounded:
the kernels specialise on patterns and groups, not on every weight.

The specialisation that *could* be built is PatDNN's per-pattern code: within a filter
group, the kept kernels sorted by pattern, one loop per pattern whose 4 tap offsets are
constants (only each kernel's channel offset is loaded). Our kernel needs one static loop
extent per layer, so each (group, pattern) loop would run as many kernels as the longest
one over the groups. :func:`pattern_major_padding` counts what that costs on the pruner's
own output (``mcp.prune`` of each layer, 8-pattern library): the ratio of kernels such a
kernel would issue to the kernels ours issues, reported beside the headroom.

The third variant is another *kernel form* (issue 5: could tuning gain by choosing
between forms?): vectors along output columns instead of along filters. Each entry loads
its input row as :data:`COLUMN_FORM_VECTORS` column vectors and broadcasts the weight of
each of :data:`COLUMN_FORM_FILTERS` filters; the tile needs no transpose (it is the
output's layout) and issues ``filters x vectors`` FMAs per ``vectors`` input loads and
``filters`` weight broadcasts. It only exists for stride 1 (a strided row is a gather)
and pads the output columns to whole tiles. Its outputs are checked against ours.

The fourth variant prices a *stage* rather than a form: the same layer (same weight,
same knobs) fed an input that was padded beforehand, so its kernel reads the input itself
and makes no padded copy. ``ours ms / pre-padded ms`` bounds what a producer writing its
output into a padded buffer could save (no knob of the conv nest removes the copy). It is
an upper bound: the pre-padded input stays read-only and warm in both cores' caches, while
ours rewrites its copy on each call, so at 2 threads it includes cross-core cache traffic
that a previous layer's output would cause as well (1 thread isolates the copy's own
cost). Its outputs equal ours.

Usage::

    python benchmarks/kernel_variants.py [--threads 2] [--repeats 7] [--out benchmarks/results]

Writes ``kernel_variants.json`` + ``.md``: per layer, ms of both variants (interleaved
medians, same threads), the headroom ``index ms / ablation ms`` and ``index ms /
column-form ms``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402  (puts the repository on sys.path)
import numpy as np  # noqa: E402
import tvm  # noqa: E402
from tqdm import tqdm  # noqa: E402
from tvm import s_tir, te, tirx  # noqa: E402

import topi_sparse  # noqa: E402
from topi_sparse.pattern_conv2d import pattern_conv2d_nchw  # noqa: E402
from topi_sparse.cpu import schedule_pad_copy  # noqa: E402
import tvm_mcpruner as mcp  # noqa: E402
from tvm_mcpruner.benchmark import machine_info  # noqa: E402
from tvm_mcpruner.sparse_format import pack_pattern_weights  # noqa: E402

# (C, O, H=W, stride): the distinct 3x3 layers of ResNet-50 and of VGG-16 beyond its stem
LAYERS = [(64, 64, 56, 1), (128, 128, 56, 2), (128, 128, 28, 1), (256, 256, 28, 2),
          (256, 256, 14, 1), (512, 512, 14, 2), (512, 512, 7, 1), (128, 128, 112, 1),
          (256, 256, 56, 1), (512, 512, 28, 1)]
PATTERN_TAPS = 4
KEEP = 0.5
# The column-vector form's tile: filters of one group per tile x output columns (two
# 16-float vectors): the fastest of the tiles tried on the wide layers
# (kernel_variants_znver4_2026-11-24T1328.md).
COLUMN_FORM_FILTERS = 8
COLUMN_FORM_VECTORS = 2
COLUMN_FORM = "column-vector form"
PREPADDED = "pre-padded input (no copy)"


def aligned_weight(rng: np.random.Generator, o: int, c: int, lanes: int, keep: float = KEEP) -> np.ndarray:
    """A 3x3 weight with the pruner's structure: per filter group, ``keep`` of the channels,
    each with a 4-tap pattern that contains the centre."""
    w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    others = [0, 1, 2, 3, 5, 6, 7, 8]
    for g in range(0, o, lanes):
        mask = np.zeros((c, 9), bool)
        for ch in rng.choice(c, max(1, round(keep * c)), replace=False):
            mask[ch, [4, *rng.choice(others, PATTERN_TAPS - 1, replace=False)]] = True
        w[g:g + lanes] *= mask.reshape(c, 3, 3)
    return w


@dataclasses.dataclass
class PreparedKernel:
    """One layer's default-scheduled kernel on an aligned random weight, with its operands."""

    weight: np.ndarray
    packed: object  # its PatternSparseWeight
    kernel: topi_sparse.PatternConvKernel
    x: np.ndarray
    operands: list  # tvm tensors (data, values, offsets)
    out: object  # tvm tensor of the output's shape


def prepare_kernel(c: int, o: int, size: int, stride: int, seed: int, keep: float = KEEP,
                   knobs_change: dict | None = None) -> PreparedKernel:
    """Weight, kernel (default knobs, or these fields of them replaced) and operands, drawn
    from one generator seeded with ``seed`` (weight first, then the input)."""
    rng = np.random.default_rng(seed)
    lanes = mcp.get_preset("host").vector_width
    w = aligned_weight(rng, o, c, lanes, keep=keep)
    packed = pack_pattern_weights(w, lanes)
    build = functools.partial(
        topi_sparse.build_pattern_conv2d,
        (1, c, size, size), w.shape, packed.row_ptr, *packed.row_channels_and_taps(), packed.values,
        stride=stride, padding=(1, 1, 1, 1), family="cpu",
    )
    kernel = build()
    if knobs_change:
        kernel = build(knobs=dataclasses.replace(kernel.knobs, **knobs_change))
    x = rng.standard_normal(kernel.input_shape).astype(np.float32)
    dev = tvm.cpu()
    operands = [tvm.runtime.tensor(a, dev) for a in (x, kernel.values, kernel.offsets)]
    out = tvm.runtime.tensor(np.zeros(kernel.output_shape, np.float32), dev)
    return PreparedKernel(w, packed, kernel, x, operands, out)


def pattern_major_padding(weight: np.ndarray, lanes: int) -> dict:
    """Kernels a pattern-major kernel issues per group vs ours, for a pruned 3x3 ``weight``.

    Ours pads every group to the group with most kept kernels; a pattern-major kernel pads
    every (group, pattern) list to the longest over the groups.
    """
    groups = -(-weight.shape[0] // lanes)
    w = np.zeros((groups * lanes, *weight.shape[1:]), weight.dtype)
    w[: weight.shape[0]] = weight
    taps = (w.reshape(groups, lanes, weight.shape[1], 9) != 0).any(1)  # [G, C, 9]
    kept = taps.any(-1)
    counts: dict[bytes, np.ndarray] = {}
    for g, c in zip(*np.nonzero(kept)):
        counts.setdefault(taps[g, c].tobytes(), np.zeros(groups, int))[g] += 1
    ours = int(kept.sum(1).max())
    pattern_major = int(sum(per_group.max() for per_group in counts.values()))
    return {"patterns": len(counts), "kernels_ours": ours, "kernels_pattern_major": pattern_major,
            "ratio": pattern_major / ours}


def pruned_layer_weight(c: int, o: int, size: int, stride: int, lanes: int) -> np.ndarray:
    """The weight ``mcp.prune`` leaves on one random conv layer (4-of-9 patterns, KEEP)."""
    import torch

    from tvm_mcpruner.pruning import bake

    torch.manual_seed(c * 1000 + size)
    conv = torch.nn.Conv2d(c, o, 3, stride=stride, padding=1)
    pruned, _ = mcp.prune(torch.nn.Sequential(conv), target="host", pattern_k=PATTERN_TAPS,
                          keep_kernels=KEEP, example_input=torch.randn(1, c, size, size))
    return bake(pruned)[0].weight.detach().numpy()


def ablation_primfunc(kernel: topi_sparse.PatternConvKernel) -> tirx.PrimFunc:
    """The same compute and schedule, offsets from a closed form instead of a buffer."""
    shape, tile = kernel.shape, kernel.knobs.tile_w
    hp, wp = shape.padded_height(tile), shape.padded_width(tile)

    def offset(_g, e):  # channel e // 4, taps (0,0) (0,1) (1,0) (1,1): in bounds, no load
        return (e // PATTERN_TAPS % shape.in_channels) * (hp * wp) + (e % 4) // 2 * wp + e % 2

    tensors = pattern_conv2d_nchw(shape, tile, with_bias=False, entry_offset=offset)  # offsets: unused
    func = te.create_prim_func(tensors).with_attr("mcpruner.padded_width", wp)
    return topi_sparse.schedule_pattern_conv2d(func, "cpu", kernel.knobs)


def column_form_width() -> int:
    return COLUMN_FORM_VECTORS * mcp.get_preset("host").vector_width


def column_form_primfunc(kernel: topi_sparse.PatternConvKernel) -> tirx.PrimFunc:
    """The same layer in the column-vector form (module docstring); stride 1 only.

    ``kernel`` must have been built with ``tile_w = column_form_width()`` (its compute
    pads the output columns to it and sizes the padded input for it).
    """
    vector, width = mcp.get_preset("host").vector_width, column_form_width()
    if kernel.shape.stride != 1 or kernel.knobs.tile_w != width:
        raise ValueError("the column form needs stride 1 and a compute built for its tile width")
    sch = s_tir.Schedule(kernel.compute)
    schedule_pad_copy(sch, "row")
    out, acc = sch.get_sblock("out"), sch.get_sblock("acc")
    n, o, oh, ow = sch.get_loops(out)
    group, lane = sch.split(o, [None, kernel.shape.lanes])
    chunk, filters = sch.split(lane, [None, COLUMN_FORM_FILTERS])
    rows, row = sch.split(oh, [None, 1])
    strips, columns = sch.split(ow, [None, width])
    sch.reorder(n, rows, group, strips, chunk, row, filters, columns)
    sch.compute_at(acc, chunk, preserve_unit_loops=True)
    sch.set_scope(acc, 0, "global")
    acc_row, acc_col, acc_lane, entry = sch.get_loops(acc)[-4:]
    vectors, in_vector = sch.split(acc_col, [None, vector])
    sch.reorder(entry, acc_row, acc_lane, vectors, in_vector)
    # the tile as the output lays it out: filters x columns, columns contiguous
    sch.transform_layout(acc, ("write", 0), lambda n_, g, y, x, v: (n_, g, y, v, x))
    sch.vectorize(in_vector)
    for loop in (vectors, acc_lane, acc_row):
        sch.unroll(loop)
    sch.parallel(sch.fuse(n, rows, group))
    store_vectors, store_lanes = sch.split(columns, [None, vector])
    sch.vectorize(store_lanes)
    sch.unroll(store_vectors)
    sch.decompose_reduction(acc, entry)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def column_form_runner(c: int, o: int, size: int, prepared: PreparedKernel, ours: Callable[[], Any],
                       target) -> Callable[[], Any]:
    """The column form of ``prepared``'s layer (same weight and input), its output checked
    against ours (``ours()`` fills ``prepared.out``; float32 sums in another order)."""
    column = prepare_kernel(c, o, size, 1, seed=c * 1000 + size, knobs_change={"tile_w": column_form_width()})
    assert np.array_equal(column.x.reshape(prepared.x.shape), prepared.x)  # same seed, same draws
    lib = tvm.compile(tvm.IRModule({"main": column_form_primfunc(column.kernel)}), target=target)
    lib(*column.operands, column.out)
    ours()
    np.testing.assert_allclose(column.out.numpy(), prepared.out.numpy(), rtol=1e-4, atol=1e-4)
    return lambda: lib(*column.operands, column.out)


def prepadded_runner(prepared: PreparedKernel, ours: Callable[[], Any], target) -> Callable[[], Any] | None:
    """``prepared``'s layer with its input zero-padded beforehand (padding 0, so no padded
    copy), same weight and knobs, its output checked against ours; None where the knobs'
    tile columns overrun the padded row (the kernel would make a copy anyway)."""
    s, packed = prepared.kernel.shape, prepared.packed
    top, left, bottom, right = s.padding
    kernel = topi_sparse.build_pattern_conv2d(
        (s.batch, s.in_channels, s.height + top + bottom, s.width + left + right), prepared.weight.shape,
        packed.row_ptr, *packed.row_channels_and_taps(), packed.values,
        stride=s.stride, padding=(0, 0, 0, 0), family="cpu", knobs=prepared.kernel.knobs,
    )
    if not kernel.shape.reads_input_directly(kernel.knobs.tile_w):
        return None
    x = np.pad(prepared.x.reshape(s.batch, s.in_channels, s.height, s.width),
               ((0, 0), (0, 0), (top, bottom), (left, right)))
    dev = tvm.cpu()
    operands = [tvm.runtime.tensor(a, dev) for a in (x.reshape(kernel.input_shape), kernel.values, kernel.offsets)]
    out = tvm.runtime.tensor(np.zeros(kernel.output_shape, np.float32), dev)
    lib = tvm.compile(tvm.IRModule({"main": kernel.func}), target=target)
    lib(*operands, out)
    ours()
    np.testing.assert_allclose(out.numpy(), prepared.out.numpy(), rtol=1e-5, atol=1e-5)
    return lambda: lib(*operands, out)


def measure_layer(c: int, o: int, size: int, stride: int, threads: int, repeats: int) -> dict:
    prepared = prepare_kernel(c, o, size, stride, seed=c * 1000 + size)
    kernel, operands, out = prepared.kernel, prepared.operands, prepared.out
    target = _common.host_target()
    libs = {
        "index buffer": tvm.compile(tvm.IRModule({"main": kernel.func}), target=target),
        "ablation: no index loads": tvm.compile(tvm.IRModule({"main": ablation_primfunc(kernel)}), target=target),
    }
    runners = {name: (lambda lib=lib: lib(*operands, out)) for name, lib in libs.items()}
    if stride == 1:
        runners[COLUMN_FORM] = column_form_runner(c, o, size, prepared, runners["index buffer"], target)
    prepadded = prepadded_runner(prepared, runners["index buffer"], target)
    if prepadded is not None:
        runners[PREPADDED] = prepadded
    times = _common.time_interleaved(runners, repeats=repeats)
    ms = {name: statistics.median(t) for name, t in times.items()}
    flops = 2 * prepared.packed.stored_macs_per_pixel * kernel.shape.out_height * kernel.shape.out_width
    lanes = prepared.packed.values.shape[1]
    padding = pattern_major_padding(pruned_layer_weight(c, o, size, stride, lanes), lanes)
    return {
        "pattern_major": padding,
        "layer": f"{c}->{o} @{size} s{stride}", "tile_w": kernel.knobs.tile_w,
        "entries_per_group": kernel.shape.entries, "ms": ms,
        "gflops_nonzero": {name: flops / (t * 1e-3) / 1e9 for name, t in ms.items()},
        "headroom": ms["index buffer"] / ms["ablation: no index loads"],
        "column_form_speedup": ms["index buffer"] / ms[COLUMN_FORM] if COLUMN_FORM in ms else None,
        "padded_copy_cost": ms["index buffer"] / ms[PREPADDED] if PREPADDED in ms else None,
    }



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    _common.setup(args.threads)
    start = time.perf_counter()
    peak_before = _common.measure_peak(args.threads)
    rows = []
    for c, o, size, stride in tqdm(LAYERS, desc="layers"):
        rows.append(measure_layer(c, o, size, stride, args.threads, args.repeats))
        print(f"{rows[-1]['layer']:<20} headroom {rows[-1]['headroom']:.2f}x", flush=True)
    peak = _common.peak_of_run(peak_before, _common.measure_peak(args.threads))
    headroom = statistics.median(r["headroom"] for r in rows)
    padding = statistics.median(r["pattern_major"]["ratio"] for r in rows)
    losing = sum(r["pattern_major"]["ratio"] > r["headroom"] for r in rows)
    column = [r["column_form_speedup"] for r in rows if r["column_form_speedup"]]
    copy_cost = [r["padded_copy_cost"] for r in rows if r["padded_copy_cost"]]
    info = {"machine": machine_info(), "threads": args.threads, "repeats": args.repeats,
            "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "sparsity": f"{PATTERN_TAPS}-of-9 patterns, {KEEP:.0%} of kernels kept per group"}
    payload = {**info, "layers": rows, "median_headroom": headroom, "median_pattern_major_padding": padding,
               "median_column_form_speedup": statistics.median(column) if column else None,
               "median_padded_copy_cost": statistics.median(copy_cost) if copy_cost else None,
               "layers_where_padding_exceeds_headroom": losing, "peak": peak,
               "wall_s": round(time.perf_counter() - start, 1)}
    table = _common.md_table(
        ["layer", "tile", "E", "index buffer ms", "ablation ms", "headroom", "GF/s non-zero (index)",
         "pattern-major kernels / ours (pruned)", "column form ms", "column form speedup over ours",
         "pre-padded ms", "padded copy cost"],
        [(r["layer"], r["tile_w"], r["entries_per_group"], f"{r['ms']['index buffer']:.3f}",
          f"{r['ms']['ablation: no index loads']:.3f}", f"{r['headroom']:.2f}x",
          f"{r['gflops_nonzero']['index buffer']:.0f}",
          f"{r['pattern_major']['kernels_pattern_major']} / {r['pattern_major']['kernels_ours']} = "
          f"{r['pattern_major']['ratio']:.2f}x",
          _common.fmt(r["ms"].get(COLUMN_FORM), ".3f"),
          _common.fmt(r["column_form_speedup"]) + ("x" if r["column_form_speedup"] else ""),
          _common.fmt(r["ms"].get(PREPADDED), ".3f"),
          _common.fmt(r["padded_copy_cost"]) + ("x" if r["padded_copy_cost"] else "")) for r in rows])
    markdown = "\n".join([
        "# Weight specialisation headroom (index buffer vs no index loads)", "",
        f"- {info['date']}, `{info['command']}`, {info['machine']['cpu']}, {args.threads} threads, "
        f"interleaved medians of {args.repeats} repeats; sparsity {info['sparsity']}",
        f"- peak measured before / after: {_common.peak_pair(peak)} (this shared VM's state changes: "
        "compare GF/s only within one run)",
        "- the ablation computes offsets from a closed form (wrong outputs by design): an upper "
        "bound on what baking offsets into the code could save", "",
        "- last column: kernels per group a per-pattern specialised kernel would issue (each "
        "(group, pattern) loop padded to the longest over the groups) over the kernels ours issues, "
        "on the weight `mcp.prune` leaves on the layer (8-pattern library, same keep)", "",
        table, "", f"median headroom: {headroom:.2f}x; median pattern-major padding: {padding:.2f}x",
        "", f"Layers where the padding costs more than removing every index load could save "
        f"(pattern-major ratio > headroom): {losing} of {len(rows)}. A per-pattern kernel removes 3 "
        f"of each kernel's 4 index loads and issues the padding ratio more FMAs.", "",
        f"Column-vector form ({COLUMN_FORM_FILTERS} filters x {COLUMN_FORM_VECTORS} column vectors per tile, "
        f"stride-1 layers, outputs checked against ours): its speedup over ours, median "
        f"{statistics.median(column):.2f}x (min {min(column):.2f}x, max {max(column):.2f}x; below 1: ours is "
        f"faster)." if column else "", "",
        f"Padded copy: ours over the same kernel fed a pre-padded input (no copy made; same knobs, "
        f"outputs equal), median {statistics.median(copy_cost):.2f}x (min {min(copy_cost):.2f}x, "
        f"max {max(copy_cost):.2f}x). An upper bound on what a producer writing into a padded buffer "
        f"could save: the pre-padded input stays read-only and warm in every core's cache, while ours "
        f"rewrites its copy on each call, so with threads > 1 the figure includes cross-core cache "
        f"traffic that a previous layer's output would also cause." if copy_cost else ""])
    _common.write_results(args.out, "kernel_variants", payload, markdown)
    print(f"median headroom {headroom:.2f}x; wrote {args.out}/kernel_variants.json/.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
