"""Datasets: the embedded synthetic scenes, readers for NYUv2 and Taskonomy in their public
layouts and Fashion-MNIST pairs. Every dataset returns ``(image [C, H, W] float32, {task:
target})`` with the target conventions of docs/architecture.md; see docs/data.md.

Submodules are imported lazily, so ``import adapmtl.data`` does not import Pillow.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DATASETS": "adapmtl.data.registry",
    "build_dataset": "adapmtl.data.registry",
    "ScenesDataset": "adapmtl.data.scenes",
    "NYUv2AdaShare": "adapmtl.data.nyuv2",
    "NYUv2MTAN": "adapmtl.data.nyuv2",
    "Taskonomy": "adapmtl.data.taskonomy",
    "FashionPairs": "adapmtl.data.fashion",
    "DataError": "adapmtl.data.errors",
    "MissingDataError": "adapmtl.data.errors",
    "TASK_NAMES": "adapmtl.data.sample",
    "write_scenes": "adapmtl.data.writer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'adapmtl.data' has no attribute {name!r}")
