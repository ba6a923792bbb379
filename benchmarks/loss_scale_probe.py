"""A probe of why the adaptive weighting's scale decides comparisons: a constant loss scale.

Registers the weighting ``constant_scale`` (user code, through a suite's ``imports:``): every
task weight is 1 before iteration ``start`` and ``scale`` from then on, the same for all tasks.
It isolates the one thing Eq. 6's factor ``lam * |W_B| / sum |W_t|`` does besides the relative
task weights. Adam is invariant to a loss scale that holds from the first step (up to its eps
and a coupled weight decay), but a step change of the scale at ``start`` reaches the update
before the second-moment estimate catches up (about ``1 / (1 - beta2)`` steps). So the
hypothesis "Adam's memory turns the step into a change of step size" predicts: ``start: 300``
loses like the adaptive weighting at the same scale, ``start: 0`` does not. Used by
benchmarks/loss_scale_probe.yaml.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from adapmtl.weighting.base import WEIGHTINGS, Weighting


@WEIGHTINGS.register("constant_scale")
class ConstantScaleWeighting(Weighting):
    """beta_t = 1 for iterations before ``start``, ``scale`` from ``start`` on, for every task."""

    def __init__(self, tasks: Sequence[str], *, scale: float = 1.0, start: int = 0) -> None:
        super().__init__(tasks)
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start!r}")
        self.scale = float(scale)
        self.start = int(start)
        self.step = 0

    def update(self, losses: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
        device = self._check(losses).device
        factor = self.scale if self.step >= self.start else 1.0
        self.step += 1
        return torch.full((len(self.tasks),), factor, device=device)

    def state_dict(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["tasks"]) != self.tasks:
            raise ValueError(f"weighting state is for tasks {state['tasks']}, not {self.tasks}")
        self.step = int(state["step"])
