"""Result files of the benchmark scripts: ``<stem>.json`` and ``<stem>.md``.

:func:`run_info` says what ran where (machine, versions, command, timing rule, TVM dense
tuning budget); :func:`header_markdown` opens a report with it; :func:`write_results`
and :func:`publish` write both files; :func:`md_table` and :func:`fmt` format tables.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import _repo  # noqa: F401  (puts the repository on sys.path)
import numpy as np
import torch
import tvm
from _timing import SETTLE_S

import tvm_mcpruner as mcp
from tvm_mcpruner.benchmark import machine_info
from tvm_mcpruner.targets import usable_cpus

if TYPE_CHECKING:
    from _dense_tuning import DenseTuner


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
        "same_isa": _same_isa_note(info),
        "tuning": tuning,
    }


def _same_isa_note(machine: dict[str, Any]) -> str | None:
    """What ran on which ISA when the host preset is built for a narrower CPU (a proxy run)."""
    from _runners import same_isa_dense_frameworks

    held = same_isa_dense_frameworks()
    if held is None:
        return None
    return (f"mcpruner and TVM dense built for LLVM cpu {machine.get('built_for_llvm_cpu')} on a "
            f"{machine.get('llvm_cpu')} host; torch/oneDNN "
            + (f"held to ONEDNN_MAX_CPU_ISA={os.environ['ONEDNN_MAX_CPU_ISA']}" if "torch" in held
               else "unrestricted (ONEDNN_MAX_CPU_ISA not set)")
            + "; onnxruntime unrestricted (MLAS picks its kernels from CPUID, no switch); "
            f"same-ISA speedups compare against {' / '.join(held)} only")


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table (cells written with ``str``)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(out_dir: Path, stem: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``<out_dir>/<stem>.json`` (``payload``) and ``<out_dir>/<stem>.md``; returns both paths."""
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
    """The report's title and what ran where (from :func:`run_info` and the run's peak)."""
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
        *([f"- ISA proxy: {info['same_isa']}"] if info.get("same_isa") else []),
    ])


def peak_pair(peak: dict[str, Any]) -> str:
    """Both probes' GFLOP/s of a peak (before / after, where it holds both)."""
    def one(p: dict[str, Any]) -> str:
        return f"torch {p['torch_gemm']} {p['torch_gemm_gflops']}, TVM FMA loop {p['tvm_fma_loop_gflops']} GFLOP/s"

    if "before" not in peak:
        return one(peak)
    return f"{one(peak['before'])} / {one(peak['after'])}"


def fmt(value: float | None, spec: str = ".2f") -> str:
    """``value`` formatted with ``spec``; "-" for None or NaN."""
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)
