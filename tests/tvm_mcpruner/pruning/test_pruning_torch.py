"""Masks behave like torch.nn.utils.prune: forward, gradients, state_dict, bake, errors."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import tvm_mcpruner as mcp
from tvm_mcpruner.pruning import bake, load_pruned_state_dict, prune


def build_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 20, 3, padding=1), nn.BatchNorm2d(20), nn.ReLU(),
        nn.Conv2d(20, 20, 3, padding=1, groups=20), nn.Conv2d(20, 16, 1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )


def x_input() -> torch.Tensor:
    return torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))


def test_lazy_export_and_copy_semantics():
    model = build_model()
    before = model[3].weight.detach().clone()
    pruned, report = mcp.prune(model, target="hikey970-cpu")
    assert isinstance(report, mcp.PruneReport)
    assert pruned is not model and not hasattr(model[3], "weight_mask")
    assert torch.equal(model[3].weight, before)
    same, _ = prune(model, target="hikey970-cpu", inplace=True)
    assert same is model and hasattr(model[3], "weight_mask")


def test_reparametrization_and_outputs_change():
    model = build_model().eval()
    pruned, _ = prune(model, target="hikey970-cpu")
    pruned.eval()
    conv = pruned[3]
    assert isinstance(conv.weight_orig, nn.Parameter) and "weight_mask" in dict(conv.named_buffers())
    assert "weight" not in dict(conv.named_parameters())
    assert not hasattr(pruned[0], "weight_mask"), "stem stays dense"
    with torch.no_grad():
        out, ref = pruned(x_input()), model(x_input())
    assert out.shape == ref.shape and not torch.allclose(out, ref)


def test_gradients_of_pruned_weights_are_zero():
    pruned, _ = prune(build_model(), target="hikey970-cpu")
    pruned.train()
    pruned(x_input()).square().sum().backward()
    for idx in (3, 9):
        conv = pruned[idx]
        grad = conv.weight_orig.grad
        assert grad is not None and grad.abs().sum() > 0
        assert (grad[conv.weight_mask == 0] == 0).all()


def test_state_dict_round_trip_into_fresh_model():
    pruned, _ = prune(build_model(), target="host")
    pruned.eval()
    buffer = io.BytesIO()
    torch.save(pruned.state_dict(), buffer)
    buffer.seek(0)
    fresh = build_model(seed=123)
    loaded = load_pruned_state_dict(fresh, torch.load(buffer))
    assert loaded is fresh
    loaded.eval()
    assert torch.equal(loaded[3].weight, pruned[3].weight), "weight refreshed before any forward"
    with torch.no_grad():
        assert torch.equal(loaded(x_input()), pruned(x_input()))
    # Loading again into the already-reparametrized model also works.
    load_pruned_state_dict(loaded, pruned.state_dict())


def test_load_rejects_mismatched_keys():
    pruned, _ = prune(build_model(), target="host")
    state = pruned.state_dict()
    state["bogus"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="bogus"):
        load_pruned_state_dict(build_model(), state)


def test_bake_identical_outputs_no_hooks():
    pruned, _ = prune(build_model(), target="hikey970-mali")
    pruned.eval()
    baked = bake(pruned)
    assert baked is not pruned and hasattr(pruned[3], "weight_mask"), "bake copies"
    for module in baked.modules():
        assert not module._forward_pre_hooks
        assert not any(name.endswith(("_orig", "_mask")) for name in module.state_dict())
    assert isinstance(baked[3].weight, nn.Parameter)
    with torch.no_grad():
        assert torch.equal(baked(x_input()), pruned(x_input()))


def test_fine_tuning_step_keeps_zeros():
    pruned, _ = prune(build_model(), target="hikey970-cpu")
    zeros = pruned[3].weight_mask == 0
    opt = torch.optim.SGD(pruned.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for _ in range(2):
        opt.zero_grad()
        pruned(x_input()).square().sum().backward()
        opt.step()
    pruned(x_input())  # the hook recomputes weight
    assert (pruned[3].weight[zeros] == 0).all()


def test_prune_on_top_of_torch_pruning_multiplies_masks():
    model = build_model()
    torch.nn.utils.prune.l1_unstructured(model[3], "weight", amount=0.1)
    earlier = model[3].weight_mask.clone()
    pruned, _ = prune(model, target="hikey970-cpu")
    assert (pruned[3].weight_mask <= earlier).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"pattern_k": 0}, "pattern_k"),
        ({"pattern_k": 10}, "pattern_k"),
        ({"pattern_k": 4.0}, "pattern_k"),
        ({"keep_kernels": 0.0}, "keep_kernels"),
        ({"keep_kernels": 1.5}, "keep_kernels"),
        ({"keep_kernels": -0.1}, "keep_kernels"),
        ({"num_patterns": 0}, "num_patterns"),
        ({"min_in_channels": 0}, "min_in_channels"),
        ({"target": "pixel9-npu"}, "unknown target preset 'pixel9-npu'"),
        ({"keep_kernels": float("nan")}, "keep_kernels"),
        ({"ratio": float("nan")}, "ratio must be a number >= 1"),
        ({"ratio": float("inf")}, "ratio must be a number >= 1"),
        ({"data": []}, "data holds no batch"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        prune(build_model(), **kwargs)


def test_non_module_raises_type_error():
    with pytest.raises(TypeError, match="nn.Module"):
        prune("resnet18")


def test_a_torchscript_module_is_refused_naming_what_to_prune_instead():
    scripted = torch.jit.script(build_model().eval())
    with pytest.raises(TypeError, match="TorchScript module .* prune the eager nn.Module"):
        prune(scripted)


def test_numpy_scalars_are_numbers_too():
    import numpy as np

    _, report = prune(build_model(), target="hikey970-cpu", keep_kernels=np.float32(0.5))
    assert report.keep_kernels == 0.5 and report.pruned_layers


def test_no_tvm_import_in_pruning_package():
    from pathlib import Path

    import tvm_mcpruner.pruning as pkg

    for path in Path(pkg.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "import tvm\n" not in text and "from tvm " not in text and "import tvm." not in text, path
