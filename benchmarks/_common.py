"""What the benchmark scripts import as ``_common``: the helpers of ``benchmarks/``, by role.

* ``_timing``: one timing rule for every framework (:func:`time_ms`,
  :func:`time_interleaved`, :func:`measure_all`);
* ``_runners``: runners of torch, onnxruntime, TVM dense and mcpruner, the run's thread
  setup, MAC counts;
* ``_dense_tuning``: :class:`DenseTuner`, the TVM dense baseline's MetaSchedule tuning,
  kept in a tuning log in ``autotune_logs/<device>/dense/``;
* ``_peak``: the machine's fp32 peak measured in the same run;
* ``_results``: result files (JSON + markdown) with machine, versions, command, budget.
"""

from __future__ import annotations

from _repo import REPO_ROOT
from _timing import SETTLE_S, Runner, Timing, calls_per_repeat, measure_all, one_repeat, time_interleaved, time_ms
from _runners import (DENSE_FRAMEWORKS, SparseBuild, same_isa_dense_frameworks, host_target, mcpruner_build, nonzero_conv_macs,
                      onnxruntime_runner, setup, torch_runner, vm_runner)
from _dense_tuning import DenseTuner, TuningTask, fuse_for_tuning
from _peak import (PEAK_PROBE, close_peak, fill_pct_of_peak, fma_peak_probe, measure_peak, peak_of_run,
                   tune_then_open_peak)
from _results import fmt, header_markdown, md_table, peak_pair, publish, run_info, write_results

__all__ = [
    "DENSE_FRAMEWORKS", "PEAK_PROBE", "same_isa_dense_frameworks", "REPO_ROOT", "SETTLE_S", "DenseTuner", "Runner", "SparseBuild", "Timing",
    "TuningTask", "calls_per_repeat", "close_peak", "fill_pct_of_peak", "fma_peak_probe", "fmt",
    "fuse_for_tuning", "header_markdown", "host_target", "mcpruner_build", "md_table",
    "measure_all", "measure_peak", "nonzero_conv_macs", "one_repeat", "onnxruntime_runner", "peak_of_run",
    "peak_pair", "publish", "run_info", "setup", "time_interleaved", "time_ms", "torch_runner",
    "tune_then_open_peak", "vm_runner", "write_results",
]
