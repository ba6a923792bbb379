"""Allocating sparsity between threshold groups by what removing their next weights costs.

The soft threshold's gradient on theta (paper Eq. 4-5) tells how much a component's loss resists
*shrinking* all its surviving weights; one theta per component receives it summed over the
component's weights, and Adam then normalises it per scalar. Neither is what *removing* weights
costs, and neither is comparable between a large backbone and a small head (docs/methods.md,
"Allocation").

:class:`CostAllocation` measures, per threshold group, the marginal removal cost per weight: the
mean of ``(W * dL/dW)^2`` over the surviving weights just above the threshold
(``alpha < |W| <= (1 + band) * alpha``), the second-order (Fisher, Optimal Brain Damage) estimate
of the loss increase when a weight is set to zero, averaged over the weights the next increase of
the threshold would remove. It keeps an exponential average per group and moves each threshold
against its cost, ``log alpha_g -= rate * (log cost_g - mean log cost)``: groups whose next
weights are cheap to remove get higher thresholds. :class:`~adapmtl.sparsity.level.ScheduledLevel`
sets the overall level afterwards; at the fixed point, every group's marginal cost per weight is
the same.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from adapmtl.sparsity.level import _MAX_ALPHA, _MIN_ALPHA
from adapmtl.sparsity.sparsify import sparse_layers, thresholds

# floor of the cost average, so a group whose boundary weights have zero gradient stays finite
_TINY = 1e-30


class CostAllocation:
    """Moves each group's threshold towards equal marginal removal cost per weight.

    Args:
        model: a model sparsified with learnable thresholds.
        rate: step in log alpha per unit of log cost, per update.
        band: relative width of the boundary band above each threshold.
        momentum: of the exponential average of each group's cost.

    Call :meth:`observe` after ``backward()`` (it reads the weights' gradients) and
    :meth:`step` afterwards, before the level is set.
    """

    def __init__(
        self, model: nn.Module, *, rate: float = 0.02, band: float = 0.25, momentum: float = 0.9
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        if band <= 0:
            raise ValueError(f"band must be > 0, got {band!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.model = model
        self.rate = rate
        self.band = band
        self.momentum = momentum
        self.cost: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def marginal_costs(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per group: (mean (W * dL/dW)^2 over the weights in the band above its threshold,
        number of weights in the band), as tensors on the model's device."""
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, torch.Tensor] = {}
        for _, module, p in sparse_layers(self.model):
            weight = module.parametrizations.weight.original
            if p.masked or p.theta is None or weight.grad is None:
                continue
            alpha = torch.sigmoid(p.theta)
            magnitude = p.magnitude(weight)
            in_band = (magnitude > alpha) & (magnitude <= alpha * (1.0 + self.band))
            taylor = (weight * weight.grad).square()
            sums[p.group] = sums.get(p.group, 0.0) + (taylor * in_band).sum()
            counts[p.group] = counts.get(p.group, 0.0) + in_band.sum()
        return {g: (sums[g] / counts[g].clamp(min=1), counts[g]) for g in sums}

    def observe(self) -> None:
        """Fold this step's marginal costs into the per-group averages (a group whose band is
        empty keeps its average). No host synchronisation."""
        for group, (value, count) in self.marginal_costs().items():
            value = value.clamp(min=_TINY)
            previous = self.cost.get(group)
            if previous is None:
                previous = torch.full_like(value, float("nan"))
            blended = torch.where(
                previous.isnan(), value, self.momentum * previous + (1 - self.momentum) * value
            )
            self.cost[group] = torch.where(count > 0, blended, previous)

    @torch.no_grad()
    def step(self) -> None:
        """log alpha_g -= rate * (log cost_g - mean over groups of log cost): groups whose next
        weights cost less than the average give up more. Centring keeps the thresholds where
        they are when every cost is equal (the common level is the schedule's business)."""
        groups = [g for g in thresholds(self.model) if g in self.cost]
        if len(groups) < 2:
            return
        log_cost = torch.stack([self.cost[g].log() for g in groups])
        centred = torch.nan_to_num(log_cost - log_cost.nanmean(), nan=0.0)
        table = thresholds(self.model)
        for group, shift in zip(groups, centred, strict=True):
            theta = table[group]
            moved = (torch.nn.functional.logsigmoid(theta) - self.rate * shift.to(theta)).exp()
            theta.copy_(torch.logit(moved.clamp(_MIN_ALPHA, _MAX_ALPHA)))

    def state_dict(self) -> dict[str, Any]:
        return {"cost": {g: float(v) for g, v in self.cost.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = next(iter(thresholds(self.model).values())).device
        self.cost = {
            str(g): torch.tensor(float(v), device=device) for g, v in state["cost"].items()
        }
