"""Shared machinery of ``benchmarks/layers.py`` and ``benchmarks/models.py``.

* :func:`time_ms` -- one timing rule for every framework (warm-up, then the median over
  repeats of the mean of ``number`` calls, ``number`` sized so a repeat lasts >= 50 ms);
* runners for the four frameworks, each a zero-argument callable over prepared inputs:
  torch (oneDNN, denormals flushed), onnxruntime (denormals as zero), TVM dense
  (MetaSchedule-tuned from a persistent database) and mcpruner sparse;
* :class:`DenseTuner` -- the MetaSchedule JSON database in
  ``autotune_logs/<host-cpu>/dense/``: tunes only what the database (and its ledger)
  has not seen with at least the asked budget, appends, never overwrites;
* :func:`measure_peak` -- the machine's fp32 peak measured in the same run (a large
  torch GEMM and a TVM-built FMA loop);
* result writing (JSON + markdown) with machine info, versions, command, budget, wall time.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

import torch
import tvm
from torch import nn
from tvm import relax

import tvm_mcpruner as mcp
from tvm_mcpruner.benchmark import flushed_denormals, machine_info, onnxruntime_session, rel_error, set_threads
from tvm_mcpruner.targets import host_cpu_name, usable_cpus

logger = logging.getLogger("mcpruner.benchmarks")

Runner = Callable[[], Any]

# Idle time before each timed repeat. Each framework keeps its worker threads spinning
# for a while after a call (OpenMP, TVM's pool, onnxruntime's); with 20 ms they were
# still awake, and torch's 256->512 3x3 conv on 2 threads measured 4.3-16 ms across the
# repeats of one interleaved run against 4.5 +- 0.1 ms alone. With 0.3 s every framework's
# repeats agreed within ~15% (2026-11-23, this machine).
SETTLE_S = 0.25


# ----------------------------------------------------------------------------- timing
def calls_per_repeat(fn: Runner, warmup: int = 2, min_repeat_ms: float = 50.0) -> int:
    """Warm ``fn`` up, then how many back-to-back calls make one repeat last ``min_repeat_ms``."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    fn()
    one_ms = (time.perf_counter() - start) * 1e3
    return max(1, int(np.ceil(min_repeat_ms / max(one_ms, 1e-3))))


def _one_repeat(fn: Runner, number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) * 1e3 / number


def time_ms(fn: Runner, repeats: int = 5, warmup: int = 2, min_repeat_ms: float = 50.0) -> list[float]:
    """Milliseconds per call: ``repeats`` entries, each the mean of ``number`` back-to-back calls.

    ``number`` is chosen after warm-up so one repeat lasts at least ``min_repeat_ms``
    (short layers would otherwise measure the timer). Report the median of the list.
    """
    number = calls_per_repeat(fn, warmup, min_repeat_ms)
    return [_one_repeat(fn, number) for _ in range(repeats)]


def time_interleaved(runners: dict[str, Runner], repeats: int = 5, warmup: int = 2,
                     min_repeat_ms: float = 50.0, settle_s: float = SETTLE_S) -> dict[str, list[float]]:
    """:func:`time_ms` for several runners, repeats taken round-robin.

    Interleaving makes a load change on a shared machine hit every framework alike
    instead of whichever happened to be timed at that moment. Before each repeat the
    process idles ``settle_s`` so the previous framework's spinning worker threads
    (OpenMP, TVM's pool, onnxruntime's) have gone to sleep and do not steal cores.
    """
    numbers = {name: calls_per_repeat(fn, warmup, min_repeat_ms) for name, fn in runners.items()}
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            time.sleep(settle_s)  # the previous framework's spinning threads go to sleep
            fn()  # untimed: wakes this framework's threads and warms its caches
            times[name].append(_one_repeat(fn, numbers[name]))
    return times


@dataclass
class Timing:
    """One framework's result on one workload."""

    framework: str
    median_ms: float
    times_ms: list[float]
    max_rel_error: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"framework": self.framework, "median_ms": self.median_ms, "times_ms": self.times_ms,
                "max_rel_error": self.max_rel_error, "note": self.note}


