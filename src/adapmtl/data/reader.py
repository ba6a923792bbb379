"""Shared behaviour of the on-disk dataset readers: task selection, augmentation, resizing,
per-sample seeding."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from adapmtl.data.errors import DataError
from adapmtl.data.sample import check_tasks, is_size
from adapmtl.data.transforms import Sample, generator_for, resize, train_transform


class ReaderDataset(Dataset):
    """Base class: subclasses implement :meth:`load` (one sample at its stored resolution, in the
    library's conventions) and ``__len__``.

    ``size = (H, W)``: with ``augment=True`` the references' training pipeline
    (random scale 0.5-1.5, horizontal flip with normal x negated, pad + random crop to
    ``size``), seeded from (seed, split, epoch, index); without augmentation, a plain resize to
    ``size`` (image bilinear, targets nearest; the official evaluation protocol), or the stored
    resolution when ``size`` is None.
    """

    name = "dataset"
    available_tasks: tuple[str, ...] = ()
    image_pad: tuple[float, float, float] = (0.0, 0.0, 0.0)  # padded image value, normalised

    def __init__(
        self,
        split: str,
        tasks: Sequence[str],
        size: tuple[int, int] | None,
        augment: bool,
        seed: int,
    ) -> None:
        self.split = split
        self.tasks = check_tasks(tasks, self.available_tasks, self.name)
        if size is not None and not is_size(size, minimum=1):
            raise DataError(f"{self.name}: size must be (H, W) positive integers, got {size!r}")
        if not isinstance(seed, int) or seed < 0:
            raise DataError(f"{self.name}: seed must be a non-negative integer, got {seed!r}")
        if augment and size is None:
            raise DataError(f"{self.name}: augment=True needs a crop size, e.g. size=(321, 321)")
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Vary the augmentation between epochs (the same epoch always gives the same crops)."""
        self.epoch = int(epoch)

    def load(self, index: int) -> Sample:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range for {len(self)} items")
        image, targets = self.load(index)
        if self.augment:
            assert self.size is not None
            split_key = zlib.crc32(self.split.encode())
            generator = generator_for(self.seed, split_key, self.epoch, index)
            return train_transform(image, targets, self.size, generator, self.image_pad)
        if self.size is not None:
            return resize(image, targets, self.size)
        return image, targets


def image_to_tensor(rgb, mean_bgr: Sequence[float]) -> torch.Tensor:
    """uint8 RGB [H, W, 3] -> float32 BGR [3, H, W] minus ``mean_bgr`` (0-255 scale, no std):
    the AdaShare-family image normalisation."""
    image = torch.from_numpy(rgb[..., ::-1].copy()).permute(2, 0, 1).float()
    return image - torch.tensor(mean_bgr, dtype=torch.float32)[:, None, None]
