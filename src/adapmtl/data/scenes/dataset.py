"""``ScenesDataset``: synthetic scenes rendered on the fly, deterministic per (seed, split,
index)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from adapmtl.data.errors import DataError
from adapmtl.data.sample import TASK_NAMES, check_tasks, is_size
from adapmtl.data.scenes.layout import NUM_CLASSES, sample_scene
from adapmtl.data.scenes.render import SceneRender, render
from adapmtl.data.transforms import Sample, generator_for, random_flip

SPLITS = {"train": 0, "val": 1, "test": 2}
# Image normalisation: (rgb / 255 - IMAGE_MEAN) / IMAGE_STD per channel, RGB order; the
# constants are the scenes' own pixel statistics (200 scenes, seed 11), rounded.
IMAGE_MEAN = (0.71, 0.67, 0.62)
IMAGE_STD = (0.17, 0.17, 0.18)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator that draws scene ``index`` of ``split``: a NumPy ``SeedSequence`` of
    (seed, split id, index), so splits are disjoint streams and the scene does not depend on
    the order in which items are requested or on the worker that renders them."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], index]))


def normalise_image(rgb: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W], (rgb / 255 - IMAGE_MEAN) / IMAGE_STD."""
    image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float() / 255
    mean = torch.tensor(IMAGE_MEAN)[:, None, None]
    std = torch.tensor(IMAGE_STD)[:, None, None]
    return (image - mean) / std


def render_to_sample(view: SceneRender, tasks: Sequence[str]) -> Sample:
    """Convert a render to ``(image, targets)`` in the library's conventions."""
    available = {
        "seg": lambda: torch.from_numpy(view.seg),
        "depth": lambda: torch.from_numpy(view.depth)[None],
        "normal": lambda: torch.from_numpy(np.ascontiguousarray(view.normal.transpose(2, 0, 1))),
        "keypoint": lambda: torch.from_numpy(view.keypoint)[None],
        "edge": lambda: torch.from_numpy(view.edge)[None],
    }
    return normalise_image(view.rgb), {task: available[task]() for task in tasks}


class ScenesDataset(Dataset):
    """``n`` synthetic scenes of ``size = (H, W)``, rendered when an item is requested.

    Item ``i`` of a split is always the same scene (``scene_rng(seed, split, i)``), whatever the
    worker or epoch. With ``augment=True`` a horizontal flip (p = 0.5, normals' x negated) is
    drawn from (seed, split, epoch, i); call :meth:`set_epoch` each epoch to vary it.
    """

    num_classes = NUM_CLASSES

    def __init__(
        self,
        n: int,
        size: tuple[int, int] = (64, 64),
        seed: int = 0,
        tasks: Sequence[str] = TASK_NAMES,
        split: str = "train",
        augment: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise DataError(f"scenes: split must be one of {', '.join(SPLITS)}, got {split!r}")
        if not isinstance(n, int) or n < 1:
            raise DataError(f"scenes: n must be a positive integer, got {n!r}")
        if not is_size(size, minimum=2):
            raise DataError(f"scenes: size must be (H, W) with integers >= 2, got {size!r}")
        if not isinstance(seed, int) or seed < 0:
            raise DataError(f"scenes: seed must be a non-negative integer, got {seed!r}")
        self.n = n
        self.size = (int(size[0]), int(size[1]))
        self.seed = seed
        self.tasks = check_tasks(tasks, TASK_NAMES, "scenes")
        self.split = split
        self.augment = augment
        self.epoch = 0

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def render(self, index: int) -> SceneRender:
        """The full render of item ``index`` (all targets, camera intrinsics, keypoints)."""
        if not 0 <= index < self.n:
            raise IndexError(f"scenes: index {index} out of range for {self.n} items")
        return render(sample_scene(scene_rng(self.seed, self.split, index)), self.size)

    def __getitem__(self, index: int) -> Sample:
        image, targets = render_to_sample(self.render(index), self.tasks)
        if self.augment:
            generator = generator_for(self.seed, SPLITS[self.split], self.epoch, index)
            image, targets = random_flip(image, targets, generator)
        return image, targets
