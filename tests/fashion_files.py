"""Tiny Fashion-MNIST IDX gzip files for the tests, written with ``struct`` (independently of
the reader in adapmtl.data.fashion)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

TRAIN_N, TEST_N = 24, 12


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_gz(path: Path, payload: bytes) -> Path:
    path.write_bytes(gzip.compress(payload))
    return path


def write_fashion(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Random Fashion-MNIST-shaped IDX files under ``root``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (TRAIN_N, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, TRAIN_N, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (TEST_N, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, TEST_N, dtype=np.uint8),
    }
    for part, prefix in (("train", "train"), ("test", "t10k")):
        write_gz(root / f"{prefix}-images-idx3-ubyte.gz", idx_bytes(arrays[f"{part}_images"], 2051))
        write_gz(root / f"{prefix}-labels-idx1-ubyte.gz", idx_bytes(arrays[f"{part}_labels"], 2049))
    return arrays
