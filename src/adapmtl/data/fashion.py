"""``FashionPairs``: two Fashion-MNIST items side by side on one 28 x 56 grayscale canvas, with one
10-class label per item (tasks ``left`` and ``right``): a small real-image multitask
classification set in the spirit of MultiMNIST.

The items come from the standard IDX gzip files (``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``)
under ``root``; Debian's ``dataset-fashion-mnist`` package installs them in
:data:`DEFAULT_ROOT`. Splits: ``train`` pairs items of the first ``60000 - holdout`` training
images, ``val`` pairs the last ``holdout`` training images (so tuning never sees the test set),
``test`` pairs the t10k images.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from adapmtl.data.errors import DataError, MissingDataError
from adapmtl.data.sample import check_tasks
from adapmtl.data.transforms import Sample

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
TASKS = ("left", "right")
NUM_CLASSES = 10
ITEM = 28  # items are 28 x 28; the canvas is ITEM x 2 * ITEM
SPLITS = {"train": 0, "val": 1, "test": 2}
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# The IDX magic number is 0x0000 TTDD: TT the element type (0x08 unsigned byte), DD the number of
# dimensions; images are [N, 28, 28], labels [N].
IMAGE_MAGIC = 0x0803
LABEL_MAGIC = 0x0801
# Pixel statistics of the 60,000 training images (pixels / 255), rounded.
PIXEL_MEAN = 0.286
PIXEL_STD = 0.353
NORMALISATIONS = ("standard", "unit")

_decoded: dict[tuple[str, int, int], np.ndarray] = {}


def read_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """The uint8 array of the gzip IDX file ``path``, shape ``[N, *item_shape]``.

    The magic number, the header's item shape and the payload size are checked; any mismatch,
    or a file that is not gzip or is cut short, is one :class:`DataError` naming the file. Decoded
    arrays are cached per process, keyed by path, size and modification time.
    """
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _decoded:
        return _decoded[key]
    try:
        with gzip.open(path, "rb") as stream:
            raw = stream.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a complete gzip file ({err})") from None
    ndim = 1 + len(item_shape)
    header = 4 + 4 * ndim
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
        found = f"0x{int.from_bytes(raw[:4], 'big'):08x}" if len(raw) >= 4 else "nothing"
        raise DataError(f"{path}: IDX magic number 0x{magic:08x} expected, found {found}")
    if len(raw) < header:
        raise DataError(f"{path}: IDX header truncated ({len(raw)} of {header} bytes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    if dims[1:] != item_shape:
        raise DataError(f"{path}: items of shape {item_shape} expected, header says {dims[1:]}")
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: header announces {dims[0]} items ({expected} data bytes), "
            f"the file holds {len(raw) - header}"
        )
    array = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
    _decoded[key] = array
    return array


def load_part(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 28, 28]`` and labels ``[N]`` of ``part`` (``train`` or ``test``)."""
    image_file, label_file = (root / name for name in FILES[part])
    for path in (image_file, label_file):
        if not path.is_file():
            raise MissingDataError(f"fashion_pairs: {path} does not exist")
    images = read_idx(image_file, IMAGE_MAGIC, (ITEM, ITEM))
    labels = read_idx(label_file, LABEL_MAGIC, ())
    if len(images) != len(labels):
        raise DataError(
            f"{label_file}: {len(labels)} labels, but {image_file} holds {len(images)} images"
        )
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"{label_file}: labels must be in [0, 9], found {int(labels.max())}")
    return images, labels


def pair_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator that draws canvas ``index`` of ``split``: a ``SeedSequence`` of (seed, split
    id, index), so a canvas does not depend on the order in which items are requested."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], index]))


def compose(left: np.ndarray, right: np.ndarray, left_shift: int, right_shift: int) -> np.ndarray:
    """The uint8 ``[28, 56]`` canvas: ``left`` at column ``left_shift``, ``right`` at column
    ``28 - right_shift``; where they overlap the brighter pixel wins."""
    canvas = np.zeros((ITEM, 2 * ITEM), dtype=np.uint8)
    canvas[:, left_shift : left_shift + ITEM] = left
    x = ITEM - right_shift
    canvas[:, x : x + ITEM] = np.maximum(canvas[:, x : x + ITEM], right)
    return canvas