def measure_all(runners: dict[str, Runner], refs: dict[str, np.ndarray | None], repeats: int,
                notes: dict[str, str] | None = None) -> dict[str, Timing]:
    """Check each runner's output against its reference, then time them all interleaved.

    A runner whose reference is None (a probe such as :func:`fma_peak_probe`) is timed
    with the others but not checked (its error reads as 0).
    """
    errors = {name: 0.0 if refs[name] is None else rel_error(_as_numpy(fn()), refs[name])
              for name, fn in runners.items()}
    times = time_interleaved(runners, repeats=repeats)
    notes = notes or {}
    return {name: Timing(name.split("@")[0], statistics.median(t), t, errors[name], notes.get(name, ""))
            for name, t in times.items()}


def _as_numpy(out: Any) -> np.ndarray:
    if isinstance(out, (list, tuple)):
        out = out[0]
    if hasattr(out, "detach"):
        return out.detach().numpy()
    return out.numpy() if hasattr(out, "numpy") else np.asarray(out)


# ----------------------------------------------------------------------------- frameworks
DENSE_FRAMEWORKS = ("torch", "onnxruntime", "tvm-dense")


def torch_runner(model: nn.Module, x: torch.Tensor) -> Runner:
    model = model.eval()

    def run() -> torch.Tensor:
        with torch.inference_mode(), flushed_denormals():
            return model(x)

    return run


def onnxruntime_runner(model: nn.Module, x: torch.Tensor, threads: int, workdir: Path) -> Runner:
    """An ORT session on the CPU provider: ``threads`` intra-op threads, denormals as zero."""
    path = mcp.export_onnx(model, (x,), workdir / "model.onnx")
    session = onnxruntime_session(path, threads)
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


def vm_runner(executable: Any, x: np.ndarray) -> tuple[Runner, relax.VirtualMachine]:
    """Call ``main`` of a Relax executable on a prepared input (function looked up once)."""
    vm = relax.VirtualMachine(executable, tvm.cpu())
    arg = tvm.runtime.tensor(np.ascontiguousarray(x))
    main = vm["main"]
    return (lambda: main(arg)), vm


def host_target() -> tvm.target.Target:
    return mcp.get_preset("host").tvm_target()


