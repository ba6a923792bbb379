"""The interface every pruning method implements, and the registry configs use to build them.

A method turns a freshly built dense model into what it trains (``prepare``: register
parametrizations or masks), chooses the optimizer groups, and hooks into each training step in a
fixed order: forward, weighted loss, backward, :meth:`Method.after_backward`, optimizer step,
scheduler step, :meth:`Method.after_step`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from adapmtl.registry import Registry

Batch = tuple[torch.Tensor, dict[str, torch.Tensor]]


@dataclass
class TrainingContext:
    """What a method may use during training.

    ``batches()`` yields training batches from a stream independent of the training order (for
    scoring at initialisation); ``task_losses(batch)`` runs the model and returns the unweighted
    per-task losses; ``reset_optimizer()`` rebuilds optimizer and scheduler state (LTH rewinding).
    ``share(tensors)`` returns rank 0's version of a decision computed on every process (the
    identity in one process): a method passes through it what it computed from gradients,
    which GPU kernels may round differently on each process, before applying it.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    iterations: int
    batches: Callable[[], Iterator[Batch]]
    task_losses: Callable[[Batch], dict[str, torch.Tensor]]
    reset_optimizer: Callable[[], None]
    device: torch.device
    share: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = dict


class Method:
    """Base class: a dense model trained as is. Subclasses override the hooks they need.

    ``Options`` is a dataclass of method-specific options, filled strictly from the config's
    ``method.options``.
    """

    name: ClassVar[str] = "base"

    @dataclass
    class Options:
        pass

    def __init__(self, target: float | None, options: Any) -> None:
        self.target = target
        self.options = options

    def prepare(self, model: nn.Module) -> nn.Module:
        """Register parametrizations/masks on the freshly built model (also before a resume)."""
        return model

    def param_groups(
        self, model: nn.Module, *, lr: float, weight_decay: float, **_: Any
    ) -> list[dict[str, Any]]:
        return [{"params": list(model.parameters()), "lr": lr, "weight_decay": weight_decay}]

    def on_start(self, ctx: TrainingContext) -> None:
        """Called once before the first iteration of a new run (not on resume)."""

    def after_backward(self, ctx: TrainingContext, iteration: int) -> None:
        """Called after ``backward()``, before ``optimizer.step()``."""

    def after_step(self, ctx: TrainingContext, iteration: int) -> None:
        """Called after the optimizer and scheduler steps."""

    def at_target(self) -> bool:
        """True once the model has its final sparsity (best-checkpoint selection waits for it)."""
        return True

    def masks_final(self) -> bool:
        """True once the masks no longer change for the rest of the run: the trainer then keeps
        them in the weights (:func:`~adapmtl.sparsity.masks.keep_masks_in_weights`) and the
        forward no longer applies them."""
        return False

    @property
    def level_from_threshold_travel(self) -> bool:
        """True when the sparsity reached depends on how far the optimizer moves the thresholds
        (the trainer then checks that they can travel far enough: ``engine.reach``)."""
        return False

    def summary(self) -> dict[str, Any]:
        """Scalars describing the method's progress (logged, saved in results)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by :meth:`state_dict` (the model state is loaded separately)."""


METHODS: Registry[type[Method]] = Registry("method")
