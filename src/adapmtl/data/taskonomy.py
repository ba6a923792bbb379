"""Tiny-Taskonomy reader, AdaShare layout (docs/reference_implementations.md, Tiny-Taskonomy).

``<root>/taskonomy.json`` maps split names (train, test, test_small) to entries of six relative
paths ``[rgb, segment_semantic, normal, depth_zbuffer, keypoints2d, edge_texture]``; each path
is resolved through ``path_template`` (default ``{split_dir}/{path}``: under ``<root>/train`` or
``<root>/test``). Taskonomy's task names are mapped to ours: segment_semantic -> seg,
normal -> normal, depth_zbuffer -> depth, keypoints2d -> keypoint, edge_texture -> edge.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adapmtl.data.errors import DataError
from adapmtl.data.files import (
    check_mode,
    check_root,
    check_shape,
    check_size,
    png_header,
    read_npy,
    read_png,
    read_split_listing,
    resolve_inside,
)
from adapmtl.data.nyuv2 import BGR_MEAN
from adapmtl.data.reader import ReaderDataset, image_to_tensor
from adapmtl.data.sample import IGNORE_LABEL, is_size
from adapmtl.data.transforms import Sample, resize

LISTING = "taskonomy.json"
COLUMNS = ("rgb", "segment_semantic", "normal", "depth_zbuffer", "keypoints2d", "edge_texture")
TASK_OF_COLUMN = {
    "segment_semantic": "seg",
    "normal": "normal",
    "depth_zbuffer": "depth",
    "keypoints2d": "keypoint",
    "edge_texture": "edge",
}
COLUMN_OF_TASK = {task: column for column, task in TASK_OF_COLUMN.items()}
SPLIT_DIRS = {"train": "train", "test": "test", "test_small": "test"}
DEFAULT_TEMPLATE = "{split_dir}/{path}"
DISPARSE_TEMPLATE = "{second}/taskonomy/{first}/{rest}"  # Omnidata-style tree (inferred)
PRIOR_FILE = "semseg_prior_factor.npy"
NUM_CLASSES = 17
DEPTH_INVALID_RAW = 64500  # raw depth_zbuffer >= this is invalid
KEYPOINT_CLIP = 0.005
EDGE_CLIP = 0.08
UNLABELLED = ("ignore", "class0")
_RGB = {"RGB": "8-bit RGB"}
_LABELS = {"L": "8-bit greyscale", "P": "8-bit palette"}
_SIXTEEN_BIT = {"I;16": "16-bit greyscale", "I;16B": "16-bit greyscale", "I": "32-bit integer"}
_MODES = {
    "segment_semantic": _LABELS,
    "normal": _RGB,
    "depth_zbuffer": _SIXTEEN_BIT,
    "keypoints2d": _SIXTEEN_BIT,
    "edge_texture": _SIXTEEN_BIT,
}


def decode_depth_zbuffer(raw: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """raw uint16 -> (log(1 + d) / log(2^16) as [1, H, W] with invalid = 0, validity mask)."""
    valid = raw < DEPTH_INVALID_RAW
    depth = np.log1p(raw.astype(np.float64)) / np.log(2.0**16)
    return torch.from_numpy(np.where(valid, depth, 0.0).astype(np.float32))[None], valid


def decode_clipped(raw: np.ndarray, clip: float) -> torch.Tensor:
    """raw uint16 / 2^16, clipped to [0, clip], rescaled to [-1, 1] (keypoints2d, edge_texture)."""
    value = np.clip(raw.astype(np.float64) / 2.0**16, 0.0, clip) / clip * 2.0 - 1.0
    return torch.from_numpy(value.astype(np.float32))[None]


def decode_normal(encoded: np.ndarray, valid: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> v / 255 * 2 - 1, renormalised; zero where ``valid`` (the depth mask,
    as TreeMTL and the official code) is False."""
    vectors = encoded.astype(np.float32) / 255.0 * 2.0 - 1.0
    norm = np.linalg.norm(vectors, axis=2, keepdims=True)
    keep = valid[..., None] & (norm > 1e-6)
    unit = np.where(keep, vectors / np.where(keep, norm, 1.0), 0.0).astype(np.float32)
    return torch.from_numpy(unit.transpose(2, 0, 1).copy())


