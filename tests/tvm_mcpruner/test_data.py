"""Local-only data readers: idx (Fashion-MNIST), CIFAR-10 batches, ImageFolder; batches and errors."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from tests._resources import require_fashion_mnist
from tvm_mcpruner import data as mcp_data
from tvm_mcpruner.data import load_split, read_idx


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(payload)


def make_idx_dir(root, n_train=6, n_test=4, compress=True):
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), compress)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n) % 3, compress)
    return root


@pytest.mark.parametrize("compress", [True, False])
def test_idx_directory(tmp_path, compress):
    make_idx_dir(tmp_path, compress=compress)
    train, test = load_split(tmp_path, "train"), load_split(tmp_path, "test")
    assert train.images.shape == (6, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.labels.tolist() == [0, 1, 2, 0]
    assert train.classes == ("0", "1", "2")
    assert test.mean == train.mean, "both splits normalised with the training statistics"


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "bad")
    header = bytes([0, 0, 0x08, 1]) + struct.pack(">I", 10)
    (tmp_path / "short").write_bytes(header + b"\x00" * 3)
    with pytest.raises(ValueError, match="file has 3"):
        read_idx(tmp_path / "short")


def test_cifar_batches(tmp_path):
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"labels": [0, 1, 2]}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"cat", b"dog", b"ship"]}))
    train = load_split(tmp_path, "train")
    assert train.images.shape == (15, 3, 32, 32) and train.classes == ("cat", "dog", "ship")
    assert load_split(tmp_path, "test").labels.tolist() == [0, 1, 2]


def test_image_folder(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for label, name in enumerate(("ants", "bees")):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 6), (label * 200, i * 50, 10)).save(tmp_path / split / name / f"{i}.png")
    data = load_split(tmp_path, "test")
    assert data.classes == ("ants", "bees") and data.images.shape == (4, 3, 6, 8)
    assert data.labels.tolist() == [0, 0, 1, 1]
    assert int(data.images[2, 0, 0, 0]) == 200


def test_image_folder_of_mixed_sizes_is_an_error(tmp_path):
    from PIL import Image

    (tmp_path / "a").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "a" / "0.png")
    Image.new("L", (5, 4)).save(tmp_path / "a" / "1.png")
    with pytest.raises(ValueError, match="differ in size"):
        load_split(tmp_path)


def test_missing_sources_name_the_path_and_the_package(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        load_split(tmp_path / "nowhere")
    monkeypatch.setattr(mcp_data, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"absent.*dataset-fashion-mnist"):
        load_split("fashion-mnist")
    with pytest.raises(ValueError, match="split"):
        load_split("fashion-mnist", "validation")


def test_batches_shuffle_augment_and_cover_everything(tmp_path):
    data = load_split(make_idx_dir(tmp_path, n_train=10), "train")
    plain = list(data.loader(batch_size=4))
    assert [len(y) for _, y in plain] == [4, 4, 2] and len(data.loader(batch_size=4)) == 3
    assert torch.allclose(plain[0][0], data.normalise(data.images[:4]))
    loader = data.loader(batch_size=10, shuffle=True, augment=True, seed=3)
    first, second = next(iter(loader))[1], next(iter(loader))[1]
    assert sorted(first.tolist()) == sorted(data.labels.tolist()) and not torch.equal(first, second)


def test_shift_and_flip_moves_pixels_without_inventing_any():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).reshape(2, 1, 6, 6) + 1
    out = mcp_data._shift_and_flip(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    for original, moved in zip(images, out):
        values = set(moved[moved > 0].tolist())
        assert values <= set(original.flatten().tolist()) and len(values) >= 16  # at most 2 rows/cols lost


def test_fashion_mnist_from_the_debian_package():
    require_fashion_mnist()
    train, test = load_split("fashion-mnist", "train"), load_split("fashion-mnist", "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert train.classes[9] == "Ankle boot"
    x, _ = next(iter(train.loader(1000)))
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1
