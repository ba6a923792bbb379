"""NYUv2 readers for the two public layouts (docs/reference_implementations.md, data).

* :class:`NYUv2AdaShare` — the AdaShare / DiSparse / TreeMTL / official AdapMTL layout:
  ``<root>/nyu_v2_3task.json`` lists ``[image png, seg png, normal png, depth npy]`` per item,
  40 classes, 255 = ignore.
* :class:`NYUv2MTAN` — the MTAN / LibMTL layout:
  ``<root>/<split>/{image,label,depth,normal}/<i>.npy``, 13 classes, -1 = ignore (mapped to 255).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from adapmtl.data.errors import DataError, MissingDataError
from adapmtl.data.files import (
    check_mode,
    check_root,
    check_shape,
    check_size,
    npy_header,
    png_header,
    read_npy,
    read_png,
    read_split_listing,
    resolve_inside,
)
from adapmtl.data.reader import ReaderDataset, image_to_tensor
from adapmtl.data.sample import IGNORE_LABEL
from adapmtl.data.transforms import Sample

BGR_MEAN = (104.00699, 116.66877, 122.67891)
DEPTH_VALID_MIN = 3e-5  # the references' depth mask: g > 3e-5
NORMAL_DECODINGS = ("true", "official")
ADASHARE_LISTING = "nyu_v2_3task.json"
ADASHARE_COLUMNS = ("image", "seg", "normal", "depth")
ADASHARE_SPLITS = ("train", "test", "train1", "train2", "val")
_GREY_MODES = {"L": "8-bit greyscale", "P": "8-bit palette (indices are the labels)"}
_RGB_MODES = {"RGB": "8-bit RGB"}


def decode_seg(labels: np.ndarray, num_classes: int, path: Path, ignore: int) -> torch.Tensor:
    """Check class ids (``0 <= id < num_classes`` or ``ignore``) and map ``ignore`` to 255."""
    labels = labels.astype(np.int64)
    bad = (labels != ignore) & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        values = np.unique(labels[bad])[:5].tolist()
        raise DataError(
            f"{str(path)!r}: label values {values} out of range: expected 0..{num_classes - 1} "
            f"or {ignore} (ignore)"
        )
    return torch.from_numpy(np.where(labels == ignore, IGNORE_LABEL, labels))


def decode_depth(depth: np.ndarray, path: Path) -> torch.Tensor:
    """[H, W] or [H, W, 1] float -> [1, H, W]; values <= 3e-5 become 0 (invalid)."""
    if not np.issubdtype(depth.dtype, np.floating):
        raise DataError(f"{str(path)!r}: depth must be a float array, got dtype {depth.dtype}")
    depth = depth.reshape(depth.shape[0], depth.shape[1]).astype(np.float32)
    if not np.isfinite(depth).all():
        raise DataError(f"{str(path)!r}: depth contains NaN or infinite values")
    return torch.from_numpy(np.where(depth > DEPTH_VALID_MIN, depth, 0.0).astype(np.float32))[None]


def decode_normal_png(encoded: np.ndarray, decoding: str) -> torch.Tensor:
    """uint8 [H, W, 3] normal PNG (R, G, B = x, y, z) -> unit vectors [3, H, W].

    Pixels with any channel at 255 are invalid (all-zero vector), as in the references.
    ``"true"`` decodes n = 2 v / 255 - 1 then renormalises (quantisation); ``"official"``
    L2-normalises the raw 0-254 vector, as the official code does.
    """
    raw = encoded.astype(np.float32)
    vectors = 2.0 * raw / 255.0 - 1.0 if decoding == "true" else raw
    norm = np.linalg.norm(vectors, axis=2, keepdims=True)
    valid = (encoded.max(axis=2, keepdims=True) < 255) & (norm > 1e-6)
    unit = np.where(valid, vectors / np.where(valid, norm, 1.0), 0.0).astype(np.float32)
    return torch.from_numpy(unit.transpose(2, 0, 1).copy())


class NYUv2AdaShare(ReaderDataset):
    """NYUv2 in the AdaShare layout (used by the official code, DiSparse and TreeMTL).

    Image: BGR, minus the BGR mean (0-255 scale, no std). ``normal_decoding="true"`` (default)
    gives true unit normals; ``"official"`` reproduces the official code's raw-vector
    normalisation. ``split`` is a key of the listing (train, test, and train1/train2/val when
    present; the layout has no validation split: the references validate on test).
    """

    name = "nyuv2_adashare"
    available_tasks = ("seg", "depth", "normal")
    image_pad = tuple(-m for m in BGR_MEAN)

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] = ("seg", "depth", "normal"),
        size: tuple[int, int] | None = None,
        augment: bool = False,
        seed: int = 0,
        normal_decoding: str = "true",
        num_classes: int = 40,
        listing: str = ADASHARE_LISTING,
    ) -> None:
        super().__init__(split, tasks, size, augment, seed)
        if normal_decoding not in NORMAL_DECODINGS:
            raise DataError(
                f"{self.name}: normal_decoding must be one of {NORMAL_DECODINGS}, "
                f"got {normal_decoding!r}"
            )
        self.normal_decoding = normal_decoding
        self.num_classes = num_classes
        self.root = check_root(root, self.name)
        self.listing = self.root / listing
        self.items = read_split_listing(
            self.listing,
            split,
            ADASHARE_COLUMNS,
            lambda path, where: resolve_inside(self.root, path, where),
        )
        self._check_first_item()

    def _check_first_item(self) -> None:
        item = self.items[0]
        mode, size = png_header(item["image"])
        check_mode(item["image"], mode, _RGB_MODES)
        if "seg" in self.tasks:
            seg_mode, seg_size = png_header(item["seg"])
            check_mode(item["seg"], seg_mode, _GREY_MODES)
            check_size(item["seg"], seg_size, size, "the label map")
        if "normal" in self.tasks:
            normal_mode, normal_size = png_header(item["normal"])
            check_mode(item["normal"], normal_mode, _RGB_MODES)
            check_size(item["normal"], normal_size, size, "the normal map")
        if "depth" in self.tasks:
            shape, dtype = npy_header(item["depth"])
            check_shape(item["depth"], shape, [(*size,), (*size, 1)], "depth")
            if not np.issubdtype(dtype, np.floating):
                raise DataError(
                    f"{str(item['depth'])!r}: depth must be a float array, got dtype {dtype}"
                )

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> Sample:
        item = self.items[index]
        rgb = read_png(item["image"], _RGB_MODES)
        size = rgb.shape[:2]
        targets = {}
        if "seg" in self.tasks:
            labels = read_png(item["seg"], _GREY_MODES)
            check_size(item["seg"], labels.shape[:2], size, "the label map")
            targets["seg"] = decode_seg(labels, self.num_classes, item["seg"], IGNORE_LABEL)
        if "depth" in self.tasks:
            depth = read_npy(item["depth"])
            check_shape(item["depth"], depth.shape, [(*size,), (*size, 1)], "depth")
            targets["depth"] = decode_depth(depth, item["depth"])
        if "normal" in self.tasks:
            encoded = read_png(item["normal"], _RGB_MODES)
            check_size(item["normal"], encoded.shape[:2], size, "the normal map")
            targets["normal"] = decode_normal_png(encoded, self.normal_decoding)
        return image_to_tensor(rgb, BGR_MEAN), targets


MTAN_DIRS = {"image": "image", "seg": "label", "depth": "depth", "normal": "normal"}


class NYUv2MTAN(ReaderDataset):
    """NYUv2 in the MTAN / LibMTL layout (288x384 arrays, 13 classes).

    Arrays are HWC ``.npy`` files named ``<i>.npy``. The image is passed through as stored
    (float, RGB, CHW after transposing; the layout's value range is not documented upstream);
    labels -1 become 255; depth values <= 3e-5 become 0 (invalid); normals must be unit vectors
    or all-zero (invalid).
    """

    name = "nyuv2_mtan"
    available_tasks = ("seg", "depth", "normal")

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] = ("seg", "depth", "normal"),
        size: tuple[int, int] | None = None,
        augment: bool = False,
        seed: int = 0,
        num_classes: int = 13,
    ) -> None:
        super().__init__(split, tasks, size, augment, seed)
        self.num_classes = num_classes
        self.root = check_root(root, self.name)
        self.split_dir = self.root / split
        if not self.split_dir.is_dir():
            raise MissingDataError(
                f"{self.name}: split directory {str(self.split_dir)!r} does not exist "
                "(expected <root>/<split>/{image,label,depth,normal}/<i>.npy)"
            )
        self.names = self._list_items()
        self._check_first_item()

    def _dir(self, kind: str) -> Path:
        return self.split_dir / MTAN_DIRS[kind]

    def _list_items(self) -> list[str]:
        image_dir = self._dir("image")
        if not image_dir.is_dir():
            raise MissingDataError(f"{self.name}: directory {str(image_dir)!r} does not exist")
        names = sorted(p.stem for p in image_dir.glob("*.npy"))
        if not names:
            raise DataError(f"{self.name}: no .npy files in {str(image_dir)!r}")
        if not all(name.isdigit() for name in names):
            odd = next(name for name in names if not name.isdigit())
            raise DataError(
                f"{str(image_dir / (odd + '.npy'))!r}: file names must be <i>.npy, i an integer"
            )
        names.sort(key=int)
        for task in self.tasks:
            task_dir = self._dir(task)
            if not task_dir.is_dir():
                raise MissingDataError(f"{self.name}: directory {str(task_dir)!r} does not exist")
            present = {p.stem for p in task_dir.glob("*.npy")}
            missing = [name for name in names if name not in present]
            if missing:
                raise MissingDataError(
                    f"missing file {str(task_dir / (missing[0] + '.npy'))!r} "
                    f"({len(missing)} {task} files missing for images in {str(image_dir)!r})"
                )
        return names

    def _path(self, kind: str, index: int) -> Path:
        return self._dir(kind) / f"{self.names[index]}.npy"

    def _expected_shapes(self, height: int, width: int) -> dict[str, list[tuple[int | None, ...]]]:
        return {
            "image": [(height, width, 3)],
            "seg": [(height, width), (height, width, 1)],
            "depth": [(height, width), (height, width, 1)],
            "normal": [(height, width, 3)],
        }

    def _check_first_item(self) -> None:
        image_path = self._path("image", 0)
        shape, dtype = npy_header(image_path)
        check_shape(image_path, shape, [(None, None, 3)], "the image")
        if not np.issubdtype(dtype, np.number):
            raise DataError(f"{str(image_path)!r}: the image must be numeric, got dtype {dtype}")
        expected = self._expected_shapes(shape[0], shape[1])
        for task in self.tasks:
            path = self._path(task, 0)
            task_shape, _ = npy_header(path)
            check_shape(path, task_shape, expected[task], task)

    def __len__(self) -> int:
        return len(self.names)

    def load(self, index: int) -> Sample:
        image_path = self._path("image", index)
        image = read_npy(image_path)
        check_shape(image_path, image.shape, [(None, None, 3)], "the image")
        if not np.issubdtype(image.dtype, np.number) or not np.isfinite(image).all():
            raise DataError(f"{str(image_path)!r}: the image must be finite numbers")
        expected = self._expected_shapes(image.shape[0], image.shape[1])
        targets = {}
        for task in self.tasks:
            path = self._path(task, index)
            array = read_npy(path)
            check_shape(path, array.shape, expected[task], task)
            targets[task] = self._decode(task, array, path)
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
        return tensor, targets

    def _decode(self, task: str, array: np.ndarray, path: Path) -> torch.Tensor:
        if task == "seg":
            labels = array.reshape(array.shape[0], array.shape[1])
            if not np.isfinite(labels).all() or (np.round(labels) != labels).any():
                raise DataError(f"{str(path)!r}: labels must be integers (-1 = ignore)")
            return decode_seg(labels, self.num_classes, path, ignore=-1)
        if task == "depth":
            return decode_depth(array, path)
        normals = array.astype(np.float32)
        norm = np.linalg.norm(normals, axis=2)
        valid = norm > 0
        if not np.isfinite(normals).all() or (np.abs(norm[valid] - 1) > 0.1).any():
            raise DataError(
                f"{str(path)!r}: normals must be unit vectors in [-1, 1] (or all-zero = invalid)"
            )
        return torch.from_numpy(normals.transpose(2, 0, 1).copy())
