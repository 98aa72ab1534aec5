"""The built-in datasets: scikit-learn's digits and Fashion-MNIST from Debian's files."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from ..errors import SealFastError
from .sources import ArraySource

FASHION_MNIST_DIR = os.environ.get("SEAL_FAST_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def load_digits_source() -> ArraySource:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 grey levels
    return ArraySource(images, d.target, [str(i) for i in range(10)],
                       {"kind": "builtin", "name": "digits", "origin": "sklearn.datasets.load_digits"})


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def load_fashion_mnist(split: str) -> ArraySource:
    folder = Path(FASHION_MNIST_DIR)
    prefix = {"train": "train", "test": "t10k"}[split]
    images_path = folder / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = folder / f"{prefix}-labels-idx1-ubyte.gz"
    if not images_path.is_file() or not labels_path.is_file():
        raise SealFastError(
            f"Fashion-MNIST files not found in {folder}; install them with "
            "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or point "
            "SEAL_FAST_FASHION_MNIST_DIR at a folder holding the four *-ubyte.gz files")
    images = _read_idx(images_path, 16).reshape(-1, 28, 28)
    labels = _read_idx(labels_path, 8).astype(np.int64)
    return ArraySource(images, labels, FASHION_MNIST_CLASSES,
                       {"kind": "builtin", "name": f"fashion-mnist-{split}", "path": str(folder)})


BUILTIN_SOURCES = {
    "digits": load_digits_source,
    "fashion-mnist": lambda: load_fashion_mnist("test"),
    "fashion-mnist-test": lambda: load_fashion_mnist("test"),
    "fashion-mnist-train": lambda: load_fashion_mnist("train"),
}
