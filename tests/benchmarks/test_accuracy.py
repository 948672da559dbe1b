"""benchmarks/accuracy.py --quick: the accuracy pipeline end to end on a Fashion-MNIST subset."""

from __future__ import annotations

import json

import pytest

from tests._resources import require_fashion_mnist

from . import load_benchmark


@pytest.fixture(autouse=True)
def _fashion_mnist():
    require_fashion_mnist()


@pytest.mark.slow
def test_quick_mode_prunes_compares_and_compiles(tmp_path):
    accuracy = load_benchmark("accuracy")
    baselines = ["--baseline-dir", str(tmp_path / "baselines")]  # trained by the first run, reused by the second
    payload = accuracy.main(["--quick", "--out", str(tmp_path), "--assets", str(tmp_path / "assets"), *baselines])
    entry = payload["models"]["vgg11_small"]
    methods = [row["method"] for row in entry["rows"]]
    assert methods == ["pattern+connectivity (admm)", "pattern+connectivity (iterative)",
                       "unstructured magnitude", "filter (L1 channels)"]
    ours = entry["rows"][:2]
    assert all(row["mac_reduction"] >= 8 for row in ours)
    # equal MACs: unstructured copies our per-layer counts; filter pruning bisects whole
    # channels to at least our reduction
    assert entry["rows"][2]["mac_reduction"] == pytest.approx(ours[0]["mac_reduction"], rel=0.01)
    assert ours[0]["mac_reduction"] <= entry["rows"][3]["mac_reduction"] < 1.2 * ours[0]["mac_reduction"]
    assert entry["compiled"][0]["same_predictions"] >= 0.995
    saved = json.loads((tmp_path / "accuracy_quick.json").read_text())
    assert saved["models"]["vgg11_small"]["baseline"]["top1"] > 0.1
    assert "| 8x | unstructured magnitude |" in (tmp_path / "accuracy_quick.md").read_text()
    model, meta = accuracy.load_pruned(tmp_path / "assets" / "vgg11_small_fmnist_pruned_8x.pt")
    assert meta["ratio"] == 8 and meta["report"]["mac_reduction"] >= 8
    # The alternatives run alone (a process of their own) match the one-shot plan: the
    # same MACs as beside our schedules, whose plan comes from the same weights and batch.
    alone = accuracy.main(["--quick", "--schedules", "", "--alternatives", "unstructured", "--no-compile",
                           "--out", str(tmp_path / "alone"), *baselines])
    (row,) = alone["models"]["vgg11_small"]["rows"]
    assert row["method"] == "unstructured magnitude" and row["mac_reduction"] == entry["rows"][2]["mac_reduction"]


def test_checkpoint_folders_name_the_recipe_so_a_changed_one_starts_afresh(tmp_path):
    accuracy = load_benchmark("accuracy")
    default = accuracy.parse_args(["--checkpoint-dir", str(tmp_path), "--prune-epochs", "80"])
    assert accuracy.finetune_config(default, "m_8x_iterative").checkpoint_dir == tmp_path / "m_8x_iterative_80ep_seed0"
    changed = accuracy.parse_args(["--checkpoint-dir", str(tmp_path), "--prune-epochs", "80",
                                   "--weight-decay", "1e-4", "--finetune-lr", "0.02"])
    config = accuracy.finetune_config(changed, "m_8x_iterative")
    assert config.checkpoint_dir == tmp_path / "m_8x_iterative_80ep_seed0_lr0.02_wd0.0001"
    assert (config.lr, config.weight_decay) == (0.02, 1e-4)
    floored = accuracy.parse_args(["--checkpoint-dir", str(tmp_path), "--prune-epochs", "80", "--min-layer-keep", "0.25"])
    assert accuracy.finetune_config(floored, "m_8x_iterative").checkpoint_dir == tmp_path / "m_8x_iterative_80ep_seed0_minkeep0.25"
    library = accuracy.parse_args(["--checkpoint-dir", str(tmp_path), "--prune-epochs", "80", "--num-patterns", "16"])
    assert accuracy.finetune_config(library, "m_8x_iterative").checkpoint_dir == tmp_path / "m_8x_iterative_80ep_seed0_patterns16"
    assert (accuracy.PATTERN_K, accuracy.NUM_PATTERNS) == (4, 8)  # prune()'s defaults, so old folders keep their names


def test_channels_last_reaches_every_training_config():
    accuracy = load_benchmark("accuracy")
    assert accuracy.finetune_config(accuracy.parse_args(["--channels-last"]), "m").channels_last
    assert not accuracy.finetune_config(accuracy.parse_args([]), "m").channels_last


def test_pattern_options_reach_the_pruning_plan():
    accuracy = load_benchmark("accuracy")
    args = accuracy.parse_args(["--pattern-k", "5", "--num-patterns", "4", "--train-subset", "256", "--test-subset", "8"])
    train, _ = accuracy.load_data(args)
    report = accuracy.oneshot_plan(accuracy.get_model("vgg11_small", **accuracy.model_kwargs(train)), 8, args, train)
    assert (report.pattern_k, report.num_patterns, len(report.library)) == (5, 4, 4)
    assert all(len(taps) == 5 for taps in report.library)
    assert report.mac_reduction >= 8
