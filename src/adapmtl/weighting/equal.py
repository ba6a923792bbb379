"""Equal weighting: the plain multitask sum."""

from __future__ import annotations

from typing import Any

import torch

from adapmtl.weighting.base import WEIGHTINGS, Weighting


@WEIGHTINGS.register("equal")
class EqualWeighting(Weighting):
    """beta_t = 1 for every task: the plain multitask sum."""

    def update(self, losses: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
        return torch.ones(len(self.tasks), device=self._check(losses).device)

    def state_dict(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["tasks"]) != self.tasks:
            raise ValueError(f"weighting state is for tasks {state['tasks']}, not {self.tasks}")
