"""One timing rule for every framework the benchmarks compare.

:func:`time_ms` warms a runner up, then reports ``repeats`` entries, each the mean of
``number`` back-to-back calls with ``number`` sized so a repeat lasts >= 50 ms;
:func:`time_interleaved` takes those repeats round-robin over several runners;
:func:`measure_all` checks each runner's output, then times them all interleaved.
A runner is a zero-argument callable over prepared inputs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import _repo  # noqa: F401  (puts the repository on sys.path)
import numpy as np

from tvm_mcpruner.benchmark import rel_error

Runner = Callable[[], Any]

# Idle time before each timed repeat: each framework keeps its worker threads spinning
# for a while after a call (OpenMP, TVM's pool, onnxruntime's), and spinning threads
# steal the cores of the framework timed next.
SETTLE_S = 0.25


def calls_per_repeat(fn: Runner, warmup: int = 2, min_repeat_ms: float = 50.0) -> int:
    """Warm ``fn`` up, then how many back-to-back calls make one repeat last ``min_repeat_ms``."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    fn()
    one_ms = (time.perf_counter() - start) * 1e3
    return max(1, int(np.ceil(min_repeat_ms / max(one_ms, 1e-3))))


def one_repeat(fn: Runner, number: int) -> float:
    """Milliseconds per call: the mean of ``number`` back-to-back calls of ``fn``."""
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
    return [one_repeat(fn, number) for _ in range(repeats)]


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
            times[name].append(one_repeat(fn, numbers[name]))
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

    A runner whose reference is None (a probe such as ``_peak.fma_peak_probe``) is timed
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
