"""The task-weighting interface: per-task losses in, per-task loss weights out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch


class Weighting(ABC):
    """Maps the current per-task losses to the weights beta_t of the total loss sum_t beta_t L_t
    (paper Eq. 3). Weights are plain tensors without gradient.

    Under DDP, all-reduce (average) the per-task losses before :meth:`update` so every process
    computes identical weights.
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        if not tasks:
            raise ValueError("a weighting needs at least one task")
        self.tasks = list(tasks)

    @abstractmethod
    def update(self, losses: torch.Tensor) -> torch.Tensor:
        """Record this iteration's detached losses ``[T]`` and return the weights ``[T]``."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def _check(self, losses: torch.Tensor) -> torch.Tensor:
        losses = torch.as_tensor(losses, dtype=torch.float64).detach().flatten().cpu()
        if losses.numel() != len(self.tasks):
            raise ValueError(
                f"expected {len(self.tasks)} task losses ({', '.join(self.tasks)}), "
                f"got {losses.numel()}"
            )
        return losses


class EqualWeighting(Weighting):
    """beta_t = 1 for every task: the plain multitask sum."""

    def update(self, losses: torch.Tensor) -> torch.Tensor:
        self._check(losses)
        return torch.ones(len(self.tasks))

    def state_dict(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["tasks"]) != self.tasks:
            raise ValueError(f"weighting state is for tasks {state['tasks']}, not {self.tasks}")
