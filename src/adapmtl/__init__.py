"""adapmtl: adaptive pruning for multitask models (AdapMTL, ACM MM 2024).

The public API is re-exported here and imported lazily, so ``import adapmtl`` stays cheap: the
primitives (``sparsify``, ``report``, ...) and runs (``train``, ``load_run``, ``Trainer``;
docs/python_api.md).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "sparsify": "adapmtl.sparsity",
    "report": "adapmtl.sparsity",
    "bake": "adapmtl.sparsity",
    "param_groups": "adapmtl.sparsity",
    "TargetSparsityController": "adapmtl.sparsity",
    "dense_state_dict": "adapmtl.sparsity",
    "load_dense_state_dict": "adapmtl.sparsity",
    "load_run": "adapmtl.runs",
    "train": "adapmtl.runs",
    "resolve_config": "adapmtl.runs",
    "Run": "adapmtl.runs",
    "Config": "adapmtl.config",
    "load_config": "adapmtl.config",
    "Trainer": "adapmtl.engine.trainer",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'adapmtl' has no attribute {name!r}")
