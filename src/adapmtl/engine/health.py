"""What a training step reads from the device (:class:`StepHealth`, one transfer per step) and the
error that stops a run on a non-finite loss or weight."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from adapmtl.engine.interrupt import STOP_SIGNALS
from adapmtl.errors import UserError


class NonFiniteLossError(UserError):
    """A task loss (or, after a step, a weight) became NaN or Inf."""


@dataclass
class StepHealth:
    """What a training step reads from the device, in one transfer: the mean task losses, the
    stop requests per signal, per task how many processes' targets it rejects, the largest
    |gradient|, how far the processes disagree on the model's structure (zero: they agree),
    and on logging steps the task weights and the weighted total."""

    losses: list[float]
    stops: list[float]
    problems: list[float]
    gradient_bound: float
    disagreement: float = 0.0
    weights: list[float] | None = None
    total: float | None = None

    @classmethod
    def read(
        cls,
        read: Callable[[torch.Tensor], list[float]],
        mean: torch.Tensor,
        counts: torch.Tensor,
        disagreement: torch.Tensor,
        gradient_bound: torch.Tensor,
        weights: torch.Tensor | None,
    ) -> StepHealth:
        parts = [mean.double(), counts, gradient_bound.double()[None], disagreement.double()[None]]
        if weights is not None:
            parts += [weights.double(), (weights * mean).sum().double()[None]]
        values = read(torch.cat(parts))
        tasks, stops = len(mean), len(STOP_SIGNALS)
        health = cls(
            losses=values[:tasks],
            stops=values[tasks : tasks + stops],
            problems=values[tasks + stops : 2 * tasks + stops],
            gradient_bound=values[2 * tasks + stops],
            disagreement=values[2 * tasks + stops + 1],
        )
        if weights is not None:
            health.weights, health.total = values[2 * tasks + stops + 2 : -1], values[-1]
        return health

    @property
    def losses_finite(self) -> bool:
        return all(math.isfinite(loss) for loss in self.losses)

    def scalars(self, tasks: list[str]) -> dict[str, float]:
        """The step's log scalars ({} on steps that do not log)."""
        if self.weights is None or self.total is None:
            return {}
        scalars = {f"loss/{n}": v for n, v in zip(tasks, self.losses, strict=True)}
        scalars.update({f"weight/{n}": w for n, w in zip(tasks, self.weights, strict=True)})
        scalars["loss/total"] = self.total
        return scalars
