"""Where a sparse 3x3 kernel's time goes, per stage, at two sparsities (issue 26, part 1).

For one layer at sparsity A (4-of-9 patterns, 1/2 of the kernels kept) and B (1/4
kept) the kernel's time is split into what shrinks with the kept work and what does not,
from four builds of the same layer (same weight, same knobs, same target), timed
interleaved in one process:

* ``kernel``: the default-scheduled kernel as ``mcp.compile`` builds it (bias + ReLU).
* ``one entry``: the same kernel cut to one (kernel, tap) entry per filter group: the
  padded copy, the accumulator initialisation, the write-out and the thread launch
  stay, the entry loop runs once.
* ``copy only``: the padded-input copy alone, scheduled as in the kernel.
* ``call``: an empty call of a compiled function with the same arguments (the FFI and
  argument checks every call pays).

Stages (fractions of ``kernel``): copy = ``copy only`` - ``call``; fixed =
``one entry`` - ``copy only`` (initialise + write-out + launch, and one entry); entries
= ``kernel`` - ``one entry`` (the work sparsity removes); call = ``call``. The entry
share grows with the kept work; the other stages are what a sparser layer cannot save.

With ``--tiles`` it times the kernel instead under every register tile of
:data:`TILES` (rows x columns of ``V``-lane accumulators; same layer, weight, loop order),
to check the preset's default tile against the alternatives.

Usage::

    python benchmarks/stages.py [--preset x86-avx2] [--threads 2] [--repeats 7] [--tiles]

Results go to ``benchmarks/results/stages_<preset>_<llvm cpu>_<date>.json`` / ``.md``
(``tiles_...`` with ``--tiles``).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402  (puts the repository on sys.path)
import numpy as np  # noqa: E402
import tvm  # noqa: E402
from tqdm import tqdm  # noqa: E402
from tvm import s_tir, te  # noqa: E402

import topi_sparse  # noqa: E402
import tvm_mcpruner as mcp  # noqa: E402
from kernel_variants import aligned_weight  # noqa: E402
from topi_sparse.cpu import schedule_pad_copy  # noqa: E402
from topi_sparse.pattern_conv2d import pattern_conv2d_nchw  # noqa: E402
from tvm_mcpruner.benchmark import machine_info  # noqa: E402
from tvm_mcpruner.sparse_format import pack_pattern_weights  # noqa: E402

# (C, O, H=W): the 3x3 stride-1 layers of the narrow-vector issue, shapes no suite tuned on
LAYERS = [(96, 96, 40), (160, 160, 20), (320, 320, 10), (56, 112, 28)]
SPARSITIES = {"A": 0.5, "B": 0.25}
RELU = (0.0, None)
STAGES = ("call", "copy", "fixed", "entries")
# Register tiles (rows, columns) the tile sweep times: up to and past 16 ymm registers.
TILES = [(1, 4), (1, 6), (1, 8), (1, 10), (1, 12), (1, 13), (1, 14), (1, 16),
         (2, 4), (2, 5), (2, 6), (2, 7), (2, 8), (4, 3), (4, 4)]


@dataclasses.dataclass
class LayerBuilds:
    """The four builds of one layer at one sparsity, with their operands."""

    kernel: topi_sparse.PatternConvKernel
    runners: dict[str, Any]
    nonzero_flops: float


def _compile(func, target) -> tvm.runtime.Executable:
    return tvm.compile(tvm.IRModule({"main": func}), target=target)


def _copy_only(kernel: topi_sparse.PatternConvKernel) -> Any:
    """The kernel's padded-copy stage alone, as a PrimFunc ``(data, pad)`` scheduled as in the kernel."""
    tensors = pattern_conv2d_nchw(kernel.shape, kernel.knobs.tile_w, with_bias=True, clip=RELU)
    data, out = tensors[0], tensors[-1]
    acc = out.op.input_tensors[0]
    pad = next(t for t in acc.op.input_tensors if t.op.name == "pad")
    func = te.create_prim_func([data, pad]).with_attr(
        "mcpruner.padded_width", kernel.shape.padded_width(kernel.knobs.tile_w))
    sch = s_tir.Schedule(func)
    schedule_pad_copy(sch, kernel.knobs.order)
    return sch.mod["main"], pad.shape


