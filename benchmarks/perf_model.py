"""A performance model of the sparse 3x3 kernels from their assembly (issue 24, parts 1-2).

For one built kernel the model

1. extracts the hot loop from the generated assembly: the innermost loop that multiplies
   floats, i.e. the entry loop (per entry one offset load, one weight-vector load and
   ``tile_h * tile_w`` FMAs; AVX-512 ``vfmadd231ps mem{1to16}``, AVX2 ``vbroadcastss`` +
   ``vfmadd231ps``, NEON ``fmla`` by element);
2. runs ``llvm-mca`` (Debian ``llvm-19``) on it for a CPU (``-mcpu``): cycles per iteration
   = total cycles / iterations of a long steady-state run, so loop-carried accumulator
   chains and port pressure both count;
3. multiplies by the hot loop's trip count on the busiest thread (:func:`trip_counts`;
   entries per iteration read off the loop's FMAs, as LLVM may unroll the entry loop
   beyond the ``unroll_entries`` knob) and divides by the clock: the layer's predicted time;
4. relates the loop's FMAs to the core's FMA peak, itself taken from llvm-mca's scheduling
   model by a probe of independent register FMAs (:func:`fma_peak`).

Assumptions, stated once:

* only the entry loop is modelled: the padded-input copy, accumulator initialisation,
  write-out, thread launch and the call are not (``benchmarks/stages.py`` measures them);
* every load hits L1 (llvm-mca's model): layers whose entry loop streams from L2/L3 or
  memory run slower than predicted;
* the parallel loop is split into equal static chunks over ``threads`` cores (TVM's
  parallel-for), so the busiest thread runs ``ceil(parallel extent / threads)`` of them;
* the clock is the host's max MHz: lscpu's "CPU max MHz" where it is given, else
  /proc/cpuinfo's "cpu MHz" (a VM's nominal clock; turbo is not modelled).

Usage::

    python benchmarks/perf_model.py predict [--preset hikey970-cpu] [--mcpu cortex-a73]
    python benchmarks/perf_model.py calibrate [--repeats 5] [--tile-layers 1]

``calibrate`` builds the layers of ``benchmarks/stages.py`` (presets x86-avx2 and host,
sparsities A and B) and the register tiles of its first layer(s), times them with
stages' builds (interleaved, one run) and predicts them for this host's CPU, writing
``benchmarks/results/perf_model_calibration_<llvm cpu>_<date>.json`` / ``.md``.
Every predicted figure is labelled "predicted by llvm-mca, not measured".
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _repo  # noqa: E402,F401  (puts the repository on sys.path)
import numpy as np  # noqa: E402
import tvm  # noqa: E402

import topi_sparse  # noqa: E402
import tvm_mcpruner as mcp  # noqa: E402
from tvm_mcpruner.targets import system_cpu_name  # noqa: E402

PREDICTED = "predicted by llvm-mca, not measured"
LLVM_MCA = "llvm-mca-19"
LLVM_MCA_SETUP = "sudo bash .ci/setup_arm.sh, or apt-get install llvm-19"
# Long enough that the pipeline's fill and drain are under 1% of the total cycles.
MCA_ITERATIONS = 300
X86_TRIPLE = "x86_64-unknown-linux-gnu"
# Tile pairs closer than this (relative) in the model or the measurement count as ties.
RANK_TIE = 0.03
# Clocks of CPUs we model but do not have: the model needs the board's, not this host's.
KNOWN_MHZ = {"cortex-a73": (2362.0, "HiKey970's Kirin 970 A73 cores, 2.36 GHz (HiSilicon's spec)")}

_LABEL = re.compile(r"^(\.L\w+):")
# Branches to a local label: aarch64 b / b.cond / cbz / tbz, x86 jmp / jcc.
_BRANCH = re.compile(r"^(?:b(?:\.\w+)?|cbn?z|tbn?z|j[a-z]+)\s.*?(\.L\w+)$")
# Floating-point multiplies: aarch64 scalar and NEON, x86 FMA3 and AVX multiplies.
FP_MULTIPLY = re.compile(r"^(?:fmla|fmls|fmadd|fmsub|fmul|vfn?m(?:add|sub)\d{3}[ps]s|vmul[ps]s)\s")


# ---------------------------------------------------------------------------------
# assembly
# ---------------------------------------------------------------------------------
def loops(asm: str) -> list[list[str]]:
    """Instruction lines of every loop: from a label to a later branch back to it."""
    lines = [line.strip() for line in asm.splitlines()]
    label_line: dict[str, int] = {}
    bodies = []
    for i, line in enumerate(lines):
        if match := _LABEL.match(line):
            label_line[match.group(1)] = i
        elif (match := _BRANCH.match(line)) and match.group(1) in label_line:
            bodies.append(lines[label_line[match.group(1)] + 1 : i + 1])
    return bodies


def hot_loop(asm: str) -> list[str]:
    """The innermost (shortest) loop that multiplies floats: where the kernel spends its time."""
    multiplying = [body for body in loops(asm) if any(FP_MULTIPLY.match(line) for line in body)]
    if not multiplying:
        raise ValueError("no loop with floating-point multiplies in the assembly")
    return min(multiplying, key=len)


def fp_multiplies(body: list[str]) -> list[str]:
    """The floating-point multiply (FMA) instructions of a loop body."""
    return [line for line in body if FP_MULTIPLY.match(line)]


def mca_source(body: list[str]) -> str:
    """The loop body as llvm-mca input: instructions only (labels, directives, comments dropped)."""
    keep = []
    for line in body:
        line = re.split(r"\s[#/]{1,2}\s", " " + line + " ", maxsplit=1)[0].strip()
        if line and not line.startswith((".", "#", "//")) and not _LABEL.match(line):
            keep.append(line)
    return "\n".join(keep) + "\n"


# ---------------------------------------------------------------------------------
# llvm-mca
# ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class McaReport:
    """The summary of one llvm-mca run."""

    iterations: int
    instructions: int
    total_cycles: int
    block_rthroughput: float

    @property
    def cycles_per_iteration(self) -> float:
        return self.total_cycles / self.iterations


def parse_mca(text: str) -> McaReport:
    """Read the summary block (Iterations, Instructions, Total Cycles, Block RThroughput) of llvm-mca's output."""
    def field(name: str) -> str:
        match = re.search(rf"^{name}:\s+([\d.]+)\s*$", text, re.MULTILINE)
        if match is None:
            raise ValueError(f"llvm-mca output has no {name!r} line:\n{text[:500]}")
        return match.group(1)

    return McaReport(int(field("Iterations")), int(field("Instructions")), int(field("Total Cycles")),
                     float(field("Block RThroughput")))


