"""FoldConvBatchNorm: conv (+ bias) + inference BatchNorm -> conv with scaled weight + bias.

Before and Expected are written out independently of the pass (the folded weight and bias
computed here by the BatchNorm formula), as TVM's own pass tests do.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from relay_passes import FoldConvBatchNorm

C_IN, C_OUT, EPS = 3, 4, 1e-5


def _constants(seed: int = 0):
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((C_OUT, C_IN, 3, 3)).astype(np.float32)
    weight[:, 0] = 0.0  # pruned kernels: they must stay exact zeros
    bias = rng.standard_normal((1, C_OUT, 1, 1)).astype(np.float32)
    gamma, beta, mean = (rng.standard_normal(C_OUT).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.5, 1.5, C_OUT).astype(np.float32)
    return weight, bias, gamma, beta, mean, var


def _function(body) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, C_IN, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def before(weight, bias, gamma, beta, mean, var, with_bias: bool) -> tvm.IRModule:
    def body(bb, x):
        y = bb.emit(relax.op.nn.conv2d(x, relax.const(weight), padding=1))
        if with_bias:
            y = bb.emit(relax.op.add(y, relax.const(bias)))
        bn = bb.emit(relax.op.nn.batch_norm(y, *(relax.const(a) for a in (gamma, beta, mean, var)),
                                            axis=1, epsilon=EPS, training=False))
        return relax.op.nn.relu(bb.emit(relax.TupleGetItem(bn, 0)))

    return _function(body)


def expected(weight, bias, gamma, beta, mean, var, with_bias: bool) -> tvm.IRModule:
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + EPS)
    folded_w = (weight * scale.reshape(-1, 1, 1, 1)).astype(np.float32) + 0
    b = bias.reshape(-1).astype(np.float64) if with_bias else np.zeros(C_OUT)
    folded_b = ((b - mean) * scale + beta).astype(np.float32).reshape(1, C_OUT, 1, 1)

    def body(bb, x):
        y = bb.emit(relax.op.nn.conv2d(x, relax.const(folded_w), padding=1))
        y = bb.emit(relax.op.add(y, relax.const(folded_b)))
        return relax.op.nn.relu(y)

    return _function(body)


def _tidy(mod: tvm.IRModule) -> tvm.IRModule:
    """Bindings the rewrite leaves unused or nested, normalised as the importers do after it."""
    mod = relax.transform.CanonicalizeBindings()(mod)
    return relax.transform.DeadCodeElimination(["main"])(mod)


@pytest.mark.parametrize("with_bias", [False, True])
def test_conv_batch_norm_folds_into_weight_and_bias(with_bias):
    constants = _constants()
    after = _tidy(FoldConvBatchNorm()(before(*constants, with_bias)))
    tvm.ir.assert_structural_equal(after, _tidy(expected(*constants, with_bias)), map_free_vars=True)
    (conv_weight,) = [c for c in _constants_of(after) if c.ndim == 4 and c.shape[2:] == (3, 3)]
    assert (conv_weight[:, 0] == 0).all() and not np.signbit(conv_weight[:, 0]).any()  # +0.0, not -0.0


def test_training_mode_batch_norm_is_left_alone():
    weight, _, gamma, beta, mean, var = _constants()

    def body(bb, x):
        y = bb.emit(relax.op.nn.conv2d(x, relax.const(weight), padding=1))
        bn = bb.emit(relax.op.nn.batch_norm(y, *(relax.const(a) for a in (gamma, beta, mean, var)),
                                            axis=1, epsilon=EPS, training=True))
        return relax.TupleGetItem(bn, 0)

    mod = _function(body)
    tvm.ir.assert_structural_equal(FoldConvBatchNorm()(mod), mod)


def _constants_of(mod: tvm.IRModule) -> list[np.ndarray]:
    found = []
    relax.analysis.post_order_visit(mod["main"].body, lambda e: found.append(e.value.numpy())
                                    if isinstance(e, tvm.ir.GenericConst) else None)
    return found