# ----------------------------------------------------------------------------- MetaSchedule
def fuse_for_tuning(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Legalize + fuse exactly as ``ms.relax_integration.compile_relax`` does before it
    applies the database, so tuned workloads and compiled ones match structurally."""
    passes = [
        *relax.pipeline.library_dispatch_passes(target),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(passes)(mod)


@dataclass
class TuningTask:
    name: str
    workload: tvm.IRModule
    key: str  # structural hash of the workload: the ledger's key


class DenseTuner:
    """TVM dense baseline: MetaSchedule (XGBoost cost model) with a persistent JSON database.

    The database lives in ``<root>/<host cpu>/dense/`` (``database_workload.json`` +
    ``database_tuning_record.json``, appended to by MetaSchedule) next to
    ``tuning_ledger.jsonl``, one appended line per tuned task. A task is tuned only when
    neither the ledger nor the database shows ``trials_per_task`` trials for it already,
    and then only for the missing trials, so reruns with the same or a smaller budget
    tune nothing. ``trials_per_task == 0`` means untuned (TVM's default lowering).
    """

    def __init__(self, trials_per_task: int, root: Path = REPO_ROOT / "autotune_logs",
                 threads: int = 2, builder_timeout_s: float = 120.0):
        if trials_per_task < 0:
            raise ValueError(f"trials_per_task must be >= 0, got {trials_per_task}")
        self.trials_per_task = trials_per_task
        self.db_dir = Path(root) / host_cpu_name() / "dense"
        self.threads = threads
        self.builder_timeout_s = builder_timeout_s
        self.target = host_target()
        self._database = None

    @property
    def ledger_path(self) -> Path:
        return self.db_dir / "tuning_ledger.jsonl"

    @property
    def database(self):
        from tvm.s_tir import meta_schedule as ms

        if self._database is None:
            self.db_dir.mkdir(parents=True, exist_ok=True)
            self._database = ms.database.JSONDatabase(work_dir=str(self.db_dir))
        return self._database

    def tasks(self, mod: tvm.IRModule) -> list[TuningTask]:
        """The MetaSchedule tasks of a Relax module (after legalize + fuse)."""
        import tvm_ffi
        from tvm.s_tir import meta_schedule as ms

        extracted = ms.relax_integration.extract_tasks(fuse_for_tuning(mod, self.target), self.target)
        out = []
        for task in extracted:
            workload = task.dispatched[0]
            out.append(TuningTask(task.task_name, workload, str(tvm_ffi.structural_hash(workload))))
        return out

    def trials_done(self, task: TuningTask) -> int:
        """Trials the ledger or the database credits ``task`` with."""
        ledger = max((e["trials"] for e in self._ledger() if e["key"] == task.key), default=0)
        recorded = 0
        if self.database.has_workload(task.workload):
            workload = self.database.commit_workload(task.workload)  # existing: nothing appended
            recorded = len(self.database.get_top_k(workload, 1 << 30))
        return max(ledger, recorded)

    def pending(self, tasks: Iterable[TuningTask]) -> list[tuple[TuningTask, int]]:
        """(task, trials still to run) for each distinct task short of the budget."""
        seen: set[str] = set()
        out = []
        for task in tasks:
            if task.key in seen:
                continue
            seen.add(task.key)
            missing = self.trials_per_task - self.trials_done(task)
            if missing > 0:
                out.append((task, missing))
        return out

    def tune(self, tasks: Sequence[TuningTask], log_dir: Path | None = None) -> list[dict[str, Any]]:
        """Tune every pending task (one after the other, ledger written after each)."""
        from tqdm import tqdm

        todo = self.pending(tasks) if self.trials_per_task else []
        done = []
        if not todo:
            return done
        log_dir = Path(log_dir or tempfile.mkdtemp(prefix="mcpruner_ms_logs_"))
        print(f"MetaSchedule logs: {log_dir}", flush=True)
        for task, missing in tqdm(todo, desc=f"MetaSchedule {self.trials_per_task} trials/task",
                                  unit="task", file=sys.stdout):
            done.append(self._tune_one(task, missing, log_dir))
        return done

    def tune_and_report(self, tasks: Sequence[TuningTask], tune: bool = True) -> dict[str, Any]:
        """Tune what is pending (unless ``tune`` is False), then say what the database holds."""
        distinct = {task.key: task for task in tasks}
        if self.trials_per_task:
            pending = self.pending(distinct.values())
            action = "nothing to tune" if not pending else "tuning them" if tune else "--no-tune: used as they are"
            print(f"TVM dense: {len(distinct)} distinct tasks, {len(pending)} short of "
                  f"{self.trials_per_task} trials ({action})", flush=True)
        tuned = self.tune(list(distinct.values())) if tune else []
        short = [{"task": task.name, "key": task.key, "trials_done": self.trials_per_task - missing}
                 for task, missing in (self.pending(distinct.values()) if self.trials_per_task else [])]
        return {"tasks": len(distinct), "tuned_this_run": tuned, "short_of_budget": short}

    def _tune_one(self, task: TuningTask, trials: int, log_dir: Path) -> dict[str, Any]:
        from tvm.s_tir import meta_schedule as ms

        # MetaSchedule measures in worker processes; give their TVM runtime our thread count.
        os.environ["TVM_NUM_THREADS"] = str(self.threads)
        start = time.perf_counter()
        work_dir = str(log_dir / f"{task.name}_{task.key}")
        context = ms.TuneContext(
            mod=task.workload, target=self.target, space_generator="post-order-apply",
            search_strategy="evolutionary", task_name=task.name, num_threads=self.threads,
            logger=ms.logging.get_loggers_from_work_dir(work_dir, [task.name])[0],
        )
        ms.tune_tasks(
            tasks=[context], task_weights=[1.0], work_dir=work_dir,
            max_trials_global=trials, max_trials_per_task=trials, num_trials_per_iter=min(64, trials),
            builder=ms.builder.LocalBuilder(timeout_sec=self.builder_timeout_s),
            runner=ms.runner.LocalRunner(), database=self.database,
            cost_model=ms.cost_model.XGBModel(
                extractor=ms.feature_extractor.PerStoreFeature(), adaptive_training=True,
                num_tuning_cores=self.threads),
        )
        entry = {
            "key": task.key, "task": task.name, "trials": self.trials_per_task,
            "records": self.trials_done_in_db(task), "seconds": round(time.perf_counter() - start, 1),
            "date": _dt.datetime.now().isoformat(timespec="seconds"),
        }
        with self.ledger_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        return entry

    def trials_done_in_db(self, task: TuningTask) -> int:
        if not self.database.has_workload(task.workload):
            return 0
        return len(self.database.get_top_k(self.database.commit_workload(task.workload), 1 << 30))

    def _ledger(self) -> list[dict[str, Any]]:
        if not self.ledger_path.exists():
            return []
        lines = self.ledger_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def compile(self, mod: tvm.IRModule):
        """Build ``mod`` dense: with the database applied, or TVM's default pipeline if untuned."""
        from tvm.s_tir import meta_schedule as ms

        if self.trials_per_task == 0:
            return tvm.compile(mod, target=self.target)
        return ms.relax_integration.compile_relax(self.database, mod, self.target, None)

    def describe(self) -> str:
        if self.trials_per_task == 0:
            return "untuned (TVM default CPU pipeline)"
        return (f"MetaSchedule, XGBoost cost model, {self.trials_per_task} trials per task, "
                f"database {self.db_dir.relative_to(REPO_ROOT) if self.db_dir.is_relative_to(REPO_ROOT) else self.db_dir}")


# ----------------------------------------------------------------------------- mcpruner
@dataclass
class SparseBuild:
    runner: Runner
    compiled: Any  # mcp.CompiledModel
    compile_s: float


def mcpruner_build(mod: tvm.IRModule, x: np.ndarray, threads: int, target: str = "host") -> SparseBuild:
    start = time.perf_counter()
    compiled = mcp.compile(mod, target=target, threads=threads)
    compile_s = time.perf_counter() - start
    arg = tvm.runtime.tensor(np.ascontiguousarray(x))
    main = compiled.vm["main"]
    return SparseBuild(lambda: main(arg), compiled, compile_s)


def nonzero_conv_macs(model: nn.Module, x: torch.Tensor,
                      kinds: tuple[type, ...] = (nn.Conv2d, nn.Linear)) -> tuple[int, int]:
    """(dense, non-zero) MACs of the ``kinds`` layers in one forward pass, from the weights."""
    dense = nonzero = 0
    handles = []

    def hook(module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal dense, nonzero
        weight = _effective_weight(module)
        pixels = int(out.shape[-2] * out.shape[-1]) if isinstance(module, nn.Conv2d) else 1
        batch = int(out.shape[0])
        dense += weight.numel() * pixels * batch
        nonzero += int(torch.count_nonzero(weight)) * pixels * batch

    for module in model.modules():
        if isinstance(module, kinds):
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for handle in handles:
            handle.remove()
    return dense, nonzero


def _effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight the module computes with (a torch.nn.utils.prune mask applied)."""
    return module.weight.detach()


# ----------------------------------------------------------------------------- peak
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


def tune_then_open_peak(tuner: DenseTuner, tasks: list, args: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
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
                        # constant operands: loading them from `ab` made LLVM keep `reg`
                        # in memory (a store per FMA: 156 instead of 462 GFLOP/s here)
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
    seconds = [_one_repeat(call, 5) / 1e3 for _ in range(repeats)]
    return flops / statistics.median(seconds) / 1e9


PEAK_PROBE = "peak-probe"


def fma_peak_probe(threads: int) -> tuple[Runner, float]:
    """The FMA loop as a runner to time *between* a workload's repeats: (runner, FLOPs per call).

    On a shared machine the capacity we get drifts within minutes (this host's FMA peak
    has read 250 and 540 GFLOP/s in one hour). Timed interleaved with a layer, the probe
    says what peak was available while that layer was timed; a row's percentage of it is
    the kernel's efficiency with the drift divided out. One call is ~0.3 ms at 500 GF/s.
    """
    return _fma_loop(threads, 100_000)


# ----------------------------------------------------------------------------- results
def run_info(threads: int, tuner: DenseTuner, repeats: int, tuning: dict[str, Any] | None = None) -> dict[str, Any]:
    """Machine, versions, command line and settings of this run."""
    import onnxruntime

    tuning = tuning or {"tasks": 0, "tuned_this_run": [], "short_of_budget": []}
    info = machine_info()
    info.update(
        threads=threads, cores_available=usable_cpus(),
        platform=platform.platform(),
        versions={"tvm": tvm.__version__, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                  "numpy": np.__version__, "tvm_mcpruner": mcp.__version__},
    )
    return {
        "machine": info,
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "repeats": repeats,
        "timing": "median over repeats of the mean of N back-to-back calls (N: >= 50 ms per repeat), "
                  f"after warm-up, repeats interleaved across frameworks with {SETTLE_S} s idle before each; "
                  "Python call overhead included for every framework alike",
        "tvm_dense": tuner.describe() + (
            f"; {len(tuning['short_of_budget'])} of {tuning['tasks']} tasks short of the budget "
            "(see tuning.short_of_budget)" if tuning["short_of_budget"] else ""),
        "tune_trials_per_task": tuner.trials_per_task,
        "tuning": tuning,
    }


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(out_dir: Path, stem: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    md_path.write_text(markdown + "\n", encoding="utf-8")
    return json_path, md_path


def publish(out_dir: Path, stem: str, payload: dict[str, Any], markdown: str, summary_end: str) -> dict[str, Any]:
    """:func:`write_results`, then print the markdown up to ``summary_end`` (the summary) and
    where the files went; returns ``payload``."""
    json_path, md_path = write_results(out_dir, stem, payload, markdown)
    print(markdown.split(summary_end)[0])
    print(f"wrote {json_path} and {md_path}")
    return payload


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def header_markdown(title: str, info: dict[str, Any], peak: dict[str, Any], wall_s: float) -> str:
    machine = info["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    return "\n".join([
        f"# {title}", "",
        f"- date: {info['date']}; wall time {wall_s:.0f} s",
        f"- command: `{info['command']}`",
        (f"- machine: {machine['cpu']} (LLVM cpu {machine['llvm_cpu']}), "
        f"{machine['cores_available']} CPUs available, **{machine['threads']} threads** for every framework"),
        f"- versions: {versions}",
        f"- TVM dense: {info['tvm_dense']}",
        f"- timing: {info['timing']}; {info['repeats']} repeats",
        (f"- peak, measured in this run before / after the benchmarks: {peak_pair(peak)}; "
        f"% of peak uses the largest, {peak['peak_gflops']} GFLOP/s ({peak['peak_source']})"),
    ])


def peak_pair(peak: dict[str, Any]) -> str:
    def one(p: dict[str, Any]) -> str:
        return f"torch {p['torch_gemm']} {p['torch_gemm_gflops']}, TVM FMA loop {p['tvm_fma_loop_gflops']} GFLOP/s"

    if "before" not in peak:
        return one(peak)
    return f"{one(peak['before'])} / {one(peak['after'])}"


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)


def setup(threads: int, verbose: bool = False) -> None:
    """Same thread count for torch, TVM's runtime (and MetaSchedule's workers); quiet logs."""
    set_threads(threads)
    os.environ["TVM_NUM_THREADS"] = str(threads)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
