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
    computes identical weights. The weights and any state live on the losses' device, and
    ``update(losses, validate=False)`` reads nothing on the host (no GPU synchronisation): the
    caller then vouches that the losses are finite, as the trainer checks after backward.
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        if not tasks:
            raise ValueError("a weighting needs at least one task")
        self.tasks = list(tasks)

    @abstractmethod
    def update(self, losses: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
        """Record this iteration's detached losses ``[T]`` and return the weights ``[T]``;
        ``validate`` checks their values (a host read)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def _check(self, losses: torch.Tensor) -> torch.Tensor:
        if not isinstance(losses, torch.Tensor):
            losses = torch.as_tensor(losses, device="cpu")
        losses = losses.detach().double().flatten()
        if losses.numel() != len(self.tasks):
            raise ValueError(
                f"expected {len(self.tasks)} task losses ({', '.join(self.tasks)}), "
                f"got {losses.numel()}"
            )
        return losses


class EqualWeighting(Weighting):
    """beta_t = 1 for every task: the plain multitask sum."""

    def update(self, losses: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
        return torch.ones(len(self.tasks), device=self._check(losses).device)

    def state_dict(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["tasks"]) != self.tasks:
            raise ValueError(f"weighting state is for tasks {state['tasks']}, not {self.tasks}")
