"""`mcpruner prune` on local data: schedules, ratio, saved file that `compile --weights` reads."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from tvm_mcpruner.cli import _load_weights, _parser, main
from tvm_mcpruner.pruning import load_pruned


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_idx(tmp_path):
    """A 4-class 28x28 idx dataset: a bright square in one quadrant per class."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 96), ("t10k", 48)):
        labels = np.arange(n) % 4
        images = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(labels):
            r, c = divmod(int(label), 2)
            images[i, 14 * r:14 * r + 14, 14 * c:14 * c + 14] += 150
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return tmp_path


def test_prune_with_data_ratio_and_schedule_saves_a_loadable_model(tiny_idx, tmp_path, capsys):
    out = tmp_path / "pruned.pt"
    code = main(["prune", "--model", "vgg11_small", "--data", str(tiny_idx), "--ratio", "4", "--schedule",
                 "iterative", "--epochs", "2", "--target", "hikey970-cpu", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "top-1 on idx:" in text and "(iterative, 2 epochs)" in text
    model, meta = load_pruned(out)
    assert meta["model"] == "vgg11_small" and meta["model_kwargs"] == {"in_channels": 1, "num_classes": 4}
    assert meta["report"]["mac_reduction"] >= 4
    # compile --weights rebuilds the same model from the file
    args = _parser().parse_args(["compile", "--weights", str(out)])
    rebuilt = _load_weights(args)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_prune_min_layer_keep_floors_every_layer(tmp_path):
    out = tmp_path / "floored.pt"
    assert main(["prune", "--model", "vgg11_small", "--input-shape", "1,1,28,28", "--ratio", "4",
                 "--min-layer-keep", "0.25", "--target", "hikey970-cpu", "--out", str(out)]) == 0
    report = load_pruned(out)[1]["report"]
    assert report["mac_reduction"] >= 4
    shares = [layer["kept_kernels"] / layer["total_kernels"] for layer in report["layers"] if layer.get("total_kernels")]
    assert shares and min(shares) >= 0.25


def test_prune_continues_from_a_saved_model(tiny_idx, tmp_path):
    first = tmp_path / "a.pt"
    assert main(["prune", "--model", "vgg11_small", "--data", str(tiny_idx), "--keep-kernels", "0.75",
                 "--target", "hikey970-cpu", "--out", str(first)]) == 0
    second = tmp_path / "b.pt"
    assert main(["prune", "--model", str(first), "--data", str(tiny_idx), "--keep-kernels", "0.5",
                 "--target", "hikey970-cpu", "--out", str(second)]) == 0
    _, meta = load_pruned(second)
    assert meta["model"] == "vgg11_small"


def test_training_without_data_and_onnx_input_are_clear_errors(tiny_idx, capsys):
    assert main(["prune", "--schedule", "admm", "--epochs", "2"]) == 2
    assert "give --data" in capsys.readouterr().err
    assert main(["prune", "--model", "net.onnx", "--data", str(tiny_idx)]) == 2
    assert "ONNX files cannot be pruned here" in capsys.readouterr().err


def test_prune_with_checkpoint_dir_resumes_instead_of_training_again(tiny_idx, tmp_path):
    command = ["prune", "--model", "vgg11_small", "--data", str(tiny_idx), "--ratio", "4", "--schedule",
               "iterative", "--epochs", "2", "--target", "hikey970-cpu", "--checkpoint-dir", str(tmp_path / "ck")]
    assert main([*command, "--out", str(tmp_path / "a.pt")]) == 0
    saved = torch.load(tmp_path / "ck" / "iterative.pt", weights_only=True)
    assert saved["epoch"] == 2
    # the finished run replays from its checkpoint: the same pruned weights
    assert main([*command, "--out", str(tmp_path / "b.pt")]) == 0
    first, _ = load_pruned(tmp_path / "a.pt")
    second, _ = load_pruned(tmp_path / "b.pt")
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
