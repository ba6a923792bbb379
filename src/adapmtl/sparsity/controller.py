"""The target-sparsity controller: stop pruning when the requested overall sparsity is reached.

The paper fixes the mask once the target overall sparsity is reached (Section 5). The official code
instead drops the thresholds' gradients for every step at or above the target, which lets sparsity
keep drifting upwards under weight decay (docs/reference_implementations.md). Both behaviours are
offered:

* ``freeze_mask`` (default, the paper's description): at the first check where overall sparsity
  >= target, the thresholds are lowered by one common factor so that overall sparsity equals the
  target (:func:`land_on_target`: one step can overshoot by more than the tolerance when
  thresholds move fast), then frozen, and each layer's active set becomes a fixed mask
  (:func:`~adapmtl.sparsity.masks.freeze_masks`); survivors keep training. Sparsity cannot move
  afterwards. The allocation between components is the one the thresholds learned.
* ``official``: at every check, threshold gradients are dropped while sparsity >= target; nothing
  else is frozen (bang-bang; sparsity may overshoot).

Call :meth:`TargetSparsityController.step` after ``backward()`` and before ``optimizer.step()``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from adapmtl.sparsity.level import rescale_thresholds
from adapmtl.sparsity.masks import freeze_masks
from adapmtl.sparsity.report import overall_sparsity
from adapmtl.sparsity.sparsify import sparse_layers, thresholds

CONTROLLER_MODES = ("freeze_mask", "official")


def land_on_target(model: nn.Module, target: float) -> None:
    """Scale every threshold by one factor c <= 1 so that overall sparsity is ``target``.

    A weight is pruned when |W| <= alpha_g, i.e. when |W| / alpha_g <= 1. With thresholds
    c * alpha_g the pruned set is {|W| / alpha_g <= c}, so c is the ``target`` quantile of the
    ratios |W| / alpha_g over all thresholded weights
    (:func:`~adapmtl.sparsity.level.rescale_thresholds`). Called only when sparsity >= target,
    hence c <= 1: thresholds only go down, and every group keeps its share of the pruning order.
    """
    rescale_thresholds(model, target, only_down=True)


class TargetSparsityController:
    """Freezes pruning at ``target`` overall sparsity (a fraction in (0, 1)).

    Overall sparsity counts every sparsified weight (backbone and all heads). Checks run every
    ``check_every`` iterations; between two checks thresholds move by at most a few optimizer
    steps, which bounds the overshoot (see tests: within 0.5 points at ``check_every=1``).
    """

    def __init__(
        self,
        model: nn.Module,
        target: float,
        *,
        mode: str = "freeze_mask",
        check_every: int = 1,
    ) -> None:
        if not isinstance(target, (int, float)) or not 0.0 < target < 1.0:
            raise ValueError(f"target sparsity must be in (0, 1), got {target!r}")
        if mode not in CONTROLLER_MODES:
            raise ValueError(f"controller mode must be one of {CONTROLLER_MODES}, got {mode!r}")
        if check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}")
        if not sparse_layers(model):
            raise ValueError("the model is not sparsified: call sparsify(model) first")
        self.model = model
        self.target = float(target)
        self.mode = mode
        self.check_every = check_every
        self.frozen_at: int | None = None
        self.last_sparsity: float | None = None

    @property
    def frozen(self) -> bool:
        return self.frozen_at is not None

    def step(self, iteration: int) -> bool:
        """Check the sparsity and freeze if the target is reached. Returns True while frozen
        (``official`` mode: True on the steps whose threshold gradients were dropped)."""
        if self.mode == "freeze_mask" and self.frozen:
            return True
        if iteration % self.check_every:
            return False
        self.last_sparsity = overall_sparsity(self.model)
        reached = self.last_sparsity >= self.target
        if self.mode == "freeze_mask":
            if reached:
                land_on_target(self.model, self.target)
                freeze_masks(self.model)
                self.frozen_at = iteration
                self.last_sparsity = overall_sparsity(self.model)
            return reached
        if reached:
            for theta in thresholds(self.model).values():
                theta.grad = None
            if self.frozen_at is None:
                self.frozen_at = iteration
        return reached

    def state_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "mode": self.mode,
            "check_every": self.check_every,
            "frozen_at": self.frozen_at,
            "last_sparsity": self.last_sparsity,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the controller. The masks themselves live in the model's state dict; this
        only restores the bookkeeping and re-freezes the thresholds when the run was frozen."""
        self.target = float(state["target"])
        self.mode = state["mode"]
        self.check_every = int(state["check_every"])
        self.frozen_at = state["frozen_at"]
        self.last_sparsity = state["last_sparsity"]
        if self.mode == "freeze_mask" and self.frozen:
            for theta in thresholds(self.model).values():
                theta.requires_grad_(False)
