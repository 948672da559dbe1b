"""The registered "mcpruner" Relax pipeline, as plain TVM users call it.

``tvm.compile(mod, target, relax_pipeline=tvm.relax.get_pipeline("mcpruner"))`` on a
pruned ResNet (32x32, narrow: residual adds, stride-2 1x1 projections, BN folded).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

import relay_passes
import tvm_mcpruner as mcp
from relay_passes import RewriteSparseConv2d
from tests._models import assert_close_to_exact, assert_input_sensitive, randomize_bn, torch_output
from tvm_mcpruner.models import get_model

ROOT = Path(__file__).resolve().parents[2]
HOST = mcp.get_preset("host")


@pytest.fixture(scope="module")
def pruned_resnet():
    """(pruned torch model, prune report, imported Relax module, input batch)."""
    torch.manual_seed(0)
    model = get_model("resnet18", width=0.25, stem="cifar")
    pruned, report = mcp.prune(model, target="host", pattern_k=4, keep_kernels=0.5)
    gen = torch.Generator().manual_seed(1)
    randomize_bn(pruned, seed=2, example_input=torch.randn(8, 3, 32, 32, generator=gen))
    x = torch.randn(2, 3, 32, 32, generator=gen)
    return pruned, report, mcp.from_torch(pruned, (x,)), x


def _convs(mod: tvm.IRModule) -> list[relax.Call]:
    op = tvm.ir.Op.get("relax.nn.conv2d")
    found: list[relax.Call] = []
    relax.analysis.post_order_visit(
        mod["main"], lambda e: found.append(e) if isinstance(e, relax.Call) and e.op.same_as(op) else None
    )
    return found


def _called_prim_funcs(lowered: tvm.IRModule) -> list[str]:
    """Names of the PrimFuncs ``main`` calls, once per call site, in order (after lowering
    ``R.call_tir(f, args)`` reads ``f(args, out)``)."""
    names: list[str] = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.GlobalVar):
            if isinstance(lowered[expr.op], tvm.tirx.PrimFunc):
                names.append(expr.op.name_hint)

    relax.analysis.post_order_visit(lowered["main"], visit)
    return names


def test_import_registers_the_pipeline():
    assert relay_passes.mcpruner_pipeline is not None
    assert "mcpruner" in relax.pipeline.PIPELINE_MAP
    assert isinstance(relax.get_pipeline("mcpruner"), tvm.transform.Pass)


def test_importing_tvm_mcpruner_registers_the_pipeline():
    code = "import tvm, tvm_mcpruner; tvm.relax.get_pipeline('mcpruner')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_tvm_compile_with_the_pipeline_matches_torch(pruned_resnet):
    pruned, _, mod, x = pruned_resnet
    ex = tvm.compile(mod, target=HOST.tvm_target(), relax_pipeline=relax.get_pipeline("mcpruner"))
    vm = relax.VirtualMachine(ex, tvm.cpu())

    def run(a: np.ndarray) -> np.ndarray:
        return vm["main"](tvm.runtime.tensor(a, tvm.cpu())).numpy()

    assert_close_to_exact(run(x.numpy()), pruned, x)
    # the check above means something: the output depends on the input
    assert_input_sensitive(lambda a: torch_output(pruned, a), x.numpy(), -x.numpy())


def test_every_groups1_conv_is_lowered_to_a_pattern_kernel(pruned_resnet):
    _, _, mod, _ = pruned_resnet
    convs = _convs(mod)
    assert convs and all(int(c.attrs.groups) == 1 for c in convs)

    with HOST.tvm_target():
        lowered = relax.get_pipeline("mcpruner")(mod)

    called = _called_prim_funcs(lowered)
    pattern_calls = [n for n in called if n.startswith("pattern_conv2d")]
    # one sparse/direct kernel call per conv, and one for the classifier (a 1x1 conv now)
    assert len(pattern_calls) == len(convs) + 1
    prim_names = [gv.name_hint for gv, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert not [n for n in prim_names if "conv2d" in n and not n.startswith("pattern_conv2d")]
    assert not [n for n in called if "conv2d" in n and not n.startswith("pattern_conv2d")]


def test_pipeline_reports_records_through_its_rewrite(pruned_resnet):
    _, report, mod, _ = pruned_resnet
    rewrite = RewriteSparseConv2d("host")
    pipeline = relax.get_pipeline("mcpruner", target="host", rewrite=rewrite)
    tvm.compile(mod, target=HOST.tvm_target(), relax_pipeline=pipeline)
    records = rewrite.records
    n = len(_convs(mod))
    assert [r.name for r in records] == [f"conv2d_{i}" for i in range(n)] + [f"dense_{n}"]
    assert sum(r.sparse for r in records) == len(report.pruned_layers)  # the fc is not pruned
    assert [r.weight_shape for r in records[:n]] == [layer.shape for layer in report.layers]


def test_pipeline_outside_tvm_compile_needs_a_target(pruned_resnet):
    _, _, mod, _ = pruned_resnet
    assert tvm.target.Target.current(allow_none=True) is None
    with pytest.raises(ValueError, match="needs a target"):
        relax.get_pipeline("mcpruner")(mod)