def _one_entry(kernel: topi_sparse.PatternConvKernel) -> Any:
    shape = dataclasses.replace(kernel.shape, entries=1)
    return topi_sparse.pattern_conv2d_primfunc(shape, "cpu", with_bias=True, clip=RELU, knobs=kernel.knobs)


def _empty_call(n_args: int) -> Any:
    """A PrimFunc of ``n_args`` float buffers that does nothing: the cost of calling one."""
    bufs = [te.placeholder((1,), "float32", name=f"a{i}") for i in range(n_args - 1)]
    out = te.compute((1,), lambda i: bufs[0][i], name="out")
    return te.create_prim_func([*bufs, out])


def build_layer(c: int, o: int, size: int, keep: float, preset: mcp.TargetPreset, seed: int) -> LayerBuilds:
    rng = np.random.default_rng(seed)
    lanes = preset.vector_width
    w = aligned_weight(rng, o, c, lanes, keep=keep)
    bias = rng.standard_normal(o).astype(np.float32)
    packed = pack_pattern_weights(w, lanes)
    kernel = topi_sparse.build_pattern_conv2d(
        (1, c, size, size), w.shape, packed.row_ptr, *packed.row_channels_and_taps(), packed.values,
        stride=1, padding=(1, 1, 1, 1), family="cpu", with_bias=True, clip=RELU,
    )
    target = preset.tvm_target()
    dev = tvm.cpu()
    x = rng.standard_normal(kernel.input_shape).astype(np.float32)
    t = lambda a: tvm.runtime.tensor(np.ascontiguousarray(a), dev)  # noqa: E731
    out = t(np.zeros(kernel.output_shape, np.float32))
    data, values, offsets, bias_t = t(x), t(kernel.values), t(kernel.offsets), t(bias)

    full = _compile(kernel.func, target)
    one = _compile(_one_entry(kernel), target)
    copy_func, pad_shape = _copy_only(kernel)
    copy = _compile(copy_func, target)
    pad = t(np.zeros([int(d) for d in pad_shape], np.float32))
    empty = _compile(_empty_call(5), target)
    empty_args = [t(np.zeros(1, np.float32)) for _ in range(5)]
    one_values, one_offsets = t(kernel.values[:, :1]), t(kernel.offsets[:, :1])

    full(data, values, offsets, bias_t, out)
    expected = np.maximum(_torch_conv(x.reshape(1, c, size, size), w, bias), 0)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))
    runners = {
        "kernel": lambda: full(data, values, offsets, bias_t, out),
        "one entry": lambda: one(data, one_values, one_offsets, bias_t, out),
        "copy only": lambda: copy(data, pad),
        "call": lambda: empty(*empty_args),
    }
    oh = kernel.shape.out_height
    flops = 2.0 * packed.stored_macs_per_pixel * oh * kernel.shape.out_width
    return LayerBuilds(kernel, runners, flops)


def _torch_conv(x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    import torch

    return torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(bias),
                                      padding=1).numpy()


def stage_ms(ms: dict[str, float]) -> dict[str, float]:
    """Per-stage milliseconds from the four builds' medians (module docstring)."""
    return {
        "call": ms["call"],
        "copy": max(ms["copy only"] - ms["call"], 0.0),
        "fixed": max(ms["one entry"] - ms["copy only"], 0.0),
        "entries": max(ms["kernel"] - ms["one entry"], 0.0),
    }


def measure(c: int, o: int, size: int, sparsity: str, preset: mcp.TargetPreset, repeats: int) -> dict[str, Any]:
    builds = build_layer(c, o, size, SPARSITIES[sparsity], preset, seed=c * 1000 + size)
    times = _common.time_interleaved(builds.runners, repeats=repeats)
    ms = {name: statistics.median(t) for name, t in times.items()}
    stages = stage_ms(ms)
    return {
        "layer": f"{c}->{o} 3x3/s1 @{size}x{size}", "sparsity": sparsity,
        "knobs": builds.kernel.knobs.describe(), "entries_per_group": builds.kernel.shape.entries,
        "ms": ms, "stage_ms": stages,
        "stage_share": {k: v / ms["kernel"] for k, v in stages.items()},
        "gflops_nonzero": builds.nonzero_flops / (ms["kernel"] * 1e-3) / 1e9,
        "entries_gflops_nonzero": builds.nonzero_flops / max(stages["entries"] * 1e-3, 1e-12) / 1e9,
    }


