"""CompiledModel: calls from several threads at once give the single-threaded answers;
non-finite inputs follow the documented contract, or are refused on request."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import tvm_mcpruner as mcp

REPO = Path(__file__).resolve().parents[2]

# Run in a child process: without the lock two threads crash the process (SIGSEGV in the
# VM's tensor allocation) or get "register_file" errors within 200 calls.
_THREADS = textwrap.dedent("""
    import threading, numpy as np, torch
    import tvm_mcpruner as mcp
    from tvm_mcpruner.models import get_model
    torch.manual_seed(0)
    model = get_model("resnet18", width=0.25, stem="cifar").eval()
    pruned, _ = mcp.prune(model, keep_kernels=0.5)
    xs = [torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(i)).numpy() for i in range(4)]
    cm = mcp.compile(mcp.from_torch(pruned, (torch.from_numpy(xs[0]),)), "host", tuning_log=None)
    expected = [cm(x) for x in xs]
    errors = []

    def work(k):
        for i in range(200):
            try:
                y = cm(xs[(i + k) % 4])
            except Exception as exc:  # a thread that raised would otherwise just end
                errors.append(repr(exc)[:200])
                continue
            if not np.array_equal(y, expected[(i + k) % 4]):
                errors.append(f"thread {k} call {i}: wrong output")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("errors", len(errors), errors[:3])
""")


def test_one_model_called_from_two_threads_at_once():
    proc = subprocess.run([sys.executable, "-c", _THREADS], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert "errors 0 []" in proc.stdout, proc.stdout[-2000:]


def test_nan_reaches_only_outputs_a_kept_weight_connects_it_to():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 16, 3, padding=1, bias=False)
    pruned, _ = mcp.prune(torch.nn.Sequential(conv).eval(), target="host", keep_kernels=0.5)
    weight = pruned[0].weight.detach().numpy()
    x = torch.randn(1, 8, 6, 6)
    cm = mcp.compile(mcp.from_torch(pruned, (x,)), "host", tuning_log=None)
    x_nan = x.clone()
    x_nan[0, :, 2, 2] = float("nan")
    y = cm(x_nan.numpy())
    # exactly the outputs whose receptive field meets the NaN through a non-zero weight
    reach = np.zeros(y.shape[1:], bool)
    for o in range(16):
        for ky in range(3):
            for kx in range(3):
                if weight[o, :, ky, kx].any():
                    oy, ox = 2 + 1 - ky, 2 + 1 - kx
                    if 0 <= oy < 6 and 0 <= ox < 6:
                        reach[o, oy, ox] = True
    assert (np.isnan(y[0]) == reach).all()
    with torch.no_grad():
        assert np.isnan(pruned(x_nan).numpy()).sum() >= reach.sum()  # torch: 0 * NaN spreads it further
    with pytest.raises(ValueError, match="input 0 holds NaN or Inf"):
        cm(x_nan.numpy(), check_finite=True)
    assert np.isfinite(cm(x.numpy(), check_finite=True)).all()
