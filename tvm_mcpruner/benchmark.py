"""Side-by-side latency of one pruned model in torch, onnxruntime, TVM dense and mcpruner.

Every framework runs the *same* pruned weights, in the same process, with the same
thread count, timed the same way (wall clock of one call, median of ``repeat`` calls
after warm-up). Ratios measured in one run are the only speed claims we make.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .targets import host_cpu_name, system_cpu_name

__all__ = [
    "ComparisonResult",
    "FrameworkTiming",
    "compare_frameworks",
    "flushed_denormals",
    "machine_info",
    "onnxruntime_session",
    "rel_error",
    "set_threads",
    "time_interleaved",
    "time_ms",
]


@dataclass
class FrameworkTiming:
    name: str
    median_ms: float
    times_ms: list[float]
    max_rel_error: float  # max |y - y_torch| / max |y_torch|
    note: str = ""


@dataclass
class ComparisonResult:
    model: str
    input_shape: tuple[int, ...]
    threads: int
    machine: dict[str, Any]
    timings: list[FrameworkTiming]
    facts: dict[str, Any] = field(default_factory=dict)
    layers: list[Any] = field(default_factory=list)  # layer_bench.LayerTiming, with per_layer=True

    def timing(self, name: str) -> FrameworkTiming:
        return next(t for t in self.timings if t.name == name)

    def speedup_of(self, name: str = "mcpruner") -> dict[str, float]:
        """How many times faster ``name`` is than each other framework."""
        ours = self.timing(name).median_ms
        return {t.name: t.median_ms / ours for t in self.timings if t.name != name}

    def table(self) -> str:
        ours = self.timing("mcpruner").median_ms if any(t.name == "mcpruner" for t in self.timings) else None
        head = f"{'framework':<28} {'median ms':>10} {'threads':>7} {'mcpruner speedup':>17} {'max err vs torch':>17}"
        lines = [head, "-" * len(head)]
        for t in self.timings:
            speed = f"{t.median_ms / ours:.2f}x" if ours else "-"
            label = f"{t.name} ({t.note})" if t.note else t.name
            lines.append(
                f"{label:<28} {t.median_ms:>10.2f} {self.threads:>7} {speed:>17} {t.max_rel_error:>17.1e}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["speedup_of_mcpruner"] = self.speedup_of() if any(t.name == "mcpruner" for t in self.timings) else {}
        return d


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    # The model name may be masked by a VM ("AMD EPYC"); LLVM's CPU name tells the generation.
    info = {"cpu": cpu, "llvm_cpu": system_cpu_name(), "logical_cpus": os.cpu_count(),
            "python": platform.python_version()}
    if host_cpu_name() != info["llvm_cpu"]:  # MCPRUNER_HOST_CPU: code built for another CPU ran here
        info["built_for_llvm_cpu"] = host_cpu_name()
    return info


def set_threads(threads: int) -> None:
    """Give torch and TVM's runtime the same thread count (onnxruntime gets it per session)."""
    import torch

    from .compiler import set_tvm_threads

    torch.set_num_threads(threads)
    set_tvm_threads(threads)


def _time(fn: Callable[[], Any], warmup: int, repeat: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1e3)
    return out


# Idle time before each timed repeat: each framework keeps its worker threads spinning
# for a while after a call (OpenMP, TVM's pool, onnxruntime's), and spinning threads
# steal the cores of the framework timed next.
SETTLE_S = 0.25


def calls_per_repeat(fn: Callable[[], Any], warmup: int = 2, min_repeat_ms: float = 50.0) -> int:
    """Warm ``fn`` up, then how many back-to-back calls make one repeat last ``min_repeat_ms``."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    fn()
    one_ms = (time.perf_counter() - start) * 1e3
    return max(1, int(np.ceil(min_repeat_ms / max(one_ms, 1e-3))))


def one_repeat(fn: Callable[[], Any], number: int) -> float:
    """Milliseconds per call: the mean of ``number`` back-to-back calls of ``fn``."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) * 1e3 / number


def time_ms(fn: Callable[[], Any], repeats: int = 5, warmup: int = 2, min_repeat_ms: float = 50.0) -> list[float]:
    """Milliseconds per call: ``repeats`` entries, each the mean of ``number`` back-to-back calls.

    ``number`` is chosen after warm-up so one repeat lasts at least ``min_repeat_ms``
    (short layers would otherwise measure the timer). Report the median of the list.
    """
    number = calls_per_repeat(fn, warmup, min_repeat_ms)
    return [one_repeat(fn, number) for _ in range(repeats)]


