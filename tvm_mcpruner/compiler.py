"""``mcp.compile``: our Relax pipeline + ``tvm.compile``, wrapped for numpy in/out."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from tvm import relax

from relay_passes import ApplyTuningDatabase, RewriteSparseConv2d, SparseLayerRecord, mcpruner_pipeline

from .sparse_format import MIN_MAC_REDUCTION
from . import targets
from .targets import TargetPreset, get_preset, usable_cpu_ids
from .thread_pool import configure_thread_pool
from .tuning_log import (LogProvenance, RankedTuningView, find_tuning_log, log_provenance, open_tuning_log,
                         target_signature)

__all__ = ["CompiledModel", "SparseLayerRecord", "compile", "set_tvm_threads"]

logger = logging.getLogger("tvm_mcpruner")


class CompiledModel:
    """A compiled model: call it with numpy arrays (or torch tensors), get numpy back.

    ``sparse_layers`` holds one :class:`SparseLayerRecord` per conv layer (name, sparse,
    reason, kernel, MAC reduction); ``executable`` is the ``tvm.relax.VMExecutable``;
    ``tuning_log`` the log folder whose schedules were applied (None: defaults only),
    ``tuning_log_provenance`` who measured it (``.status``: "hardware", "unknown" or
    "emulated"), ``tuned_functions`` the PrimFuncs that got a schedule from it and
    ``tuned_knobs`` the knobs of those that are our sparse kernels and got other knobs
    than their defaults (by function name; None: the log does not say which).

    ``device`` is where this process runs the code (the target's kind picks it); None
    when it cannot (``cannot_run_here`` says why and how to run it: code for another CPU
    or for a runtime this TVM build lacks, such as OpenCL, is exported and run on its
    device over ``tvm.rpc``). Calling the model there raises that message.

    Non-finite inputs: a pruned weight is absent, not a multiplication by zero, so a NaN
    or Inf in the input reaches only the outputs that a *kept* weight connects it to (a
    dense conv, or torch on the masked weights, spreads it through the zeros too: 0 * NaN
    is NaN). ``cm(x, check_finite=True)`` refuses non-finite inputs instead.

    Calling it from several threads at once is safe: calls take turns (one lock per
    model). Each call already runs on all the preset's threads, so turns cost no
    throughput, and TVM's VM keeps per-call state in one register file that two calls
    at once would share.
    """

    def __init__(
        self,
        executable,
        preset: TargetPreset,
        sparse_layers: list[SparseLayerRecord],
        threads: int | None = None,
        tuning_log: Path | None = None,
        tuned_functions: list[str] | None = None,
        tuning_log_provenance: LogProvenance | None = None,
        tuned_knobs: dict | None = None,
        no_log_reason: str = "none (default schedules)",
    ):
        self.executable = executable
        self.preset = preset
        self.sparse_layers = sparse_layers
        self.tuning_log = tuning_log
        self.tuning_log_provenance = tuning_log_provenance
        self.tuned_functions = list(tuned_functions or [])
        self.tuned_knobs = dict(tuned_knobs or {})
        self.threads = threads or preset.threads
        self.no_log_reason = no_log_reason
        self.device, self.cannot_run_here = _device_for(preset.tvm_target())
        self._vm = None
        self._lock = threading.Lock()

    @property
    def vm(self) -> relax.VirtualMachine:
        if self._vm is None:
            if self.device is None:
                raise RuntimeError(f"{self.preset.name}: {self.cannot_run_here}")
            set_tvm_threads(self.threads)
            self._vm = relax.VirtualMachine(self.executable, self.device)
        return self._vm

    def __call__(self, *inputs: Any, check_finite: bool = False) -> np.ndarray | tuple[np.ndarray, ...]:
        if check_finite:
            for i, x in enumerate(inputs):
                if not np.isfinite(_as_numpy(x)).all():
                    raise ValueError(f"input {i} holds NaN or Inf (check_finite=True)")
        with self._lock:
            vm = self.vm  # first: says how to run code this process cannot
            out = vm["main"](*[tvm.runtime.tensor(_as_numpy(x), self.device) for x in inputs])
            return _to_numpy(out)

    def time(self, *inputs: Any, number: int = 10, repeat: int = 5) -> list[float]:
        """Seconds per call, one entry per repeat (each the mean of ``number`` calls)."""
        with self._lock:
            timer = self.vm.time_evaluator("main", self.device, number=number, repeat=repeat)
            args = [tvm.runtime.tensor(_as_numpy(x), self.device) for x in inputs]
            return list(timer(*args).results)

    @property
    def num_sparse_layers(self) -> int:
        return sum(r.sparse for r in self.sparse_layers)

    def export_library(self, path: str, **kwargs: Any) -> None:
        self.executable.export_library(path, **kwargs)

    def summary(self) -> str:
        lines = [f"compiled for {self.preset.name}: {self.num_sparse_layers} of "
                 f"{len(self.sparse_layers)} conv layers sparse"]
        if self.tuning_log is None:
            lines.append(f"  tuning log: {self.no_log_reason}")
        else:
            provenance = self.tuning_log_provenance or LogProvenance()
            lines.append(f"  tuning log: {self.tuning_log} ({len(self.tuned_functions)} functions "
                         f"scheduled from it; {provenance.describe()})")
        lines += [f"  {r}{self._tuned_note(r.function)}" for r in self.sparse_layers]
        return "\n".join(lines)

    def _tuned_note(self, function: str) -> str:
        if function not in self.tuned_functions:
            return ""
        if function not in self.tuned_knobs:
            return "  [tuning log: default kept]"
        knobs = self.tuned_knobs[function]
        return f"  [tuned: {knobs.describe()}]" if knobs else "  [tuned]"


def _device_for(target: tvm.target.Target) -> tuple[Any, str | None]:
    """(device, None) where this process can run code built for ``target``, else (None, why)."""
    how = "export_library() it and run it on its device (over tvm.rpc: mcpruner server / tracker)"
    if target.kind.name == "llvm":
        triple = str(target.attrs.get("mtriple", "") or "")
        here = str(tvm.target.codegen.llvm_get_system_triple())
        if triple and triple.split("-")[0] != here.split("-")[0]:
            return None, (f"built for {triple}, and this machine is {here}: {how}; "
                          "python -m tvm_mcpruner.arm_emulation runs aarch64 code under qemu")
        missing = _missing_isa(target)
        if missing:
            return None, (f"built for {target.attrs.get('mcpu')}, whose code uses {', '.join(missing)}, which "
                          f"this CPU lacks (running it would die of an illegal instruction): {how}, or "
                          "compile for 'host'")
        return tvm.cpu(), None
    device = tvm.device(target.kind.name)
    if not device.exist:
        return None, (f"this TVM build or machine has no {target.kind.name} device (the apache-tvm wheel "
                      f"has no OpenCL runtime): {how}, with a TVM runtime built for it")
    return device, None


# x86 ISA extensions by the names LLVM and /proc/cpuinfo share: code built for a CPU with
# one of them may use it anywhere, so a host without it must not run that code.
_CHECKED_ISA = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd")


def _missing_isa(target: tvm.target.Target) -> list[str]:
    """The extensions ``target``'s code may use that this CPU lacks (x86 only; [] elsewhere)."""
    flags = targets.cpu_flags()
    if not flags or not str(tvm.target.codegen.llvm_get_system_triple()).startswith("x86_64"):
        return []
    features = {str(f) for f in tvm.target.codegen.llvm_get_cpu_features(target)}
    return [isa for isa in _CHECKED_ISA if isa in features and isa not in flags]


def set_tvm_threads(threads: int) -> None:
    """Size TVM's CPU thread pool to ``threads`` workers sharing this process's CPUs.

    TVM's default pool on x86 is half the logical CPUs, and its "big cores" mode (1) pins
    the caller and its workers to cores, which on a VM can put two workers on one core.
    The "all" cluster (kSpecifyThreadShareAllCore) lets every worker run on any CPU the
    process may use: the OS spreads them.
    """
    cpus = usable_cpu_ids()
    configure_thread_pool("all", threads, cpus=cpus)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)  # keep torch/onnxruntime threads free to use every CPU


