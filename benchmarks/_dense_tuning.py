"""TVM dense baselines: MetaSchedule (XGBoost cost model) tuning kept in a tuning log.

:class:`DenseTuner` tunes the tasks of a dense Relax model (after TVM's own legalize +
fuse, as ``compile_relax`` sees them) and builds the model with its log applied. The
log is a folder in the project's format (``tvm_mcpruner.tuning_log``),
``<root>/<device>/dense/``: MetaSchedule's ``database_workload.json`` +
``database_tuning_record.json``, opened with ``open_tuning_log`` (checked, one target per
folder), and ``provenance.jsonl``, one line appended by each tuning run before it
measures. Everything the tuner knows about a task comes from that log: the trials a task
has had are the successful measurements the log holds for its workload.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _repo import REPO_ROOT  # first: puts the repository on sys.path
import tvm
from _runners import host_target
from tvm import relax

import tvm_mcpruner as mcp
from tvm_mcpruner.targets import system_cpu_name
from tvm_mcpruner.tuning_log import append_provenance, device_name, open_tuning_log, target_signature


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
    """One MetaSchedule task of a dense model."""

    name: str
    workload: tvm.IRModule
    key: str  # structural hash of the workload: tasks with one key are one task


class DenseTuner:
    """TVM dense baseline: MetaSchedule (XGBoost cost model) with its tuning log.

    The log lives in ``<root>/<device>/dense/`` (``device``: ``tuning_log.device_name`` of
    the host preset). A task is tuned only when the log holds fewer than
    ``trials_per_task`` successful measurements of it, and then only for the missing
    trials, so reruns with the same or a smaller budget tune nothing.
    ``trials_per_task == 0`` means untuned (TVM's default lowering).
    """

    def __init__(self, trials_per_task: int, root: Path = REPO_ROOT / "autotune_logs",
                 threads: int = 2, builder_timeout_s: float = 120.0):
        if trials_per_task < 0:
            raise ValueError(f"trials_per_task must be >= 0, got {trials_per_task}")
        self.trials_per_task = trials_per_task
        # A folder of its own, below mcp.tune's: mcp.compile must never apply the
        # baseline's schedules to mcpruner's builds.
        self.log_dir = Path(root) / device_name(mcp.get_preset("host")) / "dense"
        self.threads = threads
        self.builder_timeout_s = builder_timeout_s
        self.target = host_target()
        self._database = None

    @property
    def database(self) -> Any:
        """The log as a MetaSchedule ``JSONDatabase``: checked and created on first use."""
        if self._database is None:
            self._database = open_tuning_log(self.log_dir, self.target, create=True)
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
        """Trials the log credits ``task`` with: its successful measurements there."""
        if not self.database.has_workload(task.workload):
            return 0
        workload = self.database.commit_workload(task.workload)  # logged already: nothing appended
        return len(self.database.get_top_k(workload, 1 << 30))

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

    def tune(self, tasks: Sequence[TuningTask], work_dir: Path | None = None) -> list[dict[str, Any]]:
        """Tune every pending task, one after the other; returns what each got.

        ``work_dir`` takes MetaSchedule's per-task text logs (default: a new temporary
        folder); the measurements go to the tuning log.
        """
        from tqdm import tqdm

        todo = self.pending(tasks) if self.trials_per_task else []
        done: list[dict[str, Any]] = []
        if not todo:
            return done
        work_dir = Path(work_dir or tempfile.mkdtemp(prefix="mcpruner_ms_logs_"))
        print(f"MetaSchedule logs: {work_dir}", flush=True)
        self._append_provenance()
        for task, missing in tqdm(todo, desc=f"MetaSchedule {self.trials_per_task} trials/task",
                                  unit="task", file=sys.stdout):
            done.append(self._tune_one(task, missing, work_dir))
        return done

    def tune_and_report(self, tasks: Sequence[TuningTask], tune: bool = True) -> dict[str, Any]:
        """Tune what is pending (unless ``tune`` is False), then say what the log holds."""
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

    def _append_provenance(self) -> None:
        """Say who measures, before the first measurement: a run stopped half-way is on record too."""
        append_provenance(self.log_dir, {
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "runner": "local", "tracker": None, "key": None, "emulated": False,
            "host_cpu": system_cpu_name(), "tvm": tvm.__version__, "trials": self.trials_per_task,
            "search": "xgb", "target": target_signature(self.target), "records_before": len(self.database),
            "note": "TVM dense baseline (benchmarks/_dense_tuning.py): trials per task",
        })

    def _tune_one(self, task: TuningTask, trials: int, work_dir: Path) -> dict[str, Any]:
        from tvm.s_tir import meta_schedule as ms

        # MetaSchedule measures in worker processes; give their TVM runtime our thread count.
        os.environ["TVM_NUM_THREADS"] = str(self.threads)
        start = time.perf_counter()
        task_dir = str(work_dir / f"{task.name}_{task.key}")
        context = ms.TuneContext(
            mod=task.workload, target=self.target, space_generator="post-order-apply",
            search_strategy="evolutionary", task_name=task.name, num_threads=self.threads,
            logger=ms.logging.get_loggers_from_work_dir(task_dir, [task.name])[0],
        )
        ms.tune_tasks(
            tasks=[context], task_weights=[1.0], work_dir=task_dir,
            max_trials_global=trials, max_trials_per_task=trials, num_trials_per_iter=min(64, trials),
            builder=ms.builder.LocalBuilder(timeout_sec=self.builder_timeout_s),
            runner=ms.runner.LocalRunner(), database=self.database,
            cost_model=ms.cost_model.XGBModel(
                extractor=ms.feature_extractor.PerStoreFeature(), adaptive_training=True,
                num_tuning_cores=self.threads),
        )
        return {
            "key": task.key, "task": task.name, "trials": self.trials_per_task,
            "records": self.trials_done(task), "seconds": round(time.perf_counter() - start, 1),
            "date": _dt.datetime.now().isoformat(timespec="seconds"),
        }

    def compile(self, mod: tvm.IRModule) -> Any:
        """Build ``mod`` dense: with the log applied, or TVM's default pipeline if untuned."""
        from tvm.s_tir import meta_schedule as ms

        if self.trials_per_task == 0:
            return tvm.compile(mod, target=self.target)
        return ms.relax_integration.compile_relax(self.database, mod, self.target, None)

    def describe(self) -> str:
        """One line for the results: how TVM dense was built, and from which log."""
        if self.trials_per_task == 0:
            return "untuned (TVM default CPU pipeline)"
        where = self.log_dir.relative_to(REPO_ROOT) if self.log_dir.is_relative_to(REPO_ROOT) else self.log_dir
        return f"MetaSchedule, XGBoost cost model, {self.trials_per_task} trials per task, tuning log {where}"