class FashionPairs(Dataset):
    """``n`` canvases of two Fashion-MNIST items; sample = ``(image [1, 28, 56] float32,
    {"left": int64 label, "right": int64 label})``.

    Canvas ``i`` of a split pairs two distinct items drawn from that split's pool by
    ``pair_rng(seed, split, i)``; with ``shift > 0`` the same generator then moves each item
    towards the middle by 0..``shift`` columns, so the two overlap by up to ``2 * shift``
    columns. ``normalise``: ``standard`` = ``(pixels / 255 - 0.286) / 0.353`` (training-set
    statistics), ``unit`` = ``pixels / 255``.
    """

    num_classes = NUM_CLASSES

    def __init__(
        self,
        n: int,
        root: str = DEFAULT_ROOT,
        seed: int = 0,
        tasks: Sequence[str] = TASKS,
        split: str = "train",
        shift: int = 0,
        holdout: int = 10000,
        normalise: str = "standard",
    ) -> None:
        if split not in SPLITS:
            raise DataError(
                f"fashion_pairs: split must be one of {', '.join(SPLITS)}, got {split!r}"
            )
        for key, value, low in (("n", n, 1), ("seed", seed, 0), ("holdout", holdout, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise DataError(f"fashion_pairs: {key} must be an integer >= {low}, got {value!r}")
        if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift <= ITEM // 2:
            raise DataError(f"fashion_pairs: shift must be an integer in [0, 14], got {shift!r}")
        if normalise not in NORMALISATIONS:
            raise DataError(
                f"fashion_pairs: normalise must be one of {', '.join(NORMALISATIONS)}, "
                f"got {normalise!r}"
            )
        self.tasks = check_tasks(tasks, TASKS, "fashion_pairs")
        self.root = Path(root)
        if not self.root.is_dir():
            raise MissingDataError(
                f"fashion_pairs: data root {self.root} does not exist; install the files with "
                "`apt-get install dataset-fashion-mnist` or set data.options.root to a directory "
                "holding the four Fashion-MNIST IDX gzip files"
            )
        images, labels = load_part(self.root, "test" if split == "test" else "train")
        if split != "test":
            if holdout > len(images) - 2:
                raise DataError(
                    f"fashion_pairs: holdout {holdout} leaves fewer than 2 of the "
                    f"{len(images)} training images for the train split"
                )
            cut = len(images) - holdout
            part = slice(0, cut) if split == "train" else slice(cut, None)
            images, labels = images[part], labels[part]
        if len(images) < 2:
            raise DataError(f"fashion_pairs: split {split!r} needs at least 2 images to pair")
        self.images, self.labels = images, labels
        self.n, self.seed, self.split, self.shift = n, seed, split, shift
        self.normalise = normalise

    def __len__(self) -> int:
        return self.n

    def pair(self, index: int) -> tuple[int, int, int, int]:
        """``(i, j, left_shift, right_shift)`` of canvas ``index``: the pool indices of its left
        and right items and their shifts towards the middle."""
        if not 0 <= index < self.n:
            raise IndexError(f"fashion_pairs: index {index} out of range for {self.n} items")
        rng = pair_rng(self.seed, self.split, index)
        i, j = (int(k) for k in rng.choice(len(self.images), size=2, replace=False))
        if self.shift == 0:
            return i, j, 0, 0
        left_shift, right_shift = (int(s) for s in rng.integers(0, self.shift + 1, size=2))
        return i, j, left_shift, right_shift

    def canvas(self, index: int) -> np.ndarray:
        """The uint8 ``[28, 56]`` canvas of item ``index``."""
        i, j, left_shift, right_shift = self.pair(index)
        return compose(self.images[i], self.images[j], left_shift, right_shift)

    def __getitem__(self, index: int) -> Sample:
        i, j, left_shift, right_shift = self.pair(index)
        canvas = compose(self.images[i], self.images[j], left_shift, right_shift)
        image = torch.from_numpy(canvas).float()[None] / 255
        if self.normalise == "standard":
            image = (image - PIXEL_MEAN) / PIXEL_STD
        items = {"left": i, "right": j}
        targets = {task: torch.tensor(int(self.labels[items[task]])) for task in self.tasks}
        return image, targets