def llvm_mca_path() -> str | None:
    """The llvm-mca binary the model uses (``llvm-mca-19``), or None when it is not installed."""
    return shutil.which(LLVM_MCA)


def run_mca(source: str, mtriple: str, mcpu: str, iterations: int = MCA_ITERATIONS) -> McaReport:
    """llvm-mca on an instruction sequence for ``mtriple`` / ``mcpu``, as a loop of ``iterations``."""
    binary = llvm_mca_path()
    if binary is None:
        raise FileNotFoundError(f"{LLVM_MCA} is not installed ({LLVM_MCA_SETUP})")
    proc = subprocess.run([binary, f"-mtriple={mtriple}", f"-mcpu={mcpu}", f"-iterations={iterations}"],
                          input=source, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{LLVM_MCA} -mcpu={mcpu} failed: {proc.stderr.strip()[:1000]}")
    return parse_mca(proc.stdout)


@dataclasses.dataclass(frozen=True)
class Isa:
    """What the model needs to know of an instruction set: lanes and a probe FMA."""

    name: str
    lanes: int
    probe: str  # an FMA with {acc} and {src} register numbers, independent across accumulators


ISAS = {
    "avx512": Isa("avx512", 16, "vfmadd231ps %zmm{src}, %zmm{src}, %zmm{acc}"),
    "avx2": Isa("avx2", 8, "vfmadd231ps %ymm{src}, %ymm{src}, %ymm{acc}"),
    "neon": Isa("neon", 4, "fmla v{acc}.4s, v{src}.4s, v{src}.4s"),
}


def isa_of(mtriple: str, lanes: int) -> Isa:
    """The vector ISA a kernel of ``lanes`` fp32 lanes is built with for ``mtriple``."""
    if mtriple.startswith("aarch64"):
        return ISAS["neon"]
    return ISAS["avx512"] if lanes == 16 else ISAS["avx2"]


@functools.cache
def fma_peak(isa: Isa, mtriple: str, mcpu: str) -> float:
    """The core's peak in fp32 lane-FMAs per cycle, by llvm-mca's scheduling model of ``mcpu``.

    Probe: 12 independent register-only FMAs of ``isa`` (enough accumulators to hide any
    FMA latency seen), so only the FMA pipes limit them. E.g. znver4: 2 ymm FMAs/cycle =
    16 lanes, 1 zmm FMA/cycle = 16 lanes; cortex-a73: 1 ``fmla .4s``/cycle = 4 lanes.
    """
    half = 12
    source = "\n".join(isa.probe.format(acc=i, src=i + half) for i in range(half)) + "\n"
    report = run_mca(source, mtriple, mcpu)
    return half * isa.lanes / report.block_rthroughput  # pure throughput: nothing depends on anything


# ---------------------------------------------------------------------------------
# trip counts, clock, prediction
# ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TripCounts:
    """Iterations of the hot (entry) loop for one call of a kernel."""

    parallel_extent: int  # iterations of the fused parallel loop
    inner_per_parallel: int  # hot-loop iterations under one parallel iteration
    threads: int

    @property
    def per_call(self) -> int:
        return self.parallel_extent * self.inner_per_parallel

    @property
    def busiest_thread(self) -> int:
        """What the slowest thread runs: equal static chunks of the parallel loop."""
        return math.ceil(self.parallel_extent / self.threads) * self.inner_per_parallel


def trip_counts(shape: topi_sparse.PatternConvShape, knobs: Any, threads: int,
                entries_per_iteration: int | None = None) -> TripCounts:
    """Hot-loop trip counts of a kernel: batch x groups x row tiles x column tiles x entries / unroll.

    The parallel loop fuses (batch, groups, row tiles) in "group" and "row" order and
    (batch, groups, column tiles) in "column" order; the other tile loop and the entry
    loop run inside it. One hot-loop iteration covers ``entries_per_iteration`` entries:
    ``knobs.unroll_entries`` by default, more where LLVM unrolled the loop further (read
    off the assembly by :func:`predict`).
    """
    row_tiles = shape.acc_rows(knobs.tile_w) // knobs.tile_h
    col_tiles = -(-shape.out_width // knobs.tile_w)
    entry_iterations = -(-shape.entries // (entries_per_iteration or knobs.unroll_entries))
    if knobs.order == "column":
        parallel, inner = shape.batch * shape.groups * col_tiles, row_tiles
    else:
        parallel, inner = shape.batch * shape.groups * row_tiles, col_tiles
    return TripCounts(parallel, inner * entry_iterations, threads)


def clock_mhz() -> tuple[float, str]:
    """The host's clock in MHz and where it was read: lscpu "CPU max MHz", else /proc/cpuinfo "cpu MHz"."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        match = re.search(r"^CPU max MHz:\s+([\d.]+)", out, re.MULTILINE)
        if match and float(match.group(1)) > 0:
            return float(match.group(1)), "lscpu 'CPU max MHz'"
    except OSError:
        pass
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
        mhz = max(float(line.split(":", 1)[1]) for line in f if line.startswith("cpu MHz"))
    return mhz, "/proc/cpuinfo 'cpu MHz' (max over cores; no 'CPU max MHz' in lscpu)"


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The model's figures for one kernel (all predicted by llvm-mca, not measured)."""

    mcpu: str
    cycles_per_iteration: float
    fmas_per_iteration: int  # tile_h x tile_w x entries per iteration
    trips: TripCounts
    mhz: float
    peak_lane_fmas_per_cycle: float
    lanes: int
    stored_macs: int  # batch x out channels x entries x OH x OW (entries padded per group)

    @property
    def ms(self) -> float:
        return self.cycles_per_iteration * self.trips.busiest_thread / (self.mhz * 1e3)

    @property
    def loop_share_of_peak(self) -> float:
        """The hot loop's lane-FMAs per cycle over the core's peak."""
        return self.fmas_per_iteration * self.lanes / self.cycles_per_iteration / self.peak_lane_fmas_per_cycle

    @property
    def layer_share_of_peak(self) -> float:
        """Stored (non-zero) MACs per second over the peak of ``threads`` cores at the predicted time."""
        peak_per_s = self.peak_lane_fmas_per_cycle * self.mhz * 1e6 * self.trips.threads
        return self.stored_macs / (self.ms * 1e-3) / peak_per_s

    def to_dict(self) -> dict[str, Any]:
        return {"label": PREDICTED, "mcpu": self.mcpu, "ms": self.ms,
                "cycles_per_iteration": self.cycles_per_iteration, "fmas_per_iteration": self.fmas_per_iteration,
                "trips_per_call": self.trips.per_call, "trips_busiest_thread": self.trips.busiest_thread,
                "threads": self.trips.threads, "mhz": self.mhz,
                "peak_lane_fmas_per_cycle": self.peak_lane_fmas_per_cycle,
                "loop_share_of_peak": self.loop_share_of_peak, "layer_share_of_peak": self.layer_share_of_peak}


def target_triple(target: tvm.target.Target) -> str:
    """The target's ``mtriple``, or x86-64 Linux where it has none (host and x86 presets)."""
    return str(target.attrs.get("mtriple", "")) or X86_TRIPLE


def kernel_asm(kernel: topi_sparse.PatternConvKernel, target: tvm.target.Target) -> str:
    """The kernel's assembly as ``tvm.compile`` generates it for ``target``."""
    return tvm.compile(tvm.IRModule({"main": kernel.func}), target=target).mod.inspect_source("asm")


def predict(kernel: topi_sparse.PatternConvKernel, asm: str, mtriple: str, mcpu: str, threads: int,
            mhz: float) -> Prediction:
    """The model's time for one call of ``kernel`` (assembly ``asm``) on ``threads`` cores of ``mcpu``."""
    body = hot_loop(asm)
    report = run_mca(mca_source(body), mtriple, mcpu)
    shape, knobs = kernel.shape, kernel.knobs
    fmas, tile = len(fp_multiplies(body)), knobs.tile_h * knobs.tile_w
    # One FMA per accumulator and entry: LLVM may unroll the entry loop beyond the knob.
    if fmas % tile:
        raise ValueError(f"hot loop has {fmas} FMAs, not a multiple of the {knobs.tile_h}x{knobs.tile_w} tile:\n"
                         + "\n".join(body))
    isa = isa_of(mtriple, shape.lanes)
    stored = shape.batch * shape.out_channels * shape.entries * shape.out_height * shape.out_width
    return Prediction(mcpu, report.cycles_per_iteration, fmas, trip_counts(shape, knobs, threads, fmas // tile),
                      mhz, fma_peak(isa, mtriple, mcpu), shape.lanes, stored)


# ---------------------------------------------------------------------------------
# ranking
# ---------------------------------------------------------------------------------
def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2  # ties share their mean rank
        i = j + 1
    return ranks


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation of two equally long sequences (ties get mean ranks)."""
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    norm = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return cov / norm if norm else float("nan")


def pairwise_agreement(a: list[float], b: list[float], tie: float = 0.0) -> tuple[float, int]:
    """Fraction of pairs ordered the same way by ``a`` and ``b``, and how many pairs counted.

    A pair whose values differ by at most ``tie`` (relative) in either sequence is a tie
    there and is skipped: an order inside the noise (or the model's resolution) is no evidence.
    """
    def differ(x: float, y: float) -> bool:
        return abs(x - y) > tie * max(abs(x), abs(y))

    same = total = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            if differ(a[i], a[j]) and differ(b[i], b[j]):
                total += 1
                same += (a[i] > a[j]) == (b[i] > b[j])
    return (same / total if total else float("nan")), total


# ---------------------------------------------------------------------------------
# the layer suite: predict, calibrate
# ---------------------------------------------------------------------------------
def layer_kernel(c: int, o: int, size: int, sparsity: str, preset: mcp.TargetPreset,
                 knobs: Any = None) -> topi_sparse.PatternConvKernel:
    """The kernel ``benchmarks/stages.py`` builds for a layer (same seed, weight, epilogue), with ``knobs``."""
    import stages
    from kernel_variants import aligned_weight

    from tvm_mcpruner.sparse_format import pack_pattern_weights

    rng = np.random.default_rng(c * 1000 + size)
    w = aligned_weight(rng, o, c, preset.vector_width, keep=stages.SPARSITIES[sparsity])
    packed = pack_pattern_weights(w, preset.vector_width)
    return topi_sparse.build_pattern_conv2d(
        (1, c, size, size), w.shape, packed.row_ptr, *packed.row_channels_and_taps(), packed.values,
        stride=1, padding=(1, 1, 1, 1), family="cpu", with_bias=True, clip=stages.RELU, knobs=knobs)


def _layer_name(c: int, o: int, size: int) -> str:
    return f"{c}->{o} 3x3/s1 @{size}x{size}"


def predict_suite(preset: mcp.TargetPreset, mcpu: str, threads: int, mhz: float) -> list[dict[str, Any]]:
    """Predictions for every layer x sparsity of ``benchmarks/stages.py`` built for ``preset``."""
    import stages

    target = preset.tvm_target()
    rows = []
    for c, o, size in stages.LAYERS:
        for sparsity in stages.SPARSITIES:
            kernel = layer_kernel(c, o, size, sparsity, preset)
            p = predict(kernel, kernel_asm(kernel, target), target_triple(target), mcpu, threads, mhz)
            rows.append({"layer": _layer_name(c, o, size), "sparsity": sparsity, "preset": preset.name,
                         "knobs": kernel.knobs.describe(), "predicted": p.to_dict()})
    return rows


def _error_pct(predicted: float, measured: float) -> float:
    return 100.0 * (predicted - measured) / measured


def wait_for_quiet(max_load: float, poll_s: float = 10.0) -> float:
    """Block until the 1-minute load average is at most ``max_load``; returns the load seen.

    Timings on a loaded machine measure the other work too; the builds before a timing
    phase run regardless, only the timing waits.
    """
    while True:
        with open("/proc/loadavg", encoding="ascii") as f:
            load = float(f.read().split()[0])
        if load <= max_load:
            return load
        print(f"[perf_model] load {load:.2f} > {max_load}: waiting to time", flush=True)
        time.sleep(poll_s)


def calibrate_layers(presets: list[mcp.TargetPreset], mcpu: str, threads: int, mhz: float,
                     repeats: int, layers: int, max_load: float | None = None) -> list[dict[str, Any]]:
    """Measured (stages' builds, all timed interleaved in one run) vs predicted, per layer x sparsity x preset."""
    import _common
    import stages

    cases, runners = [], {}
    for preset in presets:
        target = preset.tvm_target()
        for c, o, size in stages.LAYERS[:layers]:
            for sparsity in stages.SPARSITIES:
                builds = stages.build_layer(c, o, size, stages.SPARSITIES[sparsity], preset, seed=c * 1000 + size)
                key = f"{preset.name} {_layer_name(c, o, size)} {sparsity}"
                runners[f"{key}|kernel"] = builds.runners["kernel"]
                runners[f"{key}|one entry"] = builds.runners["one entry"]
                p = predict(builds.kernel, kernel_asm(builds.kernel, target), target_triple(target), mcpu,
                            threads, mhz)
                cases.append((key, preset, _layer_name(c, o, size), sparsity, builds.kernel, p))
    if max_load is not None:
        wait_for_quiet(max_load)
    times = _common.time_interleaved(runners, repeats=repeats)
    rows = []
    for key, preset, layer, sparsity, kernel, p in cases:
        ms = statistics.median(times[f"{key}|kernel"])
        entries_ms = max(ms - statistics.median(times[f"{key}|one entry"]), 1e-9)
        rows.append({"preset": preset.name, "layer": layer, "sparsity": sparsity, "knobs": kernel.knobs.describe(),
                     "measured_ms": ms, "measured_entries_ms": entries_ms, "predicted": p.to_dict(),
                     "error_pct": _error_pct(p.ms, ms), "entries_error_pct": _error_pct(p.ms, entries_ms)})
    return rows


def calibrate_tiles(preset: mcp.TargetPreset, mcpu: str, threads: int, mhz: float, repeats: int,
                    layers: int, max_load: float | None = None) -> list[dict[str, Any]]:
    """Measured (``stages.measure_tiles``) vs predicted kernel time under every tile of ``stages.TILES``."""
    import stages

    target = preset.tvm_target()
    rows = []
    for c, o, size in stages.LAYERS[:layers]:
        sparsity = "A"
        if max_load is not None:
            wait_for_quiet(max_load)
        measured = stages.measure_tiles(c, o, size, sparsity, preset, repeats)
        default = layer_kernel(c, o, size, sparsity, preset)
        tiles = []
        for rows_, cols in stages.TILES:
            kernel = layer_kernel(c, o, size, sparsity, preset,
                                  dataclasses.replace(default.knobs, tile_h=rows_, tile_w=cols))
            p = predict(kernel, kernel_asm(kernel, target), target_triple(target), mcpu, threads, mhz)
            name = f"{rows_}x{cols}"
            tiles.append({"tile": name, "measured_ms": measured["ms"][name], "predicted": p.to_dict(),
                          "error_pct": _error_pct(p.ms, measured["ms"][name])})
        meas = [t["measured_ms"] for t in tiles]
        pred = [t["predicted"]["ms"] for t in tiles]
        agreement, pairs = pairwise_agreement(pred, meas, tie=RANK_TIE)
        rows.append({"preset": preset.name, "layer": _layer_name(c, o, size), "sparsity": sparsity,
                     "order": default.knobs.order, "tiles": tiles, "spearman": spearman(pred, meas),
                     "pairwise_agreement": agreement, "pairs_compared": pairs, "pairs_total": len(tiles) * (len(tiles) - 1) // 2,
                     "measured_best": min(tiles, key=lambda t: t["measured_ms"])["tile"],
                     "predicted_best": min(tiles, key=lambda t: t["predicted"]["ms"])["tile"]})
    return rows


def calibration_markdown(info: dict[str, Any], layers: list[dict[str, Any]], tiles: list[dict[str, Any]]) -> str:
    """The calibration report: per-layer table, median |error|, tile ranking agreement."""
    import _common

    table = _common.md_table(
        ["preset", "layer", "sp.", "knobs", "measured ms", f"model ms ({PREDICTED})", "error",
         "measured entry-loop ms (kernel - one entry)", "error vs entry loop", "model cycles/iter",
         "model FMA peak share (layer)"],
        [(r["preset"], r["layer"], r["sparsity"], r["knobs"], f"{r['measured_ms']:.3f}",
          f"{r['predicted']['ms']:.3f}", f"{r['error_pct']:+.0f}%", f"{r['measured_entries_ms']:.3f}",
          f"{r['entries_error_pct']:+.0f}%", f"{r['predicted']['cycles_per_iteration']:.2f}",
          f"{r['predicted']['layer_share_of_peak']:.0%}") for r in layers])
    lines = [
        "# Performance model (llvm-mca) calibrated on x86", "",
        f"- {info['date']}, `{info['command']}`; machine {info['machine']['cpu']} (LLVM cpu "
        f"{info['machine']['llvm_cpu']}), {info['threads']} threads; measured: interleaved medians of "
        f"{info['repeats']} repeats, one run",
        f"- model: `{LLVM_MCA} -mcpu={info['mcpu']}` on each kernel's hot (entry) loop x its trip count on the "
        f"busiest thread / {info['mhz']:.0f} MHz ({info['mhz_source']}); only the entry loop is modelled, "
        "every load is assumed to hit L1",
        f"- every model figure is **{PREDICTED}**", "",
        table, "",
        f"median |error| vs the whole kernel: **{info['median_abs_error_pct']:.0f}%** (signed median "
        f"{info['median_error_pct']:+.0f}%); "
        f"vs the measured entry loop alone: {info['median_abs_entries_error_pct']:.0f}%",
    ]
    for t in tiles:
        lines += ["", f"## Tile choices: {t['preset']} {t['layer']} sparsity {t['sparsity']} ({t['order']} order)", "",
                  _common.md_table(["tile", "measured ms", f"model ms ({PREDICTED})", "error"],
                                   [(x["tile"], f"{x['measured_ms']:.3f}", f"{x['predicted']['ms']:.3f}",
                                     f"{x['error_pct']:+.0f}%") for x in t["tiles"]]), "",
                  f"rank agreement over {len(t['tiles'])} tiles: Spearman {t['spearman']:.2f}; pairwise order "
                  f"{t['pairwise_agreement']:.0%} of the {t['pairs_compared']} of {t['pairs_total']} pairs that "
                  f"differ by more than {RANK_TIE:.0%} in both; best tile measured {t['measured_best']}, "
                  f"predicted {t['predicted_best']}"]
    return "\n".join(lines)


def _calibrate(args: argparse.Namespace) -> dict[str, Any]:
    import _common

    from tvm_mcpruner.benchmark import machine_info

    _common.setup(args.threads)
    start = time.perf_counter()
    mcpu = args.mcpu or system_cpu_name()
    mhz, source = clock_mhz()
    presets = [mcp.get_preset(name) for name in args.presets]
    layers = calibrate_layers(presets, mcpu, args.threads, mhz, args.repeats, args.layers, args.max_load)
    tiles = [row for name in args.tile_presets
             for row in calibrate_tiles(mcp.get_preset(name), mcpu, args.threads, mhz, args.repeats,
                                        args.tile_layers, args.max_load)]
    info = {"machine": machine_info(), "threads": args.threads, "repeats": args.repeats, "mcpu": mcpu,
            "mhz": mhz, "mhz_source": source, "label": PREDICTED,
            "command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "median_abs_error_pct": statistics.median(abs(r["error_pct"]) for r in layers),
            "median_error_pct": statistics.median(r["error_pct"] for r in layers),
            "median_abs_entries_error_pct": statistics.median(abs(r["entries_error_pct"]) for r in layers),
            "tile_spearman": [t["spearman"] for t in tiles],
            "tile_pairwise_agreement": [t["pairwise_agreement"] for t in tiles]}
    info["wall_s"] = round(time.perf_counter() - start, 1)
    payload = {**info, "layers": layers, "tiles": tiles}
    stem = f"perf_model_calibration_{mcpu}_{time.strftime('%Y-%m-%dT%H%M')}"
    text = calibration_markdown(info, layers, tiles)
    _common.write_results(args.out, stem, payload, text)
    print(text)
    return payload


def _predict(args: argparse.Namespace) -> list[dict[str, Any]]:
    import _common

    preset = mcp.get_preset(args.preset)
    target = preset.tvm_target()
    mcpu = args.mcpu or str(target.attrs.get("mcpu", "")) or system_cpu_name()
    if args.mhz:
        mhz, source = args.mhz, "--mhz"
    elif mcpu in KNOWN_MHZ:
        mhz, source = KNOWN_MHZ[mcpu]
    else:
        mhz, source = clock_mhz()
    threads = args.threads or preset.threads
    rows = predict_suite(preset, mcpu, threads, mhz)
    print(f"# {preset.name} on -mcpu={mcpu}, {threads} threads, {mhz:.0f} MHz ({source}); {PREDICTED}\n")
    print(_common.md_table(
        ["layer", "sp.", "knobs", "model ms", "cycles/iter", "FMAs/iter", "loop share of FMA peak",
         "layer share of FMA peak"],
        [(r["layer"], r["sparsity"], r["knobs"], f"{r['predicted']['ms']:.3f}",
          f"{r['predicted']['cycles_per_iteration']:.2f}", r["predicted"]["fmas_per_iteration"],
          f"{r['predicted']['loop_share_of_peak']:.0%}", f"{r['predicted']['layer_share_of_peak']:.0%}")
         for r in rows]))
    return rows


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("predict", help="predict the stages.py layer suite for a preset")
    p.add_argument("--preset", default="hikey970-cpu")
    p.add_argument("--mcpu", help="llvm-mca CPU (default: the preset's mcpu, else this host's)")
    p.add_argument("--threads", type=int, help="default: the preset's threads")
    p.add_argument("--mhz", type=float, help="clock of the modelled CPU (default: this host's)")
    c = sub.add_parser("calibrate", help="predicted vs measured on this host")
    c.add_argument("--presets", nargs="+", default=["x86-avx2", "host"])
    c.add_argument("--tile-presets", nargs="*", default=["x86-avx2"])
    c.add_argument("--mcpu", help="llvm-mca CPU (default: this host's LLVM cpu name)")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--repeats", type=int, default=5)
    c.add_argument("--layers", type=int, default=4, help="first N layers of stages.LAYERS")
    c.add_argument("--tile-layers", type=int, default=2, help="first N layers get the tile sweep")
    c.add_argument("--max-load", type=float, default=1.2,
                   help="wait before each timing phase until the 1-minute load average is at most this")
    c.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    return _calibrate(args) if args.mode == "calibrate" else _predict(args)


if __name__ == "__main__":
    main()