def time_interleaved(runners: dict[str, Callable[[], Any]], repeats: int = 5, warmup: int = 2,
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
            times[name].append(one_repeat(fn, numbers[name]))
    return times


def rel_error(y: np.ndarray, ref: np.ndarray) -> float:
    """max |y - ref| / max |ref|: the error every benchmark reports."""
    return float(np.abs(y - ref).max() / max(float(np.abs(ref).max()), 1e-30))


@contextlib.contextmanager
def flushed_denormals() -> Iterator[None]:
    """torch with denormals flushed to zero for the duration.

    Denormal activations send oneDNN down a path ~50x slower; flushing them is what a
    deployment would do, so the dense baselines get it (our kernels do not need it).
    """
    import torch

    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def onnxruntime_session(path: "str | Path", threads: int) -> Any:
    """An onnxruntime CPU session as the benchmarks run it: ``threads`` intra-op threads,
    one inter-op thread, denormals as zero."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare_frameworks(
    pruned_model: Any,
    example_input: Any,
    *,
    target: str = "host",
    threads: int | None = None,
    repeat: int = 5,
    warmup: int = 2,
    tvm_dense: bool = True,
    model_name: str = "model",
    per_layer: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ComparisonResult:
    """Time the pruned model in torch, onnxruntime, TVM dense (untuned) and mcpruner.

    ``per_layer=True`` also times each conv / linear layer alone in torch, onnxruntime and
    mcpruner (``layer_bench.time_layers``, same threads) into ``result.layers``, which
    ``layer_bench.plot_layers`` draws.
    """
    import torch
    import tvm

    from .compiler import compile as mcp_compile
    from .frontend import export_onnx, from_torch
    from .targets import get_preset

    say = progress or (lambda _msg: None)
    preset = get_preset(target)
    threads = threads or preset.threads
    set_threads(threads)
    x = example_input.detach().numpy() if hasattr(example_input, "detach") else np.asarray(example_input)
    xt = torch.from_numpy(x)
    model = pruned_model.eval()

    timings: list[FrameworkTiming] = []
    with torch.inference_mode():
        ref = model(xt).numpy()
        say("timing torch (oneDNN) dense")
        with flushed_denormals():
            times = _time(lambda: model(xt), warmup, repeat)
    timings.append(FrameworkTiming("torch", statistics.median(times), times, 0.0, "oneDNN, dense"))

    say("exporting ONNX and timing onnxruntime dense")
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, (xt,), Path(tmp) / "model.onnx")
        session = onnxruntime_session(path, threads)
        feed = {session.get_inputs()[0].name: x}
        y = session.run(None, feed)[0]
        times = _time(lambda: session.run(None, feed), warmup, repeat)
    timings.append(FrameworkTiming("onnxruntime", statistics.median(times), times, rel_error(y, ref), "dense"))

    say("importing into Relax")
    mod = from_torch(model, (xt,))
    if tvm_dense:
        say("compiling and timing TVM dense (default pipeline, untuned)")
        ex = tvm.compile(mod, target=preset.tvm_target())
        vm = tvm.relax.VirtualMachine(ex, tvm.cpu())
        arg = tvm.runtime.tensor(x)
        y = vm["main"](arg).numpy()
        times = _time(lambda: vm["main"](arg), 1, max(3, min(repeat, 5)))
        timings.append(
            FrameworkTiming("tvm-dense", statistics.median(times), times, rel_error(y, ref), "untuned")
        )

    say("compiling and timing mcpruner sparse")
    start = time.perf_counter()
    cm = mcp_compile(mod, target=preset, threads=threads)
    compile_s = time.perf_counter() - start
    arg = tvm.runtime.tensor(x)
    y = cm.vm["main"](arg).numpy()
    times = _time(lambda: cm.vm["main"](arg), warmup, repeat)
    timings.append(FrameworkTiming("mcpruner", statistics.median(times), times, rel_error(y, ref), "sparse"))

    facts = {
        "sparse_layers": cm.num_sparse_layers,
        "layers": len(cm.sparse_layers),
        "mcpruner_compile_s": round(compile_s, 2),
        "target": preset.name,
        "target_description": preset.description,
    }
    layers = []
    if per_layer:
        from .layer_bench import time_layers

        say("timing each conv / linear layer alone: torch, onnxruntime, mcpruner")
        layers = time_layers(model, xt, preset=preset, threads=threads, repeat=repeat, warmup=warmup, progress=say)
        facts["layer_repeats"] = repeat
    return ComparisonResult(model_name, tuple(x.shape), threads, machine_info(), timings, facts, layers)
