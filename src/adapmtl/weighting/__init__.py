"""Task-loss weightings: equal, and AdapMTL's adaptive weighting (paper Section 3.3).

Each weighting is one module that registers its class in :data:`WEIGHTINGS`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from adapmtl.weighting.adaptive import AdaptiveWeighting, param_ratio
from adapmtl.weighting.base import WEIGHTINGS, Weighting
from adapmtl.weighting.equal import EqualWeighting


def build_weighting(
    name: str, tasks: Sequence[str], model: nn.Module | None = None, **options: Any
) -> Weighting:
    """The registered weighting ``name`` for ``tasks`` (:meth:`Weighting.from_model`)."""
    try:
        cls: Any = WEIGHTINGS.get(name)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    return cls.from_model(tasks, model, **options)


__all__ = [
    "WEIGHTINGS",
    "AdaptiveWeighting",
    "EqualWeighting",
    "Weighting",
    "build_weighting",
    "param_ratio",
]