def measure_tiles(c: int, o: int, size: int, sparsity: str, preset: mcp.TargetPreset,
                  repeats: int) -> dict[str, Any]:
    """Kernel ms under each tile of :data:`TILES` (and the default), interleaved."""
    rng = np.random.default_rng(c * 1000 + size)
    lanes = preset.vector_width
    w = aligned_weight(rng, o, c, lanes, keep=SPARSITIES[sparsity])
    bias = rng.standard_normal(o).astype(np.float32)
    packed = pack_pattern_weights(w, lanes)
    build = lambda knobs=None: topi_sparse.build_pattern_conv2d(  # noqa: E731
        (1, c, size, size), w.shape, packed.row_ptr, *packed.row_channels_and_taps(), packed.values,
        stride=1, padding=(1, 1, 1, 1), family="cpu", with_bias=True, clip=RELU, knobs=knobs)
    default = build()
    dev = tvm.cpu()
    x = rng.standard_normal(default.input_shape).astype(np.float32)
    expected = np.maximum(_torch_conv(x.reshape(1, c, size, size), w, bias), 0)
    runners, tiles = {}, {}
    for rows, cols in TILES:
        name = f"{rows}x{cols}"
        kernel = build(dataclasses.replace(default.knobs, tile_h=rows, tile_w=cols))
        lib = _compile(kernel.func, preset.tvm_target())
        args = [tvm.runtime.tensor(a, dev) for a in (x.reshape(kernel.input_shape), kernel.values,
                                                     kernel.offsets, bias)]
        out = tvm.runtime.tensor(np.zeros(kernel.output_shape, np.float32), dev)
        lib(*args, out)
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))
        runners[name] = lambda lib=lib, args=args, out=out: lib(*args, out)
        tiles[name] = rows * cols
    times = _common.time_interleaved(runners, repeats=repeats)
    ms = {name: statistics.median(t) for name, t in times.items()}
    best = min(ms, key=ms.get)
    default_name = f"{default.knobs.tile_h}x{default.knobs.tile_w}"
    return {"layer": f"{c}->{o} 3x3/s1 @{size}x{size}", "sparsity": sparsity, "order": default.knobs.order,
            "default": default_name, "ms": ms, "accumulators": tiles, "best": best,
            "default_over_best": ms.get(default_name, float("nan")) / ms[best]}


