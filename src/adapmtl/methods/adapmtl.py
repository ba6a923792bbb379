"""``adapmtl``: component-wise learnable soft thresholds (paper Sections 3.1-3.2) with the
target-sparsity controller; the ablations of Table 5 are its ``grouping`` option (the adaptive
weighting is configured in the ``weighting`` section)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from adapmtl.methods.base import METHODS, Method, TrainingContext
from adapmtl.sparsity import (
    TargetSparsityController,
    ThresholdPressure,
    overall_sparsity,
    param_groups,
    sparsify,
)


@METHODS.register("adapmtl")
class AdapMTL(Method):
    name = "adapmtl"

    @dataclass
    class Options:
        grouping: str = "component"
        """``component`` (AdapMTL), ``global`` (w/o adaptive thresholds), ``backbone_heads``
        (only 2 adaptive thresholds), ``layer`` (STR-style)."""
        init: float = -6.0
        """Initial theta (alpha = sigmoid(theta))."""
        controller: str = "freeze_mask"
        """``freeze_mask`` (paper) or ``official`` (freeze thresholds only)."""
        check_every: int = 1
        exclude: list[str] = field(default_factory=list)
        pressure: str = "schedule"
        """``schedule``: steer the thresholds' weight decay so overall sparsity follows a cubic
        schedule to the target (``ThresholdPressure``); ``none``: fixed weight decay, as the
        references (the final sparsity then depends on ``optim.threshold_weight_decay``)."""
        pressure_until: float = 0.5
        """Fraction of training at which the schedule reaches the target."""
        pressure_growth: float = 1.02
        """Factor applied to the thresholds' weight decay per iteration while steering."""

    def __init__(self, target: float | None, options: Options) -> None:
        if target is None:
            raise ValueError("adapmtl needs a target sparsity (method.target)")
        if options.pressure not in ("schedule", "none"):
            raise ValueError(f"pressure must be 'schedule' or 'none', got {options.pressure!r}")
        if not 0.0 < options.pressure_until <= 1.0:
            raise ValueError(f"pressure_until must be in (0, 1], got {options.pressure_until!r}")
        super().__init__(target, options)
        self.controller: TargetSparsityController | None = None
        self.pressure: ThresholdPressure | None = None

    def prepare(self, model: nn.Module) -> nn.Module:
        sparsify(
            model,
            grouping=self.options.grouping,
            init=self.options.init,
            exclude=self.options.exclude,
        )
        self.controller = TargetSparsityController(
            model, self.target, mode=self.options.controller, check_every=self.options.check_every
        )
        return model

    def param_groups(
        self,
        model: nn.Module,
        *,
        lr: float,
        weight_decay: float,
        threshold_lr: float | None = None,
        threshold_weight_decay: float = 0.0,
        **_: Any,
    ) -> list[dict[str, Any]]:
        return param_groups(
            model,
            lr=lr,
            weight_decay=weight_decay,
            threshold_lr=threshold_lr,
            threshold_weight_decay=threshold_weight_decay,
        )

    def after_backward(self, ctx: TrainingContext, iteration: int) -> None:
        assert self.controller is not None
        self.controller.step(iteration)
        if self.options.pressure == "none" or self.controller.frozen:
            return
        if self.pressure is None:
            until = max(1, round(self.options.pressure_until * ctx.iterations))
            self.pressure = ThresholdPressure(
                self.target, until, growth=self.options.pressure_growth
            )
        sparsity = self.controller.last_sparsity
        if sparsity is not None:
            self.pressure.update(ctx.optimizer, iteration, sparsity)

    def at_target(self) -> bool:
        assert self.controller is not None
        if self.controller.mode == "freeze_mask":
            return self.controller.frozen
        return overall_sparsity(self.controller.model) >= self.target - 0.005

    def summary(self) -> dict[str, Any]:
        assert self.controller is not None
        return {"frozen_at": self.controller.frozen_at, "target": self.target}

    def state_dict(self) -> dict[str, Any]:
        assert self.controller is not None
        return {"controller": self.controller.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self.controller is not None
        self.controller.load_state_dict(state["controller"])
