"""ParallelVectorizeLeftovers: the TVM ops our rewrite leaves get parallel, vector loops."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax, tirx
from tvm.s_tir import dlight

from topi_sparse.cpu_leftovers import ParallelVectorizeLeftovers
from tvm_mcpruner.targets import get_preset

TARGET = get_preset("host").tvm_target()


def _legalized(shape, body) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    y = relax.Var("y", relax.TensorType(shape, "float32"))
    with bb.function("main", [x, y]):
        with bb.dataflow():
            out = bb.emit_output(body(x, y))
        bb.emit_func_output(out)
    with TARGET:
        mod = relax.transform.LegalizeOps()(bb.get())
        mod = relax.transform.AnnotateTIROpPattern()(mod)
        mod = relax.transform.FuseOps()(mod)
        return relax.transform.FuseTIR()(mod)


def _loop_kinds(func: tirx.PrimFunc) -> set[str]:
    """The annotated loop kinds in the function's TVMScript (parallel, vectorized, ...)."""
    text = func.script()
    return {kind for kind in ("parallel", "vectorized", "unroll") if f"T.{kind}(" in text}


def _prim_funcs(mod):
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}


def _run(mod, *arrays):
    ex = tvm.compile(mod, target=TARGET)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in arrays]).numpy()


@pytest.mark.parametrize("shape", [(1, 64, 56, 56), (2, 3, 7, 5)])
def test_residual_add_relu_gets_parallel_vector_loops_and_same_numbers(shape):
    mod = _legalized(shape, lambda x, y: relax.op.nn.relu(relax.op.add(x, y)))
    with TARGET:
        after = dlight.ApplyDefaultSchedule(ParallelVectorizeLeftovers(16))(mod)
    (func,) = _prim_funcs(after).values()
    assert func.attrs["tirx.is_scheduled"]
    kinds = _loop_kinds(func)
    big = np.prod(shape) >= 4096
    assert ("parallel" in kinds) == big, kinds
    assert "vectorized" in kinds, kinds
    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    np.testing.assert_allclose(_run(after, x, y), np.maximum(x + y, 0), rtol=0, atol=0)


def test_pooling_reduction_runs_in_parallel():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 32, 56, 56), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.max_pool2d(x, 3, 2, 1))
        bb.emit_func_output(out)
    with TARGET:
        mod = relax.transform.LegalizeOps()(bb.get())
        after = dlight.ApplyDefaultSchedule(ParallelVectorizeLeftovers(16))(mod)
    (func,) = _prim_funcs(after).values()
    assert "parallel" in _loop_kinds(func)
    xs = np.random.default_rng(1).standard_normal((1, 32, 56, 56)).astype(np.float32)
    import torch

    ref = torch.nn.functional.max_pool2d(torch.from_numpy(xs), 3, 2, 1).numpy()
    np.testing.assert_array_equal(_run(after, xs), ref)


def test_scheduled_functions_are_left_alone():
    mod = _legalized((1, 8, 4, 4), lambda x, y: relax.op.add(x, y))
    name, func = next(iter(_prim_funcs(mod).items()))
    mod[name] = func.with_attr("tirx.is_scheduled", True)
    with TARGET:
        after = dlight.ApplyDefaultSchedule(ParallelVectorizeLeftovers(16))(mod)
    tvm.ir.assert_structural_equal(after[name], mod[name])
