"""Write synthetic scenes to disk in the public layouts, so the on-disk readers can be exercised
without downloading anything (``adapmtl data synth``).

The dataset is written into a temporary sibling directory and renamed into place at the end, so
an interrupted run leaves nothing half-written. A marker file ``.adapmtl-synth.json`` records
what was written; ``force=True`` replaces only a directory that is empty or carries that marker.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from adapmtl.data.errors import DataError
from adapmtl.data.nyuv2 import ADASHARE_LISTING
from adapmtl.data.scenes.dataset import ScenesDataset
from adapmtl.data.scenes.render import SceneRender
from adapmtl.data.taskonomy import EDGE_CLIP, KEYPOINT_CLIP
from adapmtl.data.taskonomy import LISTING as TASKONOMY_LISTING

LAYOUTS = ("nyuv2-adashare", "nyuv2-mtan", "taskonomy")
MARKER = ".adapmtl-synth.json"
# On-disk split name -> scenes split (disjoint seed streams).
LAYOUT_SPLITS = {
    "nyuv2-adashare": {"train": "train", "test": "test"},
    "nyuv2-mtan": {"train": "train", "val": "val"},
    "taskonomy": {"train": "train", "test": "test"},
}
TASKONOMY_DEPTH_UNITS = 512.0  # raw depth_zbuffer units per metre (Taskonomy stores 1/512 m)


def encode_normal_png(normal: np.ndarray) -> np.ndarray:
    """Unit normals [H, W, 3] -> uint8 (n + 1) / 2 * 255, capped at 254 so that 255 keeps
    meaning "invalid"; all-zero (invalid) vectors -> 255."""
    encoded = np.clip(np.round((normal + 1.0) / 2.0 * 255.0), 0, 254).astype(np.uint8)
    invalid = ~np.any(normal != 0, axis=2)
    encoded[invalid] = 255
    return encoded


def _save_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)


def _write_adashare(root: Path, split: str, index: int, view: SceneRender) -> list[str]:
    name = f"{split}_{index:06d}"
    entry = [f"img/{name}.png", f"seg/{name}.png", f"normal_mask/{name}.png", f"depth/{name}.npy"]
    _save_png(root / entry[0], view.rgb)
    _save_png(root / entry[1], view.seg.astype(np.uint8))
    _save_png(root / entry[2], encode_normal_png(view.normal))
    _save_npy(root / entry[3], view.depth.astype(np.float32))
    return entry


def _write_mtan(root: Path, split: str, index: int, view: SceneRender) -> None:
    base = root / split
    _save_npy(base / "image" / f"{index}.npy", view.rgb.astype(np.float32) / 255.0)
    _save_npy(base / "label" / f"{index}.npy", view.seg.astype(np.float32))
    _save_npy(base / "depth" / f"{index}.npy", view.depth[..., None].astype(np.float32))
    _save_npy(base / "normal" / f"{index}.npy", view.normal.astype(np.float32))


def _write_taskonomy(root: Path, split: str, index: int, view: SceneRender) -> list[str]:
    name = f"{index:06d}"
    entry = [
        f"synth/{domain}/{name}.png"
        for domain in (
            "rgb",
            "segment_semantic",
            "normal",
            "depth_zbuffer",
            "keypoints2d",
            "edge_texture",
        )
    ]
    base = root / split
    depth = np.round(view.depth * TASKONOMY_DEPTH_UNITS)
    pixels = [
        view.rgb,
        (view.seg + 1).astype(np.uint8),  # raw 0 = unlabelled
        encode_normal_png(view.normal),
        np.clip(depth, 0, 64499).astype(np.uint16),
        np.round(view.keypoint * KEYPOINT_CLIP * 2**16).astype(np.uint16),
        np.round(view.edge * EDGE_CLIP * 2**16).astype(np.uint16),
    ]
    for relative, array in zip(entry, pixels, strict=True):
        _save_png(base / relative, array)
    return entry


def _prepare_destination(out: Path, force: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"output {str(out)!r} exists and is not a directory")
    contents = list(out.iterdir())
    if not contents:
        return
    if not force:
        raise DataError(f"output directory {str(out)!r} is not empty (pass --force to replace it)")
    if not (out / MARKER).is_file():
        raise DataError(
            f"output directory {str(out)!r} is not empty and was not written by "
            f"'adapmtl data synth' (no {MARKER}); refusing to replace it, remove it yourself"
        )


def write_scenes(
    layout: str,
    out: str | os.PathLike[str],
    n: int,
    size: tuple[int, int],
    seed: int = 0,
    n_test: int | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Render ``n`` training and ``n_test`` (default max(1, n // 5)) held-out scenes into
    ``out`` in ``layout``; returns the number of items per on-disk split."""
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    if n < 1:
        raise DataError(f"--n must be >= 1, got {n}")
    n_test = max(1, n // 5) if n_test is None else n_test
    if n_test < 1:
        raise DataError(f"--n-test must be >= 1, got {n_test}")
    out = Path(out)
    _prepare_destination(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    counts = {}
    try:
        partial.mkdir()
        listing: dict[str, list[list[str]]] = {}
        splits = LAYOUT_SPLITS[layout]
        total = n + n_test * (len(splits) - 1)
        done = 0
        for disk_split, scenes_split in splits.items():
            count = n if disk_split == "train" else n_test
            scenes = ScenesDataset(count, size=size, seed=seed, split=scenes_split)
            entries = []
            for index in range(count):
                view = scenes.render(index)
                if layout == "nyuv2-adashare":
                    entries.append(_write_adashare(partial, disk_split, index, view))
                elif layout == "nyuv2-mtan":
                    _write_mtan(partial, disk_split, index, view)
                else:
                    entries.append(_write_taskonomy(partial, disk_split, index, view))
                done += 1
                if progress is not None:
                    progress(done, total)
            listing[disk_split] = entries
            counts[disk_split] = count
        listing_name = {"nyuv2-adashare": ADASHARE_LISTING, "taskonomy": TASKONOMY_LISTING}
        if layout in listing_name:
            (partial / listing_name[layout]).write_text(json.dumps(listing, indent=1))
        marker = {"layout": layout, "size": list(size), "seed": seed, "splits": counts}
        (partial / MARKER).write_text(json.dumps(marker, indent=1))
        if out.exists():
            shutil.rmtree(out)
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return counts
