"""A default CPU schedule for the TVM ops our rewrite leaves behind (adds, ReLUs, pools).

TVM 0.27's CPU pipeline lowers unscheduled PrimFuncs as plain loops: one thread, no
vectors. Once the convs run our kernels, those leftovers (a ResNet-50's residual
add + ReLU, max/avg pooling, reshapes) would take a large share of the model's time. This
dlight rule gives every such PrimFunc a parallel outer loop and, for element-wise
blocks, a vectorized inner loop; functions already scheduled (our kernels, or records
applied from a tuning database) are left alone by ``ApplyDefaultSchedule``.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import try_inline
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target

__all__ = ["ParallelVectorizeLeftovers"]

# Below this many iterations a parallel loop costs more to launch than it saves.
_MIN_PARALLEL_WORK = 4096


class ParallelVectorizeLeftovers(CPUScheduleRule):
    """Element-wise: fuse all loops, vectorize the inner ``lanes``, parallel the rest.
    Reductions (pooling): parallel over the leading spatial loops."""

    def __init__(self, lanes: int = 16) -> None:
        self.lanes = lanes

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if not infos:
            return None
        infos = try_inline(sch, infos)  # producers folded into their consumers
        for info in infos:
            kinds = info.dom_kind()
            spatial = len(kinds) - len(kinds.lstrip("S"))
            if spatial == 0:
                continue
            loops = sch.get_loops(info.block_rv)[:spatial]
            fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
            extent = _extent(sch, fused)
            if info.is_injective() and spatial == len(kinds):
                width = _largest_dividing_power_of_two(extent, self.lanes)
                if width > 1:
                    fused, inner = sch.split(fused, [None, width])
                    sch.vectorize(inner)
            if extent >= _MIN_PARALLEL_WORK or not info.is_injective():
                sch.parallel(fused)
        return sch


def _extent(sch: s_tir.Schedule, loop: s_tir.schedule.LoopRV) -> int:
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tirx.IntImm) else 0


def _largest_dividing_power_of_two(extent: int, limit: int) -> int:
    width = 1
    while width * 2 <= limit and extent % (width * 2) == 0:
        width *= 2
    return width
