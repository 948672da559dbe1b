"""Image classification data read from local files only (torch only; nothing is downloaded).

Three sources, all held in memory as uint8 ``[N, C, H, W]`` tensors (Fashion-MNIST is
47 MB that way, CIFAR-10 180 MB), so batches are cut by indexing instead of a worker pool:

* ``"fashion-mnist"``: the idx(.gz) files of Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist``), or any directory holding the four
  ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` files (MNIST has the same layout);
* a CIFAR-10 "python version" directory (``data_batch_1..5``, ``test_batch``,
  ``batches.meta``);
* a torchvision-style ImageFolder: ``root/<class>/<image>`` (with ``root/train`` and
  ``root/test`` or ``root/val`` used for the splits when present), decoded with Pillow.

:func:`load_split` returns an :class:`ImageData`; ``ImageData.loader(...)`` gives a
re-iterable of normalised ``(images, labels)`` batches that the training loops, the
pruning schedules and ``torch.utils.data.DataLoader`` users alike can consume.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "ImageData",
    "BatchLoader",
    "load_split",
    "read_idx",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_APT = "apt-get install -y dataset-fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# Per-channel statistics of the training splits (standard published values).
_FASHION_MNIST_STATS = ((0.2860,), (0.3530,))
_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# idx type byte -> numpy dtype (big endian, as the format stores multi-byte values)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class ImageData:
    """One split in memory: uint8 images ``[N, C, H, W]``, int64 labels ``[N]``, normalisation."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, count: int, seed: int = 0) -> ImageData:
        """``count`` images drawn without replacement (all when ``count >= len``), fixed by ``seed``."""
        if count >= len(self):
            return self
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count]
        return ImageData(self.name, self.images[order], self.labels[order], self.classes, self.mean, self.std)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, C, H, W]`` -> float32, scaled to [0, 1] then standardised per channel."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (images.float() / 255.0 - mean) / std

    def loader(self, batch_size: int = 128, shuffle: bool = False, augment: bool = False,
               seed: int = 0) -> BatchLoader:
        """A re-iterable of ``(float images, labels)`` batches (see :class:`BatchLoader`)."""
        return BatchLoader(self, batch_size, shuffle, augment, seed)


