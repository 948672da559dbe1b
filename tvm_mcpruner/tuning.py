"""``mcp.tune``: MetaSchedule + XGBoost over a pruned model, locally or over a ``tvm.rpc`` tracker.

What is tuned is exactly what ``mcp.compile`` builds: the model goes through the same
rewrite + legalization stage (``relay_passes.to_tir_stage``), and every PrimFunc in it
becomes a MetaSchedule task. Our sparse kernels are searched in their own design spaces
(``topi_sparse.pattern_conv2d_design_spaces``: register tile, loop order, store style);
the dense ops left in the model (first conv, depthwise, pooling, adds) get MetaSchedule's
standard rules, in the same run and the same log.

Measurements: ``LocalRunner`` on this machine, or ``RPCRunner`` through a tracker to
whatever servers are registered under the key (a HiKey970, an emulated aarch64 server,
several at once: the tracker spreads the sessions). Builds happen here; for aarch64 they
are linked with the cross compiler. Our kernels read index buffers, so they are measured
with the layer's real packed operands, never random indices (those would read out of
bounds).

The log (``tuning_log``) is only appended to, after every batch of measurements: a run
that is stopped keeps what it measured, and running the same command again resumes (the
trial budget counts what the log already holds for the model's tasks). Each sparse kernel's
default schedule is measured and logged first, and after the search the few fastest
schedules and the default are measured again, taking turns; ``mcp.compile`` applies the
schedule with the best median and keeps the default unless another beats it by
``tuning_log.CHOICE_MARGIN``, so a lucky run on a busy machine does not make a kernel
slower than its default. Before it measures anything, a run appends a line to
the log's ``provenance.jsonl`` saying who measures (runner, tracker and key, emulated or
not, this host's CPU, TVM version, date, budget); ``mcp.compile`` does not pick a log
with emulated timings by itself.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from tqdm.auto import tqdm
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms

import topi_sparse
from relay_passes import RewriteSparseConv2d, to_tir_stage

from . import rpc_farm
from .rpc_tracker import parse_tracker
from .targets import TargetPreset, get_preset, system_cpu_name, usable_cpus
from .tuning_log import (CONFIRMED_RUNS, RECORD_FILE, RankedTuningView, append_provenance, default_log_dir,
                         open_tuning_log, rank_tuned_records, target_signature)
from .tuning_measure import OperandStore, ProgressBar, export_function, make_runner

__all__ = ["TaskResult", "TuningReport", "tune"]

logger = logging.getLogger("tvm_mcpruner")

SEARCHES = ("xgb", "random")
# After the search, this many of each task's fastest schedules (and our kernel's default)
# are measured again: see ``tune(confirm_rounds=...)``.
CONFIRM_CANDIDATES = 3
CONFIRM_ROUNDS = CONFIRMED_RUNS - 1  # with the search's run: what compile needs to replace a default


@dataclass
class TaskResult:
    """One tuned PrimFunc: ``kind`` is "sparse" (our kernel) or "dense" (a TVM op).

    ``trials``: distinct schedules measured (the log may hold more runs of them);
    ``best_ms``: median time of the schedule ``mcp.compile`` applies
    (``tuning_log.rank_tuned_records``); ``default_ms``: median of the default's runs;
    ``kept_default``: whether that schedule is our kernel's default (None: not our kernel).
    """

    name: str
    kind: str
    weight: int
    trials: int
    best_ms: float | None
    default_ms: float | None = None
    kept_default: bool | None = None

    @property
    def speedup_over_default(self) -> float | None:
        if self.best_ms is None or self.default_ms is None:
            return None
        return self.default_ms / self.best_ms


@dataclass
class TuningReport:
    """What a tuning run did; ``tasks`` holds one :class:`TaskResult` per task."""

    log_dir: Path
    target: str
    runner: str
    search: str
    trials_run: int
    wall_s: float
    tasks: list[TaskResult] = field(default_factory=list)
    emulated: bool | None = False  # None: not known whether the RPC servers were emulated

    def summary(self) -> str:
        measured = {True: "; EMULATED (qemu) timings, not device timings: compile's 'auto' skips this log",
                    None: "; provenance unknown (emulated=None: pass emulated=False for a board)",
                    False: ""}[self.emulated]
        lines = [f"tuned for {self.target} via {self.runner} ({self.search}): {self.trials_run} trials "
                 f"in {self.wall_s:.0f} s; log {self.log_dir}{measured}",
                 f"  {'task':<34} {'kind':<6} {'trials':>6} {'default ms':>11} {'best ms':>9} {'gain':>6}"]
        for t in self.tasks:
            default = f"{t.default_ms:.4f}" if t.default_ms is not None else "-"
            best = f"{t.best_ms:.4f}" if t.best_ms is not None else "-"
            gain = f"{t.speedup_over_default:.2f}x" if t.speedup_over_default else "-"
            lines.append(f"  {t.name[:34]:<34} {t.kind:<6} {t.trials:>6} {default:>11} {best:>9} {gain:>6}")
        return "\n".join(lines)


def tune(
    mod: tvm.IRModule,
    target: "str | TargetPreset" = "host",
    *,
    trials: int = 64,
    log_dir: str | os.PathLike | None = None,
    tracker: str | None = None,
    key: str | None = None,
    search: str = "xgb",
    sparse_only: bool = False,
    trials_per_iter: int = 16,
    timeout_s: float = 60,
    evaluator: ms.runner.EvaluatorConfig | None = None,
    threads: int | None = None,
    progress: bool = True,
    seed: int = 0,
    emulated: bool | None = None,
    confirm_rounds: int = CONFIRM_ROUNDS,
) -> TuningReport:
    """Tune ``mod`` (as ``mcp.compile`` would build it) for ``target``; append to its log.

    ``trials``: the measurement budget for this model's tasks, counting what ``log_dir``
    already holds for them (a repeated call resumes). ``log_dir`` defaults to
    ``./autotune_logs/<device>`` under the current folder. ``tracker`` ("HOST:PORT") and
    ``key`` measure on the RPC servers registered there; without them, here. ``search`` is
    "xgb" (evolutionary search guided by MetaSchedule's XGBoost cost model) or "random"
    (replayed random samples of the same spaces). ``sparse_only`` skips TVM's dense ops.
    ``threads`` sizes the thread pool of local measurements (default: the preset's).

    ``trials`` counts distinct schedules. When the search measured something new, each
    task's ``CONFIRM_CANDIDATES`` fastest schedules and our kernels' default are measured
    ``confirm_rounds`` more times, taking turns, and every run is logged: the search
    measures a candidate once, and on a busy machine one lucky run could otherwise decide
    which schedule ``mcp.compile`` applies (it takes the median of a schedule's runs).

    ``emulated`` says whether the RPC servers are emulated (qemu); it goes into the log's
    ``provenance.jsonl``, and ``mcp.compile(tuning_log="auto")`` skips a log holding
    emulated timings. None (default): False for local measurements; over RPC, True when
    the key names an emulator (contains "qemu" or "emul", as ``arm_emulation.RPC_KEY``)
    or this process started an emulated server under that key
    (``rpc_farm.start_server(..., emulate_aarch64=True)``), else unknown (recorded as
    null; the log is still applied). ``emulated=False`` for such a key is refused.
    """
    # Every argument is checked, and the tracker asked, before anything is written.
    preset, key = check_tune_arguments(target, trials=trials, tracker=tracker, key=key, search=search,
                                       trials_per_iter=trials_per_iter, confirm_rounds=confirm_rounds)
    emulated = _resolve_emulated(emulated, tracker, key)
    tvm_target = preset.tvm_target()
    if tvm_target.kind.name == "llvm":
        _skip_cuda_tensor_intrinsics()
    log_dir = Path(log_dir) if log_dir is not None else default_log_dir(preset)
    start = time.perf_counter()

    with tvm_target:
        lowered = to_tir_stage(preset, RewriteSparseConv2d(preset))(mod)
    extracted = ms.relax_integration.extract_tasks(lowered, tvm_target)
    work_dir = Path(tempfile.mkdtemp(prefix="mcpruner-tune-"))
    contexts, weights, kinds = _tune_contexts(extracted, preset, search, sparse_only, work_dir, seed)
    if not contexts:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise ValueError("nothing to tune: the model has no PrimFunc that is not scheduled already")
    # The log folder is created only now that there is something to measure.
    database = open_tuning_log(log_dir, tvm_target, create=True)
    operands = OperandStore(work_dir / "operands")
    operands.save_from(lowered)
    # Before the first measurement: a run stopped half-way is still on record.
    append_provenance(log_dir, {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runner": "rpc" if tracker else "local",
        "tracker": tracker, "key": key if tracker else None, "emulated": emulated,
        "host_cpu": system_cpu_name(), "tvm": tvm.__version__, "trials": trials, "search": search,
        "target": target_signature(tvm_target), "records_before": _count_lines(log_dir / RECORD_FILE),
    })

    # MetaSchedule's default build imports every tensor intrinsic first (~30 s per batch).
    builder = ms.builder.LocalBuilder(f_build=rpc_farm.build_without_tensor_intrinsics,
                                      f_export=export_function(preset), max_workers=1,
                                      timeout_sec=max(timeout_s, 120))  # a cold worker imports TVM first
    runner = make_runner(preset, tracker, key, operands, timeout_s, evaluator, threads)
    runner_name = f"RPC tracker {tracker} key {key!r}" if tracker else "this machine (LocalRunner)"
    for i, ctx in enumerate(contexts):
        if kinds[i] == "sparse":
            _measure_default(ctx, preset.family, database, builder, runner)
    done = sum(_schedules_measured(database, ctx) for ctx in contexts)
    budget = max(0, trials - done)
    if done:
        logger.info("tuning log %s already holds %d schedules of these %d tasks; %d more to run",
                    log_dir, done, len(contexts), budget)
    if budget:
        # MetaSchedule draws its per-task table with pandas (not a requirement here) and
        # clears the cell's output when it believes it runs in Jupyter; plain text goes
        # to its log files instead, and our tqdm bar shows the progress.
        tvm.register_global_func("s_tir.meta_schedule.using_ipython", lambda: False, override=True)
        bar = ProgressBar(budget, [ctx.task_name for ctx in contexts], enabled=progress)
        try:
            ms.tune.tune_tasks(
                tasks=contexts, task_weights=weights, work_dir=str(work_dir),
                max_trials_global=budget, num_trials_per_iter=min(trials_per_iter, budget),
                builder=builder, runner=runner, database=RankedTuningView(database, writable=True),
                cost_model=_cost_model(search), task_scheduler="gradient",
                measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), bar],
            )
        finally:
            bar.close()
        for ctx in _progress(contexts, "confirming the best schedules", progress and confirm_rounds > 0):
            _confirm_best(ctx, preset.family, database, builder, runner, confirm_rounds)
    tasks = [
        TaskResult(name=ctx.task_name, kind=kinds[i], weight=int(weights[i]),
                   trials=_schedules_measured(database, ctx), **_chosen_ms(database, ctx, preset.family))
        for i, ctx in enumerate(contexts)
    ]
    return TuningReport(log_dir=log_dir, target=preset.name, runner=runner_name, search=search,
                        trials_run=budget, wall_s=time.perf_counter() - start, tasks=tasks,
                        emulated=emulated)


def check_tune_arguments(target: "str | TargetPreset", *, trials: int, tracker: str | None = None,
                         key: str | None = None, search: str = "xgb", trials_per_iter: int = 16,
                         confirm_rounds: int = CONFIRM_ROUNDS) -> tuple[TargetPreset, str | None]:
    """Check :func:`tune`'s arguments and ask the tracker (5 s at most); ``(preset, key)``.

    Raises a ``ValueError`` naming the argument (``TrackerUnreachableError`` for a tracker
    that does not answer) and writes nothing, so that callers such as the CLI can refuse
    bad input before they spend minutes preparing a model.
    """
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    for name, value, least in (("trials", trials, 1), ("trials_per_iter", trials_per_iter, 1),
                               ("confirm_rounds", confirm_rounds, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    preset = get_preset(target)
    if (tracker is None) != (key is None) and not (tracker and preset.rpc_key):
        raise ValueError("give both tracker and key (or neither, to measure on this machine)")
    if tracker is not None:
        rpc_farm.tracker_summary(parse_tracker(tracker, loopback_only=False), timeout=5.0)
    return preset, key or preset.rpc_key


def _resolve_emulated(emulated: bool | None, tracker: str | None, key: str | None) -> bool | None:
    """Whether the measurements will be emulated: see ``tune(emulated=...)``."""
    if emulated not in (True, False, None):
        raise TypeError(f"emulated must be True, False or None, got {emulated!r}")
    if tracker is None:
        return False if emulated is None else emulated
    if rpc_farm.key_names_emulator(key) or rpc_farm.emulated_server_running(tracker, key):
        if emulated is False:
            raise ValueError(f"emulated=False, but the servers under key {key!r} are emulated (the key "
                             f"names an emulator, or this process started them with emulate_aarch64); "
                             "their timings are not device timings")
        return True
    if emulated is None:
        logger.warning("tuning over RPC key %r: not known whether its servers are emulated; the log's "
                       "provenance says unknown (pass emulated=False / --no-emulated for a real board, "
                       "emulated=True / --emulated for qemu)", key)
    return emulated


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


# --------------------------------------------------------------------------- tasks


def _tune_contexts(extracted, preset: TargetPreset, search: str, sparse_only: bool,
                   work_dir: Path, seed: int):
    contexts, weights, kinds = [], [], []
    loggers = ms.logging.get_loggers_from_work_dir(str(work_dir), [t.task_name for t in extracted])
    for task, rand_state, task_logger in zip(extracted, ms.utils.fork_seed(seed, n=len(extracted)), loggers):
        func = task.dispatched[0]["main"]
        if func.attrs and func.attrs.get("tirx.is_scheduled", False):
            continue
        sparse = topi_sparse.is_kernel(func)
        if sparse_only and not sparse:
            continue
        space = _sparse_space(preset.family) if sparse else "post-order-apply"
        strategy = "evolutionary" if search == "xgb" else ms.search_strategy.ReplayTrace()
        contexts.append(ms.TuneContext(
            mod=task.dispatched[0], target=task.target, space_generator=space,
            search_strategy=strategy, task_name=task.task_name, rand_state=rand_state,
            num_threads=usable_cpus(),
            logger=task_logger,
        ).clone())
        weights.append(float(task.weight))
        kinds.append("sparse" if sparse else "dense")
    return contexts, weights, kinds


def _skip_cuda_tensor_intrinsics() -> None:
    """Stand in an empty module for TVM's CUDA tensor intrinsics, in this process.

    The first TuneContext imports ``tvm.s_tir.tensor_intrin``, every intrinsic TVM has;
    parsing the CUDA ones alone takes ~30 s of CPU (two minutes on a busy 2-core
    machine). CPU schedules never use them; the x86 / arm ones still register.
    """
    import sys
    import types

    name = "tvm.s_tir.tensor_intrin.cuda"
    if "tvm.s_tir.tensor_intrin" not in sys.modules and name not in sys.modules:
        sys.modules[name] = types.ModuleType(name, "not loaded: CPU tuning (see tvm_mcpruner.tuning)")


def _sparse_space(family: str) -> ms.space_generator.ScheduleFn:
    # Our spaces are complete schedules: no rules or postprocessors to add; the tiles
    # are sample_perfect_tile decisions, which MutateTileSize explores.
    return ms.space_generator.ScheduleFn(
        lambda sch: topi_sparse.pattern_conv2d_design_spaces(sch, family),
        sch_rules=[], postprocs=[], mutator_probs={ms.mutator.MutateTileSize(): 1.0},
    )


def _cost_model(search: str) -> ms.cost_model.CostModel:
    if search == "random":
        return ms.cost_model.RandomModel()
    return ms.cost_model.XGBModel(extractor=ms.feature_extractor.PerStoreFeature(),
                                  adaptive_training=True, num_tuning_cores=usable_cpus())


def _measure_default(ctx: ms.TuneContext, family: str, database, builder, runner) -> None:
    """Measure our kernel's default schedule once and log it, unless the log has it already.

    With it logged, the choice among records (``rank_tuned_records``) compares every
    tuned schedule with the one ``mcp.compile`` would use without a log.
    """
    trace = topi_sparse.default_schedule_trace(ctx.mod, family)
    logged = rank_tuned_records(database, database.commit_workload(ctx.mod))
    if any(str(record.trace) == str(trace) for record in logged):
        return
    (times,) = _measure_and_log(ctx, [trace], database, builder, runner)
    if not times:
        raise RuntimeError(f"measuring the default schedule of {ctx.task_name} failed (see the log above)")


def _confirm_best(ctx: ms.TuneContext, family: str, database, builder, runner, rounds: int) -> None:
    """Measure the task's fastest few schedules and the default ``rounds`` more times each."""
    if rounds <= 0:
        return
    ranked = rank_tuned_records(database, database.commit_workload(ctx.mod), family)
    traces = [record.trace for record in ranked[:CONFIRM_CANDIDATES]]
    default = topi_sparse.default_schedule_trace(ctx.mod, family)
    if default is not None and str(default) not in {str(t) for t in traces}:
        traces.append(default)
    _measure_and_log(ctx, traces, database, builder, runner, rounds)


def _measure_and_log(ctx: ms.TuneContext, traces: list, database, builder, runner,
                     rounds: int = 1) -> list[list[float]]:
    """Build each trace once, then measure all of them ``rounds`` times, taking turns.

    Every successful run is committed to ``database`` as its own record (the log is only
    appended to); a failed build or run is logged as a warning and leaves no record.
    Returns each trace's per-run median times in ms.
    """
    workload = database.commit_workload(ctx.mod)
    args_info = ms.arg_info.ArgInfo.from_prim_func(ctx.mod["main"])
    inputs = []
    for trace in traces:
        sch = s_tir.Schedule(ctx.mod)
        trace.apply_to_schedule(sch, remove_postproc=False)
        inputs.append(ms.builder.BuilderInput(sch.mod, ctx.target))
    built = builder.build(inputs)
    for result in built:
        if result.error_msg:
            logger.warning("%s: building a schedule failed:\n%s", ctx.task_name, result.error_msg)
    ok = [i for i, result in enumerate(built) if not result.error_msg]
    times: list[list[float]] = [[] for _ in traces]
    for _ in range(rounds):
        futures = runner.run([ms.runner.RunnerInput(built[i].artifact_path, "cpu", args_info) for i in ok])
        for i, future in zip(ok, futures):
            result = future.result()
            if result.error_msg:
                logger.warning("%s: measuring a schedule failed:\n%s", ctx.task_name, result.error_msg)
                continue
            run_secs = [float(s) for s in result.run_secs]
            database.commit_tuning_record(ms.database.TuningRecord(
                traces[i], workload, run_secs, ctx.target, args_info))
            times[i].append(_median_ms(run_secs))
    return times


def _schedules_measured(database, ctx: ms.TuneContext) -> int:
    return len(rank_tuned_records(database, database.commit_workload(ctx.mod)))


def _chosen_ms(database, ctx: ms.TuneContext, family: str) -> dict[str, Any]:
    """Median ms of the schedule compile applies (``best_ms``) and of the default
    (``default_ms``), and whether they are the same schedule (``kept_default``)."""
    ranked = rank_tuned_records(database, database.commit_workload(ctx.mod), family)
    if not ranked:
        return {"best_ms": None}
    default = topi_sparse.default_schedule_trace(ctx.mod, family)
    if default is None:
        return {"best_ms": float(ranked[0].run_secs[0]) * 1e3}
    ms_by_trace = {str(r.trace): float(r.run_secs[0]) * 1e3 for r in ranked}
    return {"best_ms": ms_by_trace[str(ranked[0].trace)], "default_ms": ms_by_trace.get(str(default)),
            "kept_default": str(ranked[0].trace) == str(default)}


def _median_ms(run_secs) -> float:
    return float(np.median([float(s) for s in run_secs])) * 1e3


def _progress(items: list, description: str, enabled: bool):
    return tqdm(items, desc=description, unit="task", disable=not enabled)
