"""The task-weighting interface: per-task losses in, per-task loss weights out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from adapmtl.options import check_options
from adapmtl.registry import Registry


class Weighting(ABC):
    """Maps the current per-task losses to the weights beta_t of the total loss sum_t beta_t L_t
    (paper Eq. 3). Weights are plain tensors without gradient.

    Under DDP, all-reduce (average) the per-task losses before :meth:`update` so every process
    computes identical weights. The weights and any state live on the losses' device, and
    ``update(losses, validate=False)`` reads nothing on the host (no GPU synchronisation): the
    caller then vouches that the losses are finite, as the trainer checks after backward.
    """

    MODEL_DERIVED: ClassVar[tuple[str, ...]] = ()
    """Parameters of ``__init__`` that :meth:`from_model` fills from the model (a config does
    not set them)."""
    CONFIG_ONLY: ClassVar[dict[str, Any]] = {}
    """Options :meth:`from_model` takes beyond ``__init__``'s, with their types."""

    def __init__(self, tasks: Sequence[str]) -> None:
        if not tasks:
            raise ValueError("a weighting needs at least one task")
        self.tasks = list(tasks)

    @classmethod
    def from_model(
        cls, tasks: Sequence[str], model: nn.Module | None = None, **options: Any
    ) -> Weighting:
        """The weighting of a run: ``options`` as a config gives them (:meth:`check_options`),
        with whatever the weighting takes from ``model`` (None: nothing is taken)."""
        cls.check_options(options)
        return cls(tasks, **options)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Options as a config gives them, checked against ``__init__``'s keyword parameters and
        :attr:`CONFIG_ONLY`: an unknown name (with a "did you mean") or a value its type hint
        cannot hold is a :class:`adapmtl.options.ConfigError` naming ``weighting.options.<name>``.
        The parameters in :attr:`MODEL_DERIVED` are not options."""
        check_options(
            cls,
            options,
            "weighting.options",
            skip=("tasks", *cls.MODEL_DERIVED),
            extra=cls.CONFIG_ONLY,
        )

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


WEIGHTINGS: Registry[Weighting] = Registry("weighting")
"""Name -> weighting class; a new weighting is one module that registers its class."""
