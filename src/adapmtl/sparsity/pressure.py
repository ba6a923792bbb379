"""Threshold pressure: the earlier way of reaching a target, kept as ``level: pressure``.

In the reference implementations the thresholds rise only through weight decay on theta: Adam
adds ``wd * theta`` (negative) to theta's gradient, while the task loss pushes back on the
thresholds of the components it needs (docs/reference_implementations.md). Where the two balance
depends on ``wd``, so the final sparsity is set by ``wd`` rather than by the requested target.
:class:`ThresholdPressure` follows a cubic sparsity schedule from 0 to the target at ``until``,
multiplying the thresholds' weight decay by ``growth`` at every check where overall sparsity lags
the schedule and dividing it when sparsity is ahead.

Measured limits (docs/methods.md, "Reaching the target"): it is a bang-bang integrator driving an
actuator that Adam caps at about ``threshold_lr`` per step, so it winds up, holds every theta in
lockstep until the freeze, and misses the target when ``threshold_lr`` is small for the budget.
:class:`~adapmtl.sparsity.level.ScheduledLevel` replaces it as the default.
"""

from __future__ import annotations

from typing import Any

import torch

from adapmtl.sparsity.level import CubicSchedule

THRESHOLD_GROUP = "thresholds"


class ThresholdPressure:
    """Steers the weight decay of the optimizer group named ``thresholds``.

    Args:
        target: overall sparsity to reach, in (0, 1).
        until: iteration at which the schedule reaches the target.
        growth: factor (> 1) applied per check to the weight decay.
        min_decay, max_decay: bounds of the weight decay.
    """

    def __init__(
        self,
        target: float,
        until: int,
        *,
        growth: float = 1.02,
        min_decay: float = 1e-8,
        max_decay: float = 1e3,
    ) -> None:
        if not 0.0 < target < 1.0:
            raise ValueError(f"target sparsity must be in (0, 1), got {target!r}")
        if until < 1:
            raise ValueError(f"until must be >= 1, got {until!r}")
        if growth <= 1.0:
            raise ValueError(f"growth must be > 1, got {growth!r}")
        self.cubic = CubicSchedule(target, 0, until)
        self.growth = growth
        self.min_decay = min_decay
        self.max_decay = max_decay

    def schedule(self, iteration: int) -> float:
        """Cubic schedule s*(t) = target * (1 - (1 - t / until)^3), then the target."""
        return self.cubic(iteration)

    def update(self, optimizer: torch.optim.Optimizer, iteration: int, sparsity: float) -> float:
        """Adjust the thresholds' weight decay from the current overall sparsity; returns it."""
        group = thresholds_group(optimizer)
        decay = group["weight_decay"]
        decay = decay * self.growth if sparsity < self.schedule(iteration) else decay / self.growth
        group["weight_decay"] = min(self.max_decay, max(self.min_decay, decay))
        return group["weight_decay"]


def thresholds_group(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    for group in optimizer.param_groups:
        if group.get("name") == THRESHOLD_GROUP:
            return group
    raise ValueError(
        "the optimizer has no parameter group named 'thresholds': build it with param_groups()"
    )