class BatchLoader:
    """Batches of an :class:`ImageData`; a new shuffle (from one seeded generator) per pass.

    ``augment``: random shifts of up to 2 pixels (zero padding, as a padded random crop)
    and horizontal flips -- the usual light augmentation for 28x28 / 32x32 images.
    """

    def __init__(self, data: ImageData, batch_size: int, shuffle: bool, augment: bool, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The shuffle generator's state: a resumed training run sees the same batches."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.data)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            index = order[start:start + self.batch_size]
            images = self.data.images[index]
            if self.augment:
                images = _shift_and_flip(images, self.generator)
            yield self.data.normalise(images), self.data.labels[index]


def _shift_and_flip(images: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Per image: a random crop of the zero-padded image (a shift) and a coin-flip mirror."""
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w)
    flip = torch.rand(n, generator=generator) < 0.5
    cols = torch.where(flip.view(n, 1, 1, 1), cols.flip(-1), cols)
    batch = torch.arange(n).view(n, 1, 1, 1)
    channels = torch.arange(images.shape[1]).view(1, -1, 1, 1)
    return padded[batch, channels, rows, cols]


# --------------------------------------------------------------------------- idx (MNIST family)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (``.gz`` or raw): magic ``0 0 <type> <ndim>``, big-endian dims, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an idx file (bad magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} ({int(np.prod(dims))} values), file has {data.size}")
    return data.reshape(dims)


def _idx_file(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{root / (stem + '.gz')} not found (nor {stem} uncompressed)")


def _load_idx_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_idx_file(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_idx_file(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(f"{root}: {prefix} images {images.shape} and labels {labels.shape} do not match")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def _is_idx_dir(root: Path) -> bool:
    return any(root.glob("train-images-idx3-ubyte*"))


def _idx_directory(root: Path, split: str) -> ImageData:
    """Any MNIST-layout directory; normalised with its training split's statistics."""
    if root.resolve() == FASHION_MNIST_DIR.resolve():
        return _fashion_mnist(split, root)
    images, labels = _load_idx_split(root, split)
    train_images = images if split == "train" else _load_idx_split(root, "train")[0]
    mean, std = _channel_stats(train_images)
    classes = tuple(str(i) for i in range(int(labels.max()) + 1))
    return ImageData(f"idx:{root.name}", images, labels, classes, mean, std)


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 ``[N, C, H, W]`` images on the [0, 1] scale."""
    scaled = images.float() / 255
    mean = tuple(float(m) for m in scaled.mean(dim=(0, 2, 3)))
    std = tuple(max(float(s), 1e-3) for s in scaled.std(dim=(0, 2, 3)))
    return mean, std


def _fashion_mnist(split: str, root: Path | None) -> ImageData:
    root = FASHION_MNIST_DIR if root is None else root
    if not root.is_dir() or not _is_idx_dir(root):
        raise FileNotFoundError(
            f"Fashion-MNIST idx files not found in {root}; install Debian's package "
            f"(`{FASHION_MNIST_APT}`, as root) or pass the directory holding "
            "train-images-idx3-ubyte.gz etc."
        )
    images, labels = _load_idx_split(root, split)
    return ImageData("fashion-mnist", images, labels, FASHION_MNIST_CLASSES, *_FASHION_MNIST_STATS)


# --------------------------------------------------------------------------- CIFAR-10 python batches


def _is_cifar_dir(root: Path) -> bool:
    return (root / "data_batch_1").is_file() and (root / "test_batch").is_file()


def _unpickle(path: Path) -> dict:
    # CIFAR's own format is a pickle; only files the user pointed us at are read.
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def _cifar10(root: Path, split: str) -> ImageData:
    files = [root / f"data_batch_{i}" for i in range(1, 6)] if split == "train" else [root / "test_batch"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 batch files missing: {', '.join(missing)}")
    batches = [_unpickle(f) for f in files]
    images = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([np.asarray(b[b"labels"], dtype=np.int64) for b in batches])
    meta = root / "batches.meta"
    names = [n.decode() for n in _unpickle(meta)[b"label_names"]] if meta.is_file() else [str(i) for i in range(10)]
    return ImageData("cifar10", torch.from_numpy(images), torch.from_numpy(labels), tuple(names), *_CIFAR10_STATS)


# --------------------------------------------------------------------------- ImageFolder


def _split_dir(root: Path, split: str) -> Path:
    """``root/train`` for training; ``root/test`` or ``root/val`` for testing; else ``root`` itself."""
    names = ("train",) if split == "train" else ("test", "val")
    for name in names:
        if (root / name).is_dir():
            return root / name
    return root


def _image_folder(root: Path, split: str) -> ImageData:
    """An ImageFolder split, normalised with the training split's statistics."""
    images, labels, classes = _read_image_folder(_split_dir(root, split))
    train_dir = _split_dir(root, "train")
    train_images = images if train_dir == _split_dir(root, split) else _read_image_folder(train_dir)[0]
    mean, std = _channel_stats(train_images)
    return ImageData(f"imagefolder:{root.name}", images, labels, classes, mean, std)


def _read_image_folder(base: Path) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    from PIL import Image  # Pillow ships with matplotlib (a requirement); only this reader needs it

    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"{base}: no class sub-directories (expected <class>/<image> files)")
    pixels, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((base / name).iterdir()):
            if path.suffix.lower() in _IMAGE_SUFFIXES:
                with Image.open(path) as img:
                    pixels.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
                labels.append(label)
    if not pixels:
        raise FileNotFoundError(f"{base}: no images ({', '.join(_IMAGE_SUFFIXES)}) in the class directories")
    shapes = {p.shape for p in pixels}
    if len(shapes) != 1:
        raise ValueError(f"{base}: images differ in size {sorted(shapes)[:4]}; resize them to one size first")
    images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(labels), tuple(classes)


# --------------------------------------------------------------------------- entry point


def load_split(source: str | Path = "fashion-mnist", split: str = "train") -> ImageData:
    """Load ``split`` ("train" or "test") of ``source``.

    ``source``: ``"fashion-mnist"`` (the Debian package's directory) or a local directory
    that is recognised by its contents: idx files (MNIST layout), CIFAR-10 python batches,
    or an ImageFolder tree. Raises ``FileNotFoundError`` naming what is missing.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if str(source).lower().replace("_", "-") in ("fashion-mnist", "fashionmnist"):
        return _fashion_mnist(split, None)
    root = Path(source).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"data source {str(source)!r} is neither 'fashion-mnist' nor an existing directory "
            f"(for Fashion-MNIST: `{FASHION_MNIST_APT}`)"
        )
    if _is_idx_dir(root):
        return _idx_directory(root, split)
    if _is_cifar_dir(root):
        return _cifar10(root, split)
    return _image_folder(root, split)
