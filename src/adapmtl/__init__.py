"""adapmtl: adaptive pruning for multitask models (AdapMTL, ACM MM 2024).

The public API is re-exported here and imported lazily, so ``import adapmtl`` stays cheap.
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
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'adapmtl' has no attribute {name!r}")
