"""Target presets: the x86 ISA presets build, vectorize and compute like the host one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm

import topi_sparse
import tvm_mcpruner as mcp
from tests._models import assert_close_to_exact, randomize_bn
from tvm_mcpruner.models import get_model
from tvm_mcpruner.sparse_format import pack_pattern_weights
from tvm_mcpruner.targets import cpu_flags, preset_for_tvm_target

# The ISA a preset's code needs from this machine to run here.
NEEDS = {"x86-avx2": {"avx2", "fma"}, "x86-avx512": {"avx512f"}}


def _runs_here(name: str) -> bool:
    return NEEDS[name] <= cpu_flags()


@pytest.mark.parametrize("name,width,register", [("x86-avx2", 8, "ymm"), ("x86-avx512", 16, "zmm")])
def test_x86_presets_vectorize_by_their_width(name, width, register):
    preset = mcp.get_preset(name)
    assert name in mcp.targets.preset_names()
    assert (preset.family, preset.vector_width) == ("cpu", width)
    assert preset_for_tvm_target(preset.tvm_target()) is preset  # tvm.compile users land on it too
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2 * width, 8, 3, 3)).astype(np.float32)
    w[:, :, 0, 0] = 0.0  # any pattern: the kernel only needs the aligned groups
    packed = pack_pattern_weights(w, width)
    kernel = topi_sparse.build_pattern_conv2d(
        (1, 8, 10, 10), w.shape, packed.row_ptr, *packed.row_channels_and_taps(), packed.values,
        stride=1, padding=(1, 1, 1, 1), family=preset.family)
    lib = tvm.compile(tvm.IRModule({"main": kernel.func}), target=preset.tvm_target())
    fmas = [line for line in lib.mod.inspect_source("asm").splitlines() if "vfmadd" in line]
    assert fmas and all(f"%{register}" in line for line in fmas), fmas[:3]


@pytest.mark.parametrize("name", ["x86-avx2", "x86-avx512"])
def test_model_pruned_and_compiled_for_an_x86_preset_matches_torch(name):
    if not _runs_here(name):
        pytest.skip(f"this CPU lacks {NEEDS[name]}: {name} code can be built here, not run")
    torch.manual_seed(0)
    model = get_model("resnet18", width=0.25, stem="cifar")
    pruned, report = mcp.prune(model, target=name, keep_kernels=0.5)
    assert report.vector_width == mcp.get_preset(name).vector_width and report.pruned_layers
    x = torch.randn(2, 3, 32, 32)
    randomize_bn(pruned, seed=1, example_input=x)
    compiled = mcp.compile(mcp.from_torch(pruned, (x,)), target=name, tuning_log=None)
    assert compiled.num_sparse_layers > 0
    out = compiled.vm["main"](tvm.runtime.tensor(x.numpy())).numpy()
    assert_close_to_exact(out, pruned, x)


@pytest.fixture
def host_cpu(monkeypatch):
    """Set ``MCPRUNER_HOST_CPU`` (None: unset) and rebuild the ``host`` preset; restored after."""
    from tvm_mcpruner import targets

    def force(name):
        if name is None:
            monkeypatch.delenv(targets.HOST_CPU_ENV, raising=False)
        else:
            monkeypatch.setenv(targets.HOST_CPU_ENV, name)
        targets._host_preset.cache_clear()
        return name

    yield force
    monkeypatch.undo()
    targets._host_preset.cache_clear()


def test_the_host_preset_can_be_built_for_a_narrower_cpu(host_cpu):
    host_cpu("znver1")  # AVX2 + FMA, no AVX-512: runs on any x86 host that has AVX2
    preset = mcp.get_preset("host")
    assert preset.vector_width == 8 and "built as znver1" in preset.description
    assert preset.tvm_target().attrs["mcpu"] == "znver1"
    assert mcp.targets.host_cpu_name() == "znver1"  # the tuning log folder follows it


def test_a_host_cpu_this_machine_cannot_run_or_llvm_does_not_know_is_refused(host_cpu, monkeypatch):
    from tvm_mcpruner import targets

    host_cpu("no-such-cpu")
    with pytest.raises(ValueError, match="MCPRUNER_HOST_CPU='no-such-cpu' is not a CPU name LLVM knows"):
        mcp.get_preset("host")
    monkeypatch.setattr(targets, "cpu_flags", lambda: {"avx", "avx2", "fma"})  # an AVX2-only machine
    host_cpu("znver4")
    with pytest.raises(ValueError, match="needs 16-lane vectors, but this CPU has 8"):
        mcp.get_preset("host")


@pytest.mark.parametrize("name, says", [("hikey970-cpu", "built for aarch64-linux-gnu"),
                                        ("hikey970-mali", "no opencl device")])
def test_a_model_built_for_code_this_process_cannot_run_says_how_to_run_it(name, says):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU()).eval()
    x = torch.randn(1, 8, 6, 6)
    compiled = mcp.compile(mcp.from_torch(model, (x,)), target=name, tuning_log=None)
    assert compiled.device is None and says in compiled.cannot_run_here
    with pytest.raises(RuntimeError, match="export_library"):
        compiled(x.numpy())


def test_code_for_a_wider_cpu_than_this_one_is_refused_before_it_runs(monkeypatch):
    from tvm_mcpruner import targets

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU()).eval()
    x = torch.randn(1, 8, 6, 6)
    monkeypatch.setattr(targets, "cpu_flags", lambda: {"sse4_2", "avx", "avx2", "fma"})  # an AVX2-only machine
    compiled = mcp.compile(mcp.from_torch(model, (x,)), target="x86-avx512", tuning_log=None)
    assert compiled.device is None and "avx512f" in compiled.cannot_run_here
    with pytest.raises(RuntimeError, match="avx512f.*this CPU lacks"):
        compiled(x.numpy())
    assert mcp.compile(mcp.from_torch(model, (x,)), target="x86-avx2", tuning_log=None).device is not None
