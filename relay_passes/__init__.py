"""Relax passes of tvm-mcpruner (the design card's "Relay passes": Relay became Relax).

``RewriteSparseConv2d`` finds conv2d ops with constant pruned weights and rewrites them
into calls of ``topi_sparse`` kernels; ``ApplyTuningDatabase`` and
``ScheduleSparseKernels`` give those kernels a tuned or the default schedule;
``FoldConvBatchNorm`` folds inference BatchNorm into the conv before it;
``AccuratePooling`` sums large global average pools in blocks, keeping fp32 accuracy.
Importing this package registers the ``"mcpruner"`` Relax pipeline
(``tvm.relax.get_pipeline("mcpruner")``).
"""

from .accurate_pooling import AccuratePooling
from .fold_batch_norm import FoldConstLayout, FoldConvBatchNorm, fold_batch_norm
from .pipeline import mcpruner_pipeline, to_tir_stage
from .rewrite_sparse_conv2d import RewriteSparseConv2d, SparseLayerRecord
from .schedule_kernels import ApplyTuningDatabase, ScheduleSparseKernels

__all__ = [
    "AccuratePooling",
    "ApplyTuningDatabase",
    "FoldConstLayout",
    "FoldConvBatchNorm",
    "RewriteSparseConv2d",
    "ScheduleSparseKernels",
    "SparseLayerRecord",
    "fold_batch_norm",
    "mcpruner_pipeline",
    "to_tir_stage",
]
