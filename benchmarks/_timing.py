"""One timing rule for every framework the benchmarks compare.

The rule itself lives in :mod:`tvm_mcpruner.benchmark` (``mcpruner bench --plot`` times
layers with it too); this module re-exports it and adds the output checks.
:func:`time_ms` warms a runner up, then reports ``repeats`` entries, each the mean of
``number`` back-to-back calls with ``number`` sized so a repeat lasts >= 50 ms;
:func:`time_interleaved` takes those repeats round-robin over several runners;
:func:`measure_all` checks each runner's output, then times them all interleaved.
A runner is a zero-argument callable over prepared inputs.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import _repo  # noqa: F401  (puts the repository on sys.path)
import numpy as np

from tvm_mcpruner.benchmark import (  # noqa: F401 (re-exported)
    SETTLE_S,
    calls_per_repeat,
    one_repeat,
    rel_error,
    time_interleaved,
    time_ms,
)

Runner = Callable[[], Any]


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