def compile(  # noqa: A001 - the public name mirrors tvm.compile
    mod: tvm.IRModule,
    target: "str | TargetPreset" = "host",
    *,
    min_mac_reduction: float = MIN_MAC_REDUCTION,
    threads: int | None = None,
    tuning_log: "str | os.PathLike | None" = "auto",
) -> CompiledModel:
    """Rewrite pruned convs into sparse kernels and build ``mod`` for a target preset.

    Convs whose weights carry no aligned sparsity still run our kernel as a direct dense
    conv; convs it cannot run stay TVM's (``CompiledModel.sparse_layers`` says which).

    Parameters
    ----------
    mod : tvm.IRModule
        A Relax module whose conv weights are bound constants (``from_torch`` / ``from_onnx``).
    target : str or TargetPreset
        The preset (``tvm_mcpruner.targets.preset_names()``).
    min_mac_reduction : float
        A conv runs as sparse only when its packed weight issues this many times fewer MACs.
    threads : int, optional
        TVM's thread pool size when the model first runs (default: the preset's cores).
    tuning_log : "auto", path or None
        "auto" applies the log under ``autotune_logs/`` measured for this target (see
        ``mcp.tune``), if there is one and its provenance does not say emulated (qemu); a
        folder applies that log (an error if it is malformed or for another target, a
        warning if its timings are emulated); None uses the default schedules.

    Returns
    -------
    compiled : CompiledModel
        Call it with numpy arrays or torch tensors; ``summary()`` says which layers run
        sparse and which tuning log (if any) was applied.
    """
    if not isinstance(mod, tvm.IRModule) or "main" not in [g.name_hint for g in mod.get_global_vars()]:
        raise TypeError("mcp.compile expects a Relax IRModule with a 'main' function "
                        "(use mcp.from_torch or mcp.from_onnx)")
    if tuning_log is not None and tuning_log != "auto" and not str(tuning_log).strip():
        raise ValueError("tuning_log is empty: give 'auto', a log folder, or None for default schedules")
    preset = get_preset(target)
    tvm_target = preset.tvm_target()
    log_dir = find_tuning_log(tvm_target) if tuning_log == "auto" else tuning_log
    no_log_reason = "not applied (tuning_log=None): default schedules" if tuning_log is None else (
        f"none under autotune_logs/ was measured for {_describe_target(tvm_target)}: default schedules "
        "(mcp.tune / mcpruner tune measures one)")
    # the log seen through the choice policy: a tuned schedule must beat the default's median
    apply_log = ApplyTuningDatabase(RankedTuningView(open_tuning_log(log_dir, tvm_target), preset.family),
                                    preset.family) if log_dir else None
    provenance = log_provenance(log_dir) if log_dir else None  # validated just above: not parsed again
    if provenance is not None and provenance.status == "emulated":
        logger.warning("tuning log %s: %s; applied because it was asked for by path", log_dir,
                       provenance.describe())
    rewrite = RewriteSparseConv2d(preset, min_mac_reduction=min_mac_reduction)
    pipeline = mcpruner_pipeline(preset, rewrite=rewrite, database=apply_log)
    executable = tvm.compile(mod, target=tvm_target, relax_pipeline=pipeline)
    applied = apply_log.applied if apply_log else []
    logger.info("compiled %d conv layers (%d sparse) for %s; tuning log: %s", len(rewrite.records),
                sum(r.sparse for r in rewrite.records), preset.name,
                f"{log_dir} ({len(applied)} functions tuned; {provenance.describe()})" if log_dir else "none")
    return CompiledModel(executable, preset, list(rewrite.records), threads=threads,
                         tuning_log=Path(log_dir) if log_dir else None, tuned_functions=applied,
                         tuning_log_provenance=provenance, tuned_knobs=_changed_knobs(apply_log),
                         no_log_reason=no_log_reason)


def _describe_target(target: tvm.target.Target) -> str:
    """e.g. ``llvm znver4, 2 cores``: what a tuning log must have been measured for."""
    signature = target_signature(target)
    parts = [signature.get("kind", "?"), signature.get("mtriple"), signature.get("mcpu"), signature.get("device")]
    cores = signature.get("num-cores")
    return " ".join(str(p) for p in parts if p) + (f", {cores} cores" if cores else "")


def _changed_knobs(apply_log: ApplyTuningDatabase | None) -> dict:
    if apply_log is None:
        return {}
    return {name: knobs for name, knobs in apply_log.knobs.items() if name not in apply_log.kept_default}


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x)


def _to_numpy(out: Any) -> np.ndarray | tuple[np.ndarray, ...]:
    if hasattr(out, "numpy"):
        return out.numpy()
    return tuple(_to_numpy(o) for o in out)
