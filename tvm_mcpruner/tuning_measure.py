"""How ``mcp.tune`` measures: runners (local or over an RPC tracker), the real constant
operands of our kernels, and the progress bar.

Our kernels read index buffers, so a runner may not fill their arguments at random (an
offset out of bounds crashes the worker): :class:`OperandStore` keeps each sparse task's
real operands on disk, and the runners' allocation function loads them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from tqdm.auto import tqdm
from tvm import relax
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

import topi_sparse

from . import rpc_farm
from .compiler import set_tvm_threads
from .rpc_tracker import parse_tracker
from .targets import TargetPreset
from .thread_pool import configure_for_preset

__all__ = ["OperandStore", "ProgressBar", "export_function", "make_runner"]


def export_function(preset: TargetPreset):
    """How built candidates become files a runner loads: aarch64 is linked here."""
    if preset.cross_compiler is not None:
        return rpc_farm.export_aarch64_shared_library
    return None  # MetaSchedule's default (a tar the local runtime links)


def make_runner(preset, tracker, key, operands, timeout_s, evaluator, threads):
    evaluator = evaluator or ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=50,
                                                       enable_cpu_cache_flush=False)
    if tracker is not None:
        host, port = parse_tracker(tracker, loopback_only=False)  # a real farm is on the LAN
        config = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key,
                                     session_timeout_sec=int(timeout_s) * 4)
        return ms.runner.RPCRunner(config, evaluator, max_workers=2,
                                   f_alloc_argument=_StoredOperands(operands.directory, preset=preset))
    return ms.runner.LocalRunner(
        timeout_sec=timeout_s, evaluator_config=evaluator,
        f_alloc_argument=_StoredOperands(operands.directory, threads or preset.threads),
    )


class OperandStore:
    """The real constant operands (values, offsets, bias) of each sparse task, on disk.

    Keyed by the task's argument shapes and dtypes, which is all a runner is told; the
    runner's allocation function (in a worker process) loads them from here.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def save_from(self, mod: tvm.IRModule) -> None:
        for call in _sparse_calls(mod):
            func = mod[call.args[0]]
            constants = {str(i): arg.value.numpy() for i, arg in enumerate(call.args[1].fields)
                         if isinstance(arg, tvm.ir.GenericConst)}
            if "2" not in constants:  # the offsets must be real: random ones read out of bounds
                raise ValueError(f"{call.args[0].name_hint}: its index operands are not constants")
            args_info = [info.as_json() for info in ms.arg_info.ArgInfo.from_prim_func(func)]
            path = self.directory / f"{_args_key(args_info)}.npz"
            if not path.exists():
                np.savez(path, **constants)


def _sparse_calls(mod: tvm.IRModule) -> list[relax.Call]:
    calls: list[relax.Call] = []
    call_tir = tvm.ir.Op.get("relax.call_tir")

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op.same_as(call_tir):
            callee = mod[expr.args[0]]
            if topi_sparse.is_kernel(callee):
                calls.append(expr)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return calls


def _args_key(args_info: list) -> str:
    return hashlib.sha1(json.dumps(_plain(args_info)).encode()).hexdigest()[:20]


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, str)):
        return [_plain(v) for v in value]
    return int(value) if isinstance(value, (int, np.integer)) else str(value)


def _arguments(directory: Path, args_info: list, make) -> list:
    """One argument list: stored operands where the task has them, else random floats /
    zero integers (zero is a valid index for any index operand of TVM's own ops)."""
    path = directory / f"{_args_key(args_info)}.npz"
    stored = dict(np.load(path)) if path.exists() else {}
    rng = np.random.default_rng(0)
    args = []
    for i, (_, dtype, shape) in enumerate(args_info):
        array = stored.get(str(i))
        if array is None:
            shape = [int(d) for d in shape]
            array = (rng.uniform(-1, 1, shape).astype(dtype) if "float" in str(dtype)
                     else np.zeros(shape, str(dtype)))
        args.append(make(np.ascontiguousarray(array)))
    return args


class _StoredOperands:
    """``f_alloc_argument`` of both runners: ``(device, args_info, repeat)`` for the
    LocalRunner, ``(session, device, args_info, repeat)`` for the RPCRunner (the arrays
    are then copied to the remote device). Locally it also sizes the worker's thread
    pool, whose default is half the CPUs; over RPC it puts the remote pool on the
    preset's cluster (the A73s of a HiKey970), as the model will run there."""

    def __init__(self, directory: Path, threads: int | None = None, preset: TargetPreset | None = None):
        self.directory, self.threads, self.preset = directory, threads, preset

    def __call__(self, *args):
        device, args_info, alloc_repeat = args[-3:]
        if self.threads is not None:
            set_tvm_threads(self.threads)
        if len(args) == 4 and self.preset is not None:
            configure_for_preset(self.preset, session=args[0])
        return [_arguments(self.directory, args_info, lambda a: tvm.runtime.tensor(a, device))
                for _ in range(alloc_repeat)]


@derived_object
class ProgressBar(ms.measure_callback.PyMeasureCallback):
    """tqdm over the trial budget: trials done, best latency per task, ETA."""

    def __init__(self, total: int, task_names: list[str], enabled: bool = True):
        self.bar = tqdm(total=total, desc="tuning", unit="trial", disable=not enabled)
        self.names = task_names
        self.best: dict[int, float] = {}

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        times = [float(np.median([float(s) for s in r.run_secs])) * 1e3
                 for r in runner_results if r.run_secs and not r.error_msg]
        if times:
            self.best[task_id] = min(self.best.get(task_id, float("inf")), *times)
        self.bar.update(len(runner_results))
        if task_id in self.best:
            self.bar.set_postfix_str(f"{self.names[task_id][:24]} best {self.best[task_id]:.4f} ms")

    def close(self) -> None:
        self.bar.close()
