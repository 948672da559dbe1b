"""What making ``CompiledModel`` safe for threads costs: a lock per call, or a VM per thread.

Times, in one process, interleaved: a call of a small compiled model through
``CompiledModel.__call__`` (which takes the model's lock) and the same call on the bare
VM without it; and the one-off cost the other design would pay, creating a VM (per
thread). Single-threaded, so the lock is never contended: this is its fixed cost.

Usage: ``python benchmarks/call_overhead.py``; writes ``call_overhead_<llvm cpu>.json/.md``
to ``benchmarks/results/``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

import torch  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402

import tvm_mcpruner as mcp  # noqa: E402
from tvm_mcpruner.benchmark import machine_info  # noqa: E402

CALLS = 2000
REPEATS = 9


def per_call_us(call, x) -> float:
    start = time.perf_counter()
    for _ in range(CALLS):
        call(x)
    return (time.perf_counter() - start) / CALLS * 1e6


def main() -> dict:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU()).eval()
    pruned, _ = mcp.prune(model, keep_kernels=0.5)
    x = torch.randn(1, 16, 8, 8).numpy()
    cm = mcp.compile(mcp.from_torch(pruned, (torch.from_numpy(x),)), "host", tuning_log=None)
    cm(x)
    vm = cm.vm

    def bare(a):  # what __call__ does, without the lock
        return vm["main"](tvm.runtime.tensor(a, cm.device)).numpy()

    locked, unlocked, creation = [], [], []
    for _ in range(REPEATS):
        locked.append(per_call_us(cm, x))
        unlocked.append(per_call_us(bare, x))
        start = time.perf_counter()
        relax.VirtualMachine(cm.executable, cm.device)
        creation.append((time.perf_counter() - start) * 1e6)
    result = {"machine": machine_info(), "calls_per_repeat": CALLS, "repeats": REPEATS,
              "call_with_lock_us": statistics.median(locked), "call_without_lock_us": statistics.median(unlocked),
              "vm_creation_us": statistics.median(creation)}
    result["lock_cost_us"] = result["call_with_lock_us"] - result["call_without_lock_us"]
    out = Path(__file__).parent / "results" / f"call_overhead_{result['machine']['llvm_cpu']}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    text = (f"# CompiledModel call overhead ({result['machine']['llvm_cpu']}, one thread, medians of {REPEATS} "
            f"x {CALLS} calls of a 16->16 3x3 conv at 8x8)\n\n"
            "| | microseconds |\n|---|---|\n"
            f"| call through `CompiledModel` (takes the lock) | {result['call_with_lock_us']:.2f} |\n"
            f"| the same call on the bare VM | {result['call_without_lock_us']:.2f} |\n"
            f"| difference: the lock | {result['lock_cost_us']:.2f} |\n"
            f"| creating a VM (a VM per thread pays this once per thread) | {result['vm_creation_us']:.1f} |\n")
    out.with_suffix(".md").write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
