"""Target presets: the one place that says what each supported device is.

A preset names a TVM target (as the JSON dict TVM 0.27 wants), the fp32 vector width
the pruner aligns to and the kernels vectorize by, and the thread count. This module
must stay importable without TVM (the torch pruning helper reads vector widths from
it); only :meth:`TargetPreset.tvm_target` imports TVM.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HOST_CPU_ENV", "TargetPreset", "get_preset", "preset_for_tvm_target", "preset_names"]

# Names the LLVM CPU the ``host`` preset builds for, instead of this machine's (see host_cpu_name).
HOST_CPU_ENV = "MCPRUNER_HOST_CPU"


@dataclass(frozen=True)
class TargetPreset:
    """A named device: TVM target dict, vector width (fp32 lanes), threads, RPC key."""

    name: str
    target: dict[str, Any]
    vector_width: int
    threads: int
    description: str
    host: dict[str, Any] | None = None
    rpc_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cross_compiler(self) -> str | None:
        """The C compiler that links libraries for this device (None: this machine's own).

        Defined by the preset only (``extra["cross_compiler"]``); ``arm_emulation``,
        ``rpc_farm`` and ``mcpruner compile --out`` read it from here.
        """
        return self.extra.get("cross_compiler")

    @property
    def cpu_cluster(self) -> str | None:
        """The cores of a big.LITTLE device its thread pool runs on ("big", "little",
        "all"; :mod:`tvm_mcpruner.thread_pool`); None where the OS places the threads."""
        return self.extra.get("cpu_cluster")

    @functools.cached_property
    def family(self) -> str | None:
        """The ``topi_sparse`` family that schedules our kernels for this preset's target
        (picked from the target's kind and keys; None: no sparse schedule for it yet)."""
        from topi_sparse import family_of  # imports TVM

        return family_of(self.tvm_target())

    def tvm_target(self):
        """The ``tvm.target.Target`` for this preset (imports TVM)."""
        import tvm

        target = dict(self.target)
        if self.name == "host" and "mcpu" not in target:
            # Asked of LLVM only here, so reading a preset never loads TVM.
            mcpu = host_cpu_name()
            if mcpu != "generic":
                target["mcpu"] = mcpu
        if self.host is None:
            return tvm.target.Target(target)
        return tvm.target.Target(target, host=self.host)


def cpu_flags() -> set[str]:
    """This CPU's feature flags as /proc/cpuinfo lists them (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _host_vector_width(flags: set[str]) -> int:
    # fp32 lanes of the widest FMA-capable vector register the ISA gives us.
    if "avx512f" in flags:
        return 16
    if "avx2" in flags or "avx" in flags:
        return 8
    return 4  # SSE / NEON


def usable_cpu_ids() -> list[int]:
    """The CPUs this process may run on (its affinity mask), in order."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def usable_cpus() -> int:
    """How many CPUs this process may run on: the default thread count everywhere."""
    return len(usable_cpu_ids())


def system_cpu_name() -> str:
    """LLVM's name of this machine's CPU (e.g. ``znver4``), read from CPUID now.

    It names the microarchitecture even where a VM masks the model name ("AMD EPYC"), so
    it is recorded with every measurement.
    """
    try:
        import tvm

        return str(tvm.target.codegen.llvm_get_system_cpu())
    except Exception:  # TVM missing or built without LLVM: a generic CPU still works
        return "generic"


def host_cpu_name() -> str:
    """The CPU the ``host`` preset builds for: ``$MCPRUNER_HOST_CPU`` if set, else this one.

    It keys tuning logs (``autotune_logs/<it>``). The override lets one machine build and
    test what a narrower CPU of the same family gets (``MCPRUNER_HOST_CPU=znver1`` on an
    AVX-512 host: 8-lane kernels, AVX2 code), so no test depends on the machine it runs on.
    """
    return os.environ.get(HOST_CPU_ENV, "").strip() or system_cpu_name()


def _forced_vector_width(mcpu: str, flags: set[str]) -> int:
    """fp32 lanes of the LLVM CPU ``mcpu``, refused where this machine could not run its code."""
    import tvm

    if not tvm.target.codegen.llvm_is_valid_cpu(mcpu, str(tvm.target.codegen.llvm_get_system_triple())):
        raise ValueError(f"{HOST_CPU_ENV}={mcpu!r} is not a CPU name LLVM knows")
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    features = {str(f) for f in tvm.target.codegen.llvm_get_cpu_features(target)}
    width = _host_vector_width(features)
    if flags and width > _host_vector_width(flags):
        raise ValueError(f"{HOST_CPU_ENV}={mcpu!r} needs {width}-lane vectors, but this CPU has "
                         f"{_host_vector_width(flags)}: code built for it would not run here")
    return width


@functools.lru_cache(maxsize=None)
def _host_preset() -> TargetPreset:
    flags = cpu_flags()
    forced = os.environ.get(HOST_CPU_ENV, "").strip()
    width = _forced_vector_width(forced, flags) if forced else _host_vector_width(flags)
    threads = usable_cpus()
    target: dict[str, Any] = {"kind": "llvm", "num-cores": threads}  # mcpu: see tvm_target
    isa = {16: "AVX-512", 8: "AVX2", 4: "128-bit SIMD"}[width]
    built_as = f" built as {forced}" if forced else ""
    return TargetPreset(
        name="host",
        target=target,
        vector_width=width,
        threads=threads,
        description=f"this machine's CPU{built_as} ({isa}, {threads} threads)",
    )


def _x86_preset(name: str, mcpu: str, width: int, isa: str) -> TargetPreset:
    """An x86 CPU class by its ISA, for building on one machine what runs on another.

    Threads are this machine's (a compiled model takes ``threads=`` at compile time).
    Code for an ISA this machine has runs (and is timed) here: AVX2 on an AVX-512 host.
    """
    threads = usable_cpus()
    return TargetPreset(
        name=name,
        target={"kind": "llvm", "mcpu": mcpu, "num-cores": threads},
        vector_width=width,
        threads=threads,
        description=f"x86-64 with {isa} ({mcpu}), fp32x{width} FMA",
    )


_X86_AVX2 = _x86_preset("x86-avx2", "core-avx2", 8, "AVX2 + FMA")
_X86_AVX512 = _x86_preset("x86-avx512", "skylake-avx512", 16, "AVX-512")

_HIKEY970_CPU = TargetPreset(
    name="hikey970-cpu",
    target={
        "kind": "llvm",
        "mtriple": "aarch64-linux-gnu",
        "mcpu": "cortex-a73",
        "mattr": ["+neon"],
        "num-cores": 4,
    },
    vector_width=4,
    threads=4,
    description="HiKey970 big cluster: 4x Cortex-A73, NEON fp32x4",
    rpc_key="hikey970",
    # The A53s would hold back every kernel split over all eight cores (thread_pool).
    extra={"cross_compiler": "aarch64-linux-gnu-gcc", "cpu_cluster": "big"},
)

_HIKEY970_MALI = TargetPreset(
    name="hikey970-mali",
    target={"kind": "opencl", "device": "mali", "max_num_threads": 256},
    vector_width=4,
    threads=1,
    description="HiKey970 Mali-G72 MP12 via OpenCL, float4 vectors",
    host={"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]},
    rpc_key="hikey970",
)

_CUDA = TargetPreset(
    name="cuda",
    target={"kind": "cuda"},
    vector_width=4,
    threads=1,
    description="NVIDIA GPU via CUDA (float4 loads)",
    host={"kind": "llvm"},
)

_STATIC = {p.name: p for p in (_X86_AVX2, _X86_AVX512, _HIKEY970_CPU, _HIKEY970_MALI, _CUDA)}


def preset_names() -> list[str]:
    """Names accepted by :func:`get_preset` (and every ``target=`` argument)."""
    return ["host", *_STATIC]


def get_preset(target: "str | TargetPreset") -> TargetPreset:
    """Look a preset up by name; a preset passes through unchanged."""
    if isinstance(target, TargetPreset):
        return target
    if target == "host":
        return _host_preset()
    try:
        return _STATIC[target]
    except KeyError:
        raise ValueError(
            f"unknown target preset {target!r}; known presets: {', '.join(preset_names())}"
        ) from None


def preset_for_tvm_target(target) -> TargetPreset:
    """The preset whose schedule family and vector width fit a ``tvm.target.Target``.

    Used where TVM hands us only a Target (``tvm.compile(..., relax_pipeline=
    get_pipeline("mcpruner"))``): llvm for aarch64 is the HiKey970 CPU class, llvm with an
    x86 preset's ``mcpu`` is that preset, other llvm is this host, opencl is Mali, cuda is CUDA.
    """
    kind = target.kind.name
    if kind == "llvm":
        triple = str(target.attrs.get("mtriple", ""))
        if triple.startswith("aarch64"):
            return _HIKEY970_CPU
        mcpu = str(target.attrs.get("mcpu", ""))
        return next((p for p in (_X86_AVX2, _X86_AVX512) if p.target["mcpu"] == mcpu), _host_preset())
    if kind == "opencl":
        return _HIKEY970_MALI
    if kind == "cuda":
        return _CUDA
    raise ValueError(f"no tvm-mcpruner preset for target kind {kind!r}")