def tiles_markdown(info: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    names = [f"{r}x{c}" for r, c in TILES]
    table = _common.md_table(
        ["layer", "sp.", "default", *names, "best", "default / best"],
        [(r["layer"], r["sparsity"], r["default"],
          *(("**" if n == r["best"] else "") + f"{r['ms'][n] / r['ms'][r['best']]:.2f}"
            + ("**" if n == r["best"] else "") for n in names),
          r["best"], f"{r['default_over_best']:.2f}") for r in rows])
    m = info["machine"]
    return "\n".join([
        "# Register tiles of the sparse 3x3 kernel", "",
        f"- {info['date']}, `{info['command']}`; machine {m['cpu']} (LLVM cpu {m.get('llvm_cpu')}), "
        f"{info['threads']} threads; kernels built for preset `{info['preset']}` ({info['target']}); "
        f"interleaved medians of {info['repeats']} repeats",
        "- each cell: kernel time under that tile (rows x columns of vector accumulators) over the "
        "layer's fastest tile (1.00 = fastest); the default is the preset's cost-model tile", "",
        table, "", f"median default / best: {info['median_default_over_best']:.2f}",
    ])


def markdown(info: dict[str, Any], rows: list[dict[str, Any]], scaling: list[dict[str, Any]]) -> str:
    table = _common.md_table(
        ["layer", "sp.", "knobs", "E", "kernel ms", "call", "copy", "fixed (init, write-out, launch)",
         "entries", "GF/s nz (kernel)", "GF/s nz (entries only)"],
        [(r["layer"], r["sparsity"], r["knobs"], r["entries_per_group"], f"{r['ms']['kernel']:.3f}",
          *(f"{r['stage_share'][s]:.0%}" for s in STAGES),
          f"{r['gflops_nonzero']:.0f}", f"{r['entries_gflops_nonzero']:.0f}") for r in rows])
    scale = _common.md_table(
        ["layer", "kernel B/A", "entries B/A", "non-shrinking ms (A)", "non-shrinking ms (B)"],
        [(s["layer"], f"{s['kernel_b_over_a']:.2f}", f"{s['entries_b_over_a']:.2f}",
          f"{s['fixed_ms_a']:.3f}", f"{s['fixed_ms_b']:.3f}") for s in scaling])
    m = info["machine"]
    return "\n".join([
        "# Stage breakdown of the sparse 3x3 kernel", "",
        f"- {info['date']}, `{info['command']}`; machine {m['cpu']} (LLVM cpu {m.get('llvm_cpu')}), "
        f"{info['threads']} threads; kernels built for preset `{info['preset']}` ({info['target']}); "
        f"interleaved medians of {info['repeats']} repeats",
        "- stages as fractions of the kernel's time: call (an empty compiled call), copy (padded input), "
        "fixed (accumulator init + write-out + launch + one entry), entries (the loop over kept "
        "(kernel, tap) entries: the only stage sparsity shrinks)", "",
        table, "",
        "Scaling with sparsity (B keeps half of A's entries: ideal B/A = 0.50):", "", scale, "",
        f"median kernel B/A {info['median_kernel_b_over_a']:.2f}; median entries B/A "
        f"{info['median_entries_b_over_a']:.2f}; median non-shrinking share at B "
        f"{info['median_nonshrinking_share_b']:.0%}",
    ])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="x86-avx2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--layers", type=int, default=len(LAYERS), help="first N layers only")
    parser.add_argument("--tiles", action="store_true", help="time the register tiles of TILES instead")
    args = parser.parse_args(argv)
    _common.setup(args.threads)
    preset = mcp.get_preset(args.preset)
    start = time.perf_counter()
    if args.tiles:
        return _tile_sweep(args, preset, start)
    rows = [measure(c, o, size, sp, preset, args.repeats)
            for c, o, size in tqdm(LAYERS[:args.layers], desc="layers") for sp in SPARSITIES]
    scaling = []
    for a, b in zip(rows[::2], rows[1::2]):
        fixed = lambda r: r["ms"]["kernel"] - r["stage_ms"]["entries"]  # noqa: E731
        scaling.append({"layer": a["layer"], "kernel_b_over_a": b["ms"]["kernel"] / a["ms"]["kernel"],
                        "entries_b_over_a": b["stage_ms"]["entries"] / max(a["stage_ms"]["entries"], 1e-9),
                        "fixed_ms_a": fixed(a), "fixed_ms_b": fixed(b),
                        "nonshrinking_share_b": fixed(b) / b["ms"]["kernel"]})
    info = {"machine": machine_info(), "threads": args.threads, "repeats": args.repeats, "preset": preset.name,
            "target": str(preset.tvm_target()), "command": " ".join(["python", *sys.argv]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "median_kernel_b_over_a": statistics.median(s["kernel_b_over_a"] for s in scaling),
            "median_entries_b_over_a": statistics.median(s["entries_b_over_a"] for s in scaling),
            "median_nonshrinking_share_b": statistics.median(s["nonshrinking_share_b"] for s in scaling),
            "wall_s": round(time.perf_counter() - start, 1)}
    payload = {**info, "layers": rows, "scaling": scaling}
    stem = f"stages_{preset.name}_{info['machine'].get('llvm_cpu', 'cpu')}_{time.strftime('%Y-%m-%dT%H%M')}"
    _common.write_results(args.out, stem, payload, markdown(info, rows, scaling))
    print(markdown(info, rows, scaling))
    return payload


def _tile_sweep(args: argparse.Namespace, preset: mcp.TargetPreset, start: float) -> dict[str, Any]:
    rows = [measure_tiles(c, o, size, sp, preset, args.repeats)
            for c, o, size in tqdm(LAYERS[:args.layers], desc="layers") for sp in SPARSITIES]
    info = {"machine": machine_info(), "threads": args.threads, "repeats": args.repeats, "preset": preset.name,
            "target": str(preset.tvm_target()), "command": " ".join(["python", *sys.argv]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "median_default_over_best": statistics.median(r["default_over_best"] for r in rows),
            "wall_s": round(time.perf_counter() - start, 1)}
    payload = {**info, "tiles": TILES, "layers": rows}
    stem = f"tiles_{preset.name}_{info['machine'].get('llvm_cpu', 'cpu')}_{time.strftime('%Y-%m-%dT%H%M')}"
    _common.write_results(args.out, stem, payload, tiles_markdown(info, rows))
    print(tiles_markdown(info, rows))
    return payload


if __name__ == "__main__":
    main()
