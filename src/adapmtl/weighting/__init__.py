"""Task-loss weightings: equal, and AdapMTL's adaptive weighting (paper Section 3.3)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from adapmtl.weighting.adaptive import AdaptiveWeighting
from adapmtl.weighting.base import EqualWeighting, Weighting


def param_ratio(model: nn.Module) -> float:
    """|W_B| / sum_t |W_t| of Eq. 6: parameters of ``model.backbone`` over those of all heads."""
    backbone = sum(p.numel() for p in model.backbone.parameters())
    heads = sum(p.numel() for p in model.heads.parameters())
    return backbone / heads


def build_weighting(name: str, tasks: Sequence[str], **kwargs: object) -> Weighting:
    """``equal`` or ``adaptive`` (kwargs of :class:`AdaptiveWeighting`)."""
    if name == "equal":
        if kwargs:
            raise ValueError(f"equal weighting takes no options, got {sorted(kwargs)}")
        return EqualWeighting(tasks)
    if name == "adaptive":
        return AdaptiveWeighting(tasks, **kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown weighting {name!r}; valid: adaptive, equal")


__all__ = ["AdaptiveWeighting", "EqualWeighting", "Weighting", "build_weighting", "param_ratio"]
