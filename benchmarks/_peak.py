"""The machine's fp32 peak, measured in the same run as the benchmarks.

:func:`measure_peak` times a large torch GEMM and a TVM-built loop of independent FMAs
and keeps the larger; a run measures it before and after its benchmarks
(:func:`tune_then_open_peak`, :func:`close_peak`) and divides each row's non-zero
GFLOP/s by the largest. :func:`fma_peak_probe` is the FMA loop as a runner, timed
interleaved with a workload's repeats.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import _repo  # noqa: F401  (puts the repository on sys.path)
import numpy as np
import torch
import tvm
from _runners import host_target, setup
from _timing import Runner, one_repeat, time_ms

import tvm_mcpruner as mcp

if TYPE_CHECKING:
    from _dense_tuning import DenseTuner, TuningTask

PEAK_PROBE = "peak-probe"


def measure_peak(threads: int, repeats: int = 5) -> dict[str, Any]:
    """fp32 peak of this machine at ``threads`` threads, measured now (GFLOP/s).

    ``torch_gemm``: 2048^3 matmul (oneDNN/MKL). ``tvm_fma_loop``: a TVM-built loop of
    independent AVX FMAs (12 accumulators x vector width, no memory traffic), split over
    ``threads``. ``peak_gflops`` is the larger, so "% of peak" is conservative.
    """
    torch.set_num_threads(threads)
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    gemm_ms = statistics.median(time_ms(lambda: a @ b, repeats=repeats, warmup=2))
    gemm = 2 * n**3 / (gemm_ms * 1e-3) / 1e9
    fma = _tvm_fma_gflops(threads, repeats)
    return {"torch_gemm_gflops": round(gemm, 1), "torch_gemm": f"{n}x{n}x{n} fp32 matmul",
            "tvm_fma_loop_gflops": round(fma, 1), "peak_gflops": round(max(gemm, fma), 1),
            "peak_source": "tvm_fma_loop" if fma >= gemm else "torch_gemm"}


def peak_of_run(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Peak measured before and after the benchmarks; the larger of all four is used."""
    best = max((before, after), key=lambda p: p["peak_gflops"])
    return {**best, "before": before, "after": after,
            "note": "measured before and after the benchmarks; peak_gflops is the largest"}


def tune_then_open_peak(tuner: DenseTuner, tasks: list[TuningTask], args: Any
                        ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Tune ``tasks`` (unless ``args.no_tune``); then, unless ``args.tune_only`` (peak None),
    set the threads up again (tuning changes them) and measure the peak the timings start from."""
    tuning = tuner.tune_and_report(tasks, tune=not args.no_tune)
    if args.tune_only:
        return tuning, None
    setup(args.threads, args.verbose)
    peak = measure_peak(args.threads, repeats=max(args.repeats, 3))
    print(f"peak: {peak}", flush=True)
    return tuning, peak


def close_peak(before: dict[str, Any], rows: list[dict[str, Any]], threads: int, repeats: int) -> dict[str, Any]:
    """Measure the peak again after the benchmarks, keep the run's (:func:`peak_of_run`) and
    fill each row's share of it (:func:`fill_pct_of_peak`)."""
    peak = peak_of_run(before, measure_peak(threads, repeats=repeats))
    fill_pct_of_peak(rows, peak["peak_gflops"])
    return peak


def fill_pct_of_peak(rows: list[dict[str, Any]], peak_gflops: float) -> None:
    """Set each row's ``mcpruner_pct_peak`` from its non-zero GFLOP/s."""
    for row in rows:
        row["mcpruner_pct_peak"] = 100 * row["mcpruner_gflops_nonzero"] / peak_gflops


def fma_peak_probe(threads: int) -> tuple[Runner, float]:
    """The FMA loop as a runner to time *between* a workload's repeats: (runner, FLOPs per call).

    On a shared machine the capacity we get drifts within minutes. Timed interleaved
    with a layer, the probe says what peak was available while that layer was timed; a
    row's percentage of it is the kernel's efficiency with the drift divided out.
    """
    return _fma_loop(threads, 100_000)


def _fma_loop(threads: int, iterations: int) -> tuple[Callable[[], Any], float]:
    """A TVM-built loop of independent FMAs on ``threads`` threads: (call it, FLOPs per call)."""
    from tvm.script import tirx as T

    from tvm_mcpruner.compiler import set_tvm_threads

    lanes, acc = mcp.get_preset("host").vector_width, 12

    @T.prim_func(s_tir=True)
    def fma_loop(ab: T.Buffer((2,), "float32"), out: T.Buffer((threads, acc, lanes), "float32")):
        for t in T.parallel(threads):
            reg = T.alloc_buffer((acc, lanes), "float32", scope="local")
            for j in T.unroll(acc):
                for lane in T.vectorized(lanes):
                    reg[j, lane] = T.float32(0)
            for _ in range(iterations):
                for j in T.unroll(acc):
                    for lane in T.vectorized(lanes):
                        # constant operands: loaded from `ab`, they make LLVM keep `reg`
                        # in memory (a store per FMA)
                        reg[j, lane] = T.fma(reg[j, lane], T.float32(0.999999), T.float32(1e-6))
            for j in T.unroll(acc):
                for lane in T.vectorized(lanes):
                    out[t, j, lane] = reg[j, lane]

    lib = tvm.compile(tvm.IRModule({"main": fma_loop}), target=host_target()).jit()
    set_tvm_threads(threads)
    ab = tvm.runtime.tensor(np.array([0.999999, 1e-6], "float32"))
    out = tvm.runtime.tensor(np.zeros((threads, acc, lanes), "float32"))
    main = lib["main"]
    return (lambda: main(ab, out)), 2.0 * threads * acc * lanes * iterations


def _tvm_fma_gflops(threads: int, repeats: int, iterations: int = 200_000) -> float:
    call, flops = _fma_loop(threads, iterations)
    seconds = [one_repeat(call, 5) / 1e3 for _ in range(repeats)]
    return flops / statistics.median(seconds) / 1e9
