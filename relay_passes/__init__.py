"""Relax passes of tvm-mcpruner (the design card's "Relay passes": Relay became Relax).

``RewriteSparseConv2d`` finds conv2d ops with constant pruned weights and rewrites them
into calls of ``topi_sparse`` kernels; importing this package registers the
``"mcpruner"`` Relax pipeline (``tvm.relax.get_pipeline("mcpruner")``).
"""

from .pipeline import mcpruner_pipeline
from .rewrite_sparse_conv2d import RewriteSparseConv2d, SparseLayerRecord

__all__ = ["RewriteSparseConv2d", "SparseLayerRecord", "mcpruner_pipeline"]