class Taskonomy(ReaderDataset):
    """Tiny-Taskonomy, five tasks, decoded as AdaShare does (see docs/data.md).

    Every file is first resized to ``load_size`` (256 x 256 as the references; None keeps the
    stored size): targets by nearest neighbour, the RGB bilinearly (the references use nearest
    for the RGB too, a quirk not copied). Image: BGR minus the BGR mean. Segmentation: raw 0
    (unlabelled) becomes 255 (ignored) by default; ``unlabelled="class0"`` folds it into class 0
    as the references do. Depth: log(1 + d) / log(2^16), 0 where raw >= 64500. Keypoints and
    edges: raw / 2^16 clipped to [0, 0.005] / [0, 0.08] and rescaled to [-1, 1].
    """

    name = "taskonomy"
    available_tasks = ("seg", "depth", "normal", "keypoint", "edge")
    image_pad = tuple(-m for m in BGR_MEAN)

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] = ("seg", "depth", "normal", "keypoint", "edge"),
        size: tuple[int, int] | None = None,
        augment: bool = False,
        seed: int = 0,
        load_size: tuple[int, int] | None = (256, 256),
        unlabelled: str = "ignore",
        path_template: str = DEFAULT_TEMPLATE,
        listing: str = LISTING,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__(split, tasks, size, augment, seed)
        if unlabelled not in UNLABELLED:
            raise DataError(
                f"{self.name}: unlabelled must be one of {UNLABELLED}, got {unlabelled!r}"
            )
        if load_size is not None and not is_size(load_size, minimum=1):
            raise DataError(f"{self.name}: load_size must be (H, W) or None, got {load_size!r}")
        self.unlabelled = unlabelled
        self.load_size = None if load_size is None else (load_size[0], load_size[1])
        self.num_classes = num_classes
        self.path_template = path_template
        self.root = check_root(root, self.name)
        self.listing = self.root / listing
        self.items = read_split_listing(self.listing, split, COLUMNS, self._resolve)
        self._check_first_item()

    def _resolve(self, path: str, where: str) -> Path:
        if not isinstance(path, str) or not path:
            raise DataError(f"{where}: expected a relative file path, got {path!r}")
        parts = path.replace("\\", "/").split("/")
        fields = {
            "split_dir": SPLIT_DIRS.get(self.split, self.split),
            "split": self.split,
            "path": path,
            "first": parts[0],
            "second": parts[1] if len(parts) > 1 else "",
            "rest": "/".join(parts[2:]),
        }
        try:
            relative = self.path_template.format(**fields)
        except (KeyError, IndexError, ValueError) as err:
            raise DataError(
                f"{self.name}: bad path_template {self.path_template!r} ({err}); fields: "
                f"{', '.join('{' + f + '}' for f in fields)}"
            ) from err
        return resolve_inside(self.root, relative, where)

    def _needed_columns(self) -> list[str]:
        columns = [COLUMN_OF_TASK[task] for task in self.tasks]
        if "normal" in self.tasks and "depth_zbuffer" not in columns:
            columns.append("depth_zbuffer")  # the normal mask is the depth mask
        return columns

    def _check_first_item(self) -> None:
        item = self.items[0]
        mode, size = png_header(item["rgb"])
        check_mode(item["rgb"], mode, _RGB)
        for column in self._needed_columns():
            column_mode, column_size = png_header(item[column])
            check_mode(item[column], column_mode, _MODES[column])
            check_size(item[column], column_size, size, column)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def seg_class_weights(self) -> torch.Tensor:
        """Per-class loss weights from ``<root>/semseg_prior_factor.npy`` (no public copy exists:
        uniform weights and a warning when it is absent)."""
        return prior_class_weights(self.root, self.num_classes)

    @classmethod
    def task_options(cls, root: str | Path, num_classes: int = NUM_CLASSES) -> dict[str, Any]:
        """Options the data gives its tasks (a run's task set takes them unless its config sets
        them): the segmentation loss and cross-entropy metric weighted by the class prior, as
        the supplement's Taskonomy tables are."""
        return {"seg": {"class_weights": prior_class_weights(Path(root), num_classes).tolist()}}

    def _read(self, item: dict[str, Path], column: str, size: tuple[int, int]) -> np.ndarray:
        modes = _MODES[column]
        pixels = read_png(item[column], modes)
        check_size(item[column], pixels.shape[:2], size, column)
        if modes is _SIXTEEN_BIT and (pixels.min() < 0 or pixels.max() > 2**16 - 1):
            raise DataError(f"{str(item[column])!r}: {column} values must be 16-bit (0..65535)")
        return pixels

    def _decode_seg(self, raw: np.ndarray, path: Path) -> torch.Tensor:
        raw = raw.astype(np.int64)
        if raw.max() > self.num_classes:
            bad = np.unique(raw[raw > self.num_classes])[:5].tolist()
            raise DataError(
                f"{str(path)!r}: segment_semantic values {bad} out of range: expected 0 "
                f"(unlabelled) .. {self.num_classes}"
            )
        labels = raw - 1
        if self.unlabelled == "class0":
            labels = np.maximum(labels, 0)
        return torch.from_numpy(np.where(labels < 0, IGNORE_LABEL, labels))

    def load(self, index: int) -> Sample:
        item = self.items[index]
        rgb = read_png(item["rgb"], _RGB)
        size = rgb.shape[:2]
        raw = {column: self._read(item, column, size) for column in self._needed_columns()}
        targets: dict[str, torch.Tensor] = {}
        depth_valid = None
        if "depth_zbuffer" in raw:
            depth, depth_valid = decode_depth_zbuffer(raw["depth_zbuffer"])
            if "depth" in self.tasks:
                targets["depth"] = depth
        if "seg" in self.tasks:
            targets["seg"] = self._decode_seg(raw["segment_semantic"], item["segment_semantic"])
        if "normal" in self.tasks:
            targets["normal"] = decode_normal(raw["normal"], depth_valid)
        if "keypoint" in self.tasks:
            targets["keypoint"] = decode_clipped(raw["keypoints2d"], KEYPOINT_CLIP)
        if "edge" in self.tasks:
            targets["edge"] = decode_clipped(raw["edge_texture"], EDGE_CLIP)
        image = image_to_tensor(rgb, BGR_MEAN)
        if self.load_size is not None:
            image, targets = resize(image, targets, self.load_size)
        return image, {task: targets[task] for task in self.tasks}


def prior_class_weights(root: Path, num_classes: int) -> torch.Tensor:
    """The class prior factor ``<root>/semseg_prior_factor.npy`` ([num_classes] weights), or
    uniform weights and a warning when the file is absent (no public copy exists)."""
    path = root / PRIOR_FILE
    if not path.is_file():
        warnings.warn(
            f"{str(path)!r} not found: using uniform segmentation class weights", stacklevel=3
        )
        return torch.ones(num_classes)
    weights = read_npy(path)
    check_shape(path, weights.shape, [(num_classes,)], "the class prior factor")
    return torch.from_numpy(weights.astype(np.float32))
