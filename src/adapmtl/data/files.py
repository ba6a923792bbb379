"""Checked file access for the dataset readers: every failure becomes one error naming the file
and the problem (adapmtl.data.errors)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adapmtl.data.errors import DataError, MissingDataError


def check_root(root: str | os.PathLike[str], dataset: str) -> Path:
    path = Path(root)
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise MissingDataError(f"{dataset}: data root {str(path)!r} {what}")
    return path


def resolve_inside(root: Path, relative: Any, where: str) -> Path:
    """``root / relative`` after checking, without touching the disk, that ``relative`` is a
    relative path that stays inside ``root`` (symlinks inside the root are allowed to point
    anywhere). ``where`` names the listing entry for the error message."""
    if not isinstance(relative, str) or not relative:
        raise DataError(f"{where}: expected a relative file path, got {relative!r}")
    normalised = os.path.normpath(relative)
    if os.path.isabs(normalised) or normalised == ".." or normalised.startswith(".." + os.sep):
        raise DataError(f"{where}: path {relative!r} points outside the data root {str(root)!r}")
    return root / normalised


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise MissingDataError(f"missing file {str(path)!r}")
    return path


def read_json(path: Path) -> Any:
    require_file(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{str(path)!r}: cannot read JSON ({err})") from err


def _pil_image():
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise DataError("reading PNG datasets needs Pillow: pip install 'adapmtl[data]'") from err
    return Image


def png_header(path: Path) -> tuple[str, tuple[int, int]]:
    """``(mode, (H, W))`` of an image file, reading the header only."""
    require_file(path)
    image_module = _pil_image()
    try:
        with image_module.open(path) as image:
            return image.mode, (image.height, image.width)
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{str(path)!r}: not a readable image ({err})") from err


def read_png(path: Path, modes: dict[str, str]) -> np.ndarray:
    """Pixels of an image whose PIL mode is one of ``modes`` (mode -> description used in the
    error message, e.g. {"RGB": "8-bit RGB"})."""
    require_file(path)
    image_module = _pil_image()
    try:
        with image_module.open(path) as image:
            check_mode(path, image.mode, modes)
            pixels = np.array(image)
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{str(path)!r}: not a readable image ({err})") from err
    return pixels


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` of a .npy file, reading the header only."""
    require_file(path)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{str(path)!r}: not a readable .npy array ({err})") from err
    return tuple(array.shape), array.dtype


def read_npy(path: Path) -> np.ndarray:
    require_file(path)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{str(path)!r}: not a readable .npy array ({err})") from err


def check_shape(
    path: Path, shape: tuple[int, ...], allowed: list[tuple[int | None, ...]], what: str
) -> None:
    """Check ``shape`` matches one of ``allowed`` (None = any size)."""
    for pattern in allowed:
        if len(pattern) == len(shape) and all(
            p is None or p == s for p, s in zip(pattern, shape, strict=True)
        ):
            return
    expected = " or ".join(
        "[" + ", ".join("*" if p is None else str(p) for p in pattern) + "]" for pattern in allowed
    )
    raise DataError(f"{str(path)!r}: {what} must have shape {expected}, got {list(shape)}")


def check_size(path: Path, size: tuple[int, int], expected: tuple[int, int], what: str) -> None:
    if tuple(size) != tuple(expected):
        raise DataError(
            f"{str(path)!r}: {what} is {size[0]}x{size[1]} but the image is "
            f"{expected[0]}x{expected[1]} (H x W)"
        )


def check_mode(path: Path, mode: str, modes: dict[str, str]) -> None:
    """Check a PIL image mode is one of ``modes`` (mode -> description for the message)."""
    if mode not in modes:
        expected = " or ".join(modes.values())
        raise DataError(f"{str(path)!r}: expected {expected}, got PIL mode {mode!r}")


def read_split_listing(
    listing: Path,
    split: str,
    columns: Sequence[str],
    resolve: Callable[[Any, str], Path],
) -> list[dict[str, Path]]:
    """Entries of ``split`` in a JSON listing ``{split: [[path per column], ...]}``, each
    resolved with ``resolve(path, where)``."""
    content = read_json(listing)
    where = repr(str(listing))
    if not isinstance(content, dict):
        raise DataError(
            f"{where}: expected a JSON object with split keys, got {type(content).__name__}"
        )
    if split not in content:
        present = ", ".join(map(repr, content)) or "none"
        raise DataError(f"{where}: no split {split!r}; the listing has {present}")
    entries = content[split]
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{where}: split {split!r} must be a non-empty list of entries")
    items = []
    for i, entry in enumerate(entries):
        entry_where = f"{where} {split}[{i}]"
        if not isinstance(entry, list) or len(entry) != len(columns):
            raise DataError(
                f"{entry_where}: expected a list of {len(columns)} paths "
                f"[{', '.join(columns)}], got {entry!r}"
            )
        items.append(
            {c: resolve(path, entry_where) for c, path in zip(columns, entry, strict=True)}
        )
    return items
