"""Which cores TVM's thread pool runs on: the big cluster of a big.LITTLE board by default.

The HiKey970 has 4 Cortex-A73 (big, 2.36 GHz) and 4 Cortex-A53 (LITTLE, 1.8 GHz). A
kernel split over all eight waits for its slowest quarter on the A53s, so the
``hikey970-cpu`` preset runs 4 threads pinned to the big cluster. TVM's runtime sorts the
cores by their maximum frequency and pins workers to the fastest ("big") or slowest
("little") ones through the ``runtime.config_threadpool`` function; this module calls it,
in this process or, over an RPC session, on the board.

On a board, without this package (TVM runtime only)::

    import tvm
    tvm.get_global_func("runtime.config_threadpool")(1, 4)    # 4 threads on the A73s
    tvm.get_global_func("runtime.config_threadpool")(-1, 4)   # 4 threads on the A53s
    tvm.get_global_func("runtime.config_threadpool")(-3, 8, [str(i) for i in range(8)])  # all 8
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["CLUSTERS", "configure_thread_pool", "configure_for_preset"]

# TVM's ThreadGroup::AffinityMode values (src/runtime/threading_backend.h): kBig pins the
# workers to the fastest cores, kLittle to the slowest, kSpecifyThreadShareAllCore lets
# them share the listed cores.
CLUSTERS = {"big": 1, "little": -1, "all": -3}


def configure_thread_pool(cluster: str, threads: int, session: Any = None,
                          cpus: Sequence[int] | None = None) -> None:
    """Run TVM's thread pool with ``threads`` workers on ``cluster`` ("big", "little", "all").

    ``session``: an RPC session (``tvm.rpc.connect`` / a tracker's ``request``) to
    configure the remote runtime; None configures this process. "all" lets the workers
    share ``cpus`` (default ``0 .. threads-1``: all eight of a HiKey970 with ``threads=8``),
    the OS placing them. The setting holds for the process (or the RPC session) until changed.
    """
    if cluster not in CLUSTERS:
        raise ValueError(f"cluster must be one of {sorted(CLUSTERS)}, got {cluster!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    if session is None:
        import tvm

        config, make_array = tvm.get_global_func("runtime.config_threadpool"), list
    else:
        # An RPC call cannot carry an array: the CPU list is built on the remote side.
        config, remote_array = session.get_function("runtime.config_threadpool"), session.get_function("ffi.Array")
        make_array = lambda items: remote_array(*items)  # noqa: E731
    if cluster == "all":
        config(CLUSTERS[cluster], threads, make_array([str(cpu) for cpu in (range(threads) if cpus is None else cpus)]))
    else:
        config(CLUSTERS[cluster], threads)


def configure_for_preset(preset: Any, session: Any = None) -> bool:
    """Apply ``preset``'s cluster and thread count (``TargetPreset.cpu_cluster``, ``threads``).

    Returns False, changing nothing, for a preset that names no cluster (x86 hosts: no
    big.LITTLE, the OS schedules the threads).
    """
    if preset.cpu_cluster is None:
        return False
    configure_thread_pool(preset.cpu_cluster, preset.threads, session)
    return True
