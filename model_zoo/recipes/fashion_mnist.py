"""Fashion-MNIST reader for the IDX files of Debian's ``dataset-fashion-mnist`` package (no torchvision)."""
from __future__ import annotations

import gzip
import os
from typing import Tuple

import numpy as np

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {magic:#x})")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split: str, root: str = DEFAULT_ROOT) -> Tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 (N, 28, 28), labels int64 (N,)) of split ``train`` (60k) or ``test`` (10k)."""
    prefix = {"train": "train", "test": "t10k"}[split]
    images = _read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"))
    labels = _read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz")).astype(np.int64)
    return images, labels
