"""The report: entries per conv, counts from the sparse format, table and JSON."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tvm_mcpruner.pruning import PruneReport, prune
from tvm_mcpruner.pruning.patterns import candidate_patterns, draw_patterns, select_library
from tvm_mcpruner.sparse_format import pack_pattern_weights


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 20, 3, padding=1), nn.ReLU(),
        nn.Conv2d(20, 20, 3, padding=1, groups=20),
        nn.Conv2d(20, 32, 1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1),
    )


def test_candidates():
    assert [len(candidate_patterns(k)) for k in range(1, 10)] == [1, 8, 28, 56, 70, 56, 28, 8, 1]
    assert candidate_patterns(4)[:, 4].all() and (candidate_patterns(4).sum(1) == 4).all()


def test_library_is_most_voted():
    # 3 kernels prefer the top row, 1 the bottom row: top row first, bottom row second.
    energy = torch.full((4, 9), 0.01)
    energy[:3, [0, 1, 2]] = 1.0
    energy[3, [6, 7, 8]] = 1.0
    library = select_library([energy], 4, 2)
    assert library[0].nonzero().flatten().tolist() == [0, 1, 2, 4]
    assert library[1].nonzero().flatten().tolist() == [4, 6, 7, 8]
    assert len(select_library([energy], 4, 500)) == 56  # C(8, 3): all candidates
    assert len(select_library([], 4, 8)) == 0


def test_entries_reasons_and_format_counts():
    pruned, report = prune(build_model(), target="hikey970-cpu")
    assert [layer.name for layer in report.layers] == ["0", "2", "4", "5", "7"]
    by_name = {layer.name: layer for layer in report.layers}
    assert by_name["0"].reason == "in_channels=3 < min_in_channels=4 (stem) left dense"
    assert by_name["4"].reason == "groups=20 (depthwise) left dense"
    pointwise = by_name["5"]  # 1x1: connectivity only, half of the 20 channels per group
    assert pointwise.pruned and pointwise.reason.startswith("10/20 channels kept")
    assert pointwise.mac_reduction == 2.0 and pointwise.patterns_used == ()
    for name in ("2", "7"):
        layer = by_name[name]
        packed = pack_pattern_weights(pruned.get_submodule(name).weight.detach().numpy(), 4)
        assert layer.pruned and layer.mac_reduction == packed.mac_reduction == 9 / 4 * 2
        assert layer.kept_kernels * 2 == layer.total_kernels
        assert layer.fill == 1.0 and set(layer.patterns_used) <= set(range(len(report.library)))
    assert not by_name["0"].pruned and by_name["0"].mac_reduction == 1.0
    patterned = [layer for layer in report.pruned_layers if layer.shape[2:] == (3, 3)]
    assert sum(report.library_usage) == sum(layer.stored_kernels for layer in patterned)
    dense = sum(layer.dense_macs_per_pixel for layer in report.layers)
    assert report.dense_macs == dense and report.mac_reduction > 1.0


def test_pointwise_keep_is_separate_and_can_leave_1x1_dense():
    pruned, report = prune(build_model(), target="hikey970-cpu", keep_kernels=0.5, keep_pointwise=0.25)
    by_name = {layer.name: layer for layer in report.layers}
    assert by_name["5"].mac_reduction == 4.0 and by_name["2"].mac_reduction == 4.5
    weight = pruned.get_submodule("5").weight.detach()
    kept = weight.reshape(-1, 4, weight.shape[1]).ne(0).any(dim=1)  # [groups, C]
    assert (kept.sum(dim=1) == 5).all(), "each group of 4 filters keeps 5 of 20 channels"
    _, report = prune(build_model(), target="hikey970-cpu", keep_pointwise=1)
    assert report.layers[3].reason == "kernel 1x1 left dense (keep_pointwise=1)"
    with pytest.raises(ValueError, match="keep_pointwise"):
        prune(build_model(), keep_pointwise=0)


def test_linear_layers_are_pruned_only_with_keep_linear():
    model = nn.Sequential(build_model(), nn.Flatten(), nn.Linear(512, 24), nn.ReLU(), nn.Linear(24, 3))
    _, report = prune(model, target="hikey970-cpu")
    assert all(len(layer.shape) == 4 for layer in report.layers), "Linear untouched by default"
    pruned, report = prune(model, target="hikey970-cpu", keep_linear=0.25, example_input=torch.randn(2, 3, 8, 8))
    fc1, fc2 = report.layers[-2:]
    assert fc1.name == "2" and fc1.shape == (24, 512) and fc1.pruned and fc1.mac_reduction == 4.0
    assert fc1.output_pixels == 1 and fc1.patterns_used == ()
    weight = pruned.get_submodule("2").weight.detach()
    kept = weight.reshape(6, 4, 512).ne(0).any(dim=1)
    assert (kept.sum(dim=1) == 128).all(), "each group of 4 outputs keeps 128 of 512 features"
    # 3 outputs in one group of 4 lanes: 3 * 24 dense MACs, 4 lanes * 6 kept features issued
    assert fc2.pruned and fc2.mac_reduction == pytest.approx(3 * 24 / (4 * 6))


def test_per_image_macs_with_example_input():
    model = build_model().train()
    _, report = prune(model, target="hikey970-cpu", example_input=torch.randn(1, 3, 8, 8))
    pixels = {layer.name: layer.output_pixels for layer in report.layers}
    assert pixels == {"0": 64, "2": 64, "4": 64, "5": 64, "7": 16}
    assert report.macs_basis.startswith("per image")
    assert report.dense_macs == sum(layer.dense_macs_per_pixel * pixels[layer.name] for layer in report.layers)
    assert model.training, "the example forward pass restores training mode"


def test_str_and_json():
    _, report = prune(build_model(), target="x86-avx512", num_patterns=3)
    text = str(report)
    assert "V=16" in text and "total conv MACs" in text and "reduction" in text
    assert "groups=20 (depthwise) left dense" in text and "last group 4 of 16 lanes" in text
    assert text.count("p0") == 1 and "#" in text
    header = next(line for line in text.splitlines() if line.startswith("layer"))
    assert header.index("shape") < header.index("patterns") < header.index("kept kernels") < header.index("MAC red.")
    data = json.loads(json.dumps(report.to_dict()))
    assert len(data["layers"]) == 5 and len(data["library"]) == 3
    assert data["mac_reduction"] == report.mac_reduction
    assert isinstance(report, PruneReport)


def test_drawing():
    lines = draw_patterns(candidate_patterns(4)[:2])
    # Candidates in lexicographic order: {0,1,2}+centre, then {0,1,3}+centre.
    assert lines == ["  p0    p1", "  ###   ##.", "  .#.   ##.", "  ...   ..."]
    assert draw_patterns(candidate_patterns(4)[:0])[0].strip().startswith("(empty")


def test_model_without_eligible_convs():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU())
    pruned, report = prune(model)
    assert not report.pruned_layers and report.library == () and report.mac_reduction == 1.0
    assert "empty" in str(report)


def test_pruning_twice_reports_what_the_weights_keep():
    """A second prune with keep 1 leaves the first's masks: its report says so, with the
    counts the compiler will see, not 'dense 1.00x' or 'all channels kept'."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 32, 1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1)).eval()
    once, first = prune(model, target="hikey970-cpu", keep_kernels=0.5)
    _, again = prune(once, target="hikey970-cpu", keep_kernels=1.0)
    pointwise, conv = again.layers
    assert pointwise.pruned and pointwise.mac_reduction == first.layers[0].mac_reduction == 2.0
    assert "keep_pointwise=1" in pointwise.reason and "pruned before: 8/16 channels kept" in pointwise.reason
    assert conv.pruned and conv.reason.startswith("16/32 channels kept")
    _, fresh = prune(model, target="hikey970-cpu", keep_kernels=1.0)  # never pruned: dense it stays
    assert not fresh.layers[0].pruned and fresh.layers[0].mac_reduction == 1.0
