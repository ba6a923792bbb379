"""``adapmtl``: component-wise learnable thresholds (paper Sections 3.1-3.2) with the
target-sparsity controller; the ablations of Table 5 are its ``grouping`` option (the adaptive
weighting is configured in the ``weighting`` section).

Three choices make up the method, each an option; ``recipe`` fills the ones left unset:

* ``threshold``: ``soft`` (paper Eq. 2, survivors shrunk by alpha), ``hard`` (the same
  thresholds as a hard mask, survivors whole) or ``auto`` (soft on the layers that feed only
  normalisation layers, hard on the others: :mod:`~adapmtl.sparsity.structure`);
* ``level`` (how overall sparsity reaches the target): ``none`` (fixed threshold weight decay, as
  the references: the end point depends on ``optim.threshold_weight_decay``), ``pressure``
  (:class:`~adapmtl.sparsity.pressure.ThresholdPressure`) or ``schedule``
  (:class:`~adapmtl.sparsity.level.ScheduledLevel`: exact, on the cubic schedule);
* ``allocation`` (how the thresholds move relative to each other): ``gradient`` (the optimizer,
  from the task loss through Eq. 4-5), ``cost`` (:class:`~adapmtl.sparsity.allocation.
  CostAllocation`: equal marginal removal cost per weight) or ``none`` (all thresholds move
  together: one global magnitude order).

``recipe: paper`` is the paper's and reference code's behaviour (soft, none, gradient);
``recipe: recommended`` (auto with regrowth on the hard layers, schedule, none) is the default
chosen by the quality suites (docs/results/quality.md): neither allocation signal beat one global
order there, and the soft threshold helped exactly where a normalisation layer follows.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from adapmtl.methods.base import METHODS, Method, TrainingContext
from adapmtl.sparsity import (
    TargetSparsityController,
    ThresholdPressure,
    overall_sparsity,
    param_groups,
    sparse_layers,
    sparsify,
    thresholds,
)
from adapmtl.sparsity.allocation import CostAllocation
from adapmtl.sparsity.blocks import check_block
from adapmtl.sparsity.level import CubicSchedule, ScheduledLevel
from adapmtl.sparsity.structure import UntraceableModelError
from adapmtl.sparsity.target import reached

RECIPES: dict[str, dict[str, Any]] = {
    "paper": {"threshold": "soft", "regrow": False, "level": "none", "allocation": "gradient"},
    "recommended": {"threshold": "auto", "regrow": True, "level": "schedule", "allocation": "none"},
}
CHOICES: dict[str, tuple[str, ...]] = {
    "threshold": ("auto", "soft", "hard"),
    "level": ("schedule", "pressure", "none"),
    "allocation": ("gradient", "cost", "none"),
}


@METHODS.register("adapmtl")
class AdapMTL(Method):
    name = "adapmtl"

    @dataclass
    class Options:
        recipe: str = "recommended"
        """``recommended`` or ``paper``: the values of ``threshold``, ``level`` and
        ``allocation`` left unset (see the module docstring)."""
        threshold: str | None = None
        """``soft`` (paper Eq. 2), ``hard``, or ``auto``: soft on the layers whose output feeds
        only normalisation layers, hard on the others (hard everywhere, with a warning, when
        the model cannot be traced)."""
        regrow: bool | None = None
        """Hard thresholds only: pruned weights keep the straight-through gradient and come back
        when they grow above the threshold, until the mask is frozen."""
        level: str | None = None
        """``schedule``, ``pressure`` or ``none``."""
        allocation: str | None = None
        """``gradient``, ``cost`` or ``none``."""
        grouping: str = "component"
        """``component`` (AdapMTL), ``global`` (w/o adaptive thresholds), ``backbone_heads``
        (only 2 adaptive thresholds), ``layer`` (STR-style)."""
        init: float = -6.0
        """Initial theta (alpha = sigmoid(theta))."""
        controller: str = "freeze_mask"
        """``freeze_mask`` (paper) or ``official`` (freeze thresholds only)."""
        check_every: int = 1
        exclude: list[str] = field(default_factory=list)
        schedule_start: float = 0.1
        """Fraction of training at which the cubic schedule starts (``level: schedule``)."""
        schedule_until: float = 0.5
        """Fraction of training at which the schedule reaches the target (``schedule`` and
        ``pressure``)."""
        pressure_growth: float = 1.02
        """Factor applied to the thresholds' weight decay per iteration (``level: pressure``)."""
        cost_rate: float = 0.02
        """Step in log alpha per unit of log cost (``allocation: cost``)."""
        cost_band: float = 0.25
        """Relative width of the band above each threshold whose cost is measured."""
        block: int = 1
        """Prune in blocks of this many consecutive output channels, each block kept or pruned
        whole by its magnitude (:mod:`adapmtl.sparsity.blocks`); 1 (the paper's) prunes weight
        by weight."""

    def __init__(self, target: float | None, options: Options) -> None:
        if target is None:
            raise ValueError("adapmtl needs a target sparsity (method.target)")
        options = resolve_recipe(options)
        check_block(options.block, "options.block")
        if options.allocation != "gradient" and options.level != "schedule":
            raise ValueError(
                f"allocation {options.allocation!r} needs level 'schedule': without gradients the "
                "thresholds move only by the schedule's common rescale (and the cost allocation)"
            )
        if not 0.0 <= options.schedule_start < options.schedule_until <= 1.0:
            raise ValueError(
                "need 0 <= schedule_start < schedule_until <= 1, got "
                f"{options.schedule_start!r} and {options.schedule_until!r}"
            )
        super().__init__(target, options)
        self.controller: TargetSparsityController | None = None
        self.pressure: ThresholdPressure | None = None
        self.level: ScheduledLevel | None = None
        self.allocation: CostAllocation | None = None

    def prepare(self, model: nn.Module) -> nn.Module:
        settings = {
            "grouping": self.options.grouping,
            "init": self.options.init,
            "exclude": self.options.exclude,
            "regrow": self.options.regrow,
            "block": self.options.block,
        }
        try:
            sparsify(model, mode=self.options.threshold, **settings)
        except UntraceableModelError as err:
            reason = err.__cause__ or err
            warnings.warn(
                f"threshold 'auto' could not read which layers feed normalisation layers "
                f"({reason}); "
                "every layer gets the hard threshold (set method.options.threshold to 'soft' or "
                "'hard' to choose)",
                stacklevel=2,
            )
            sparsify(model, mode="hard", **settings)
        if self.options.allocation != "gradient":
            for theta in thresholds(model).values():
                theta.requires_grad_(False)
        if self.options.allocation == "cost":
            self.allocation = CostAllocation(
                model, rate=self.options.cost_rate, band=self.options.cost_band
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

    def masks_final(self) -> bool:
        """The mask is fixed for good (``freeze_mask`` after the target; ``official`` never
        switches to masks)."""
        assert self.controller is not None
        return self.controller.mode == "freeze_mask" and self.controller.frozen

    def _ramping(self, ctx: TrainingContext, iteration: int) -> bool:
        """True while the schedule raises the level: before it starts nothing is pruned, so the
        weights just above the thresholds say nothing about what pruning costs."""
        schedule = self._scheduled_level(ctx).schedule
        return schedule.start <= iteration < schedule.end

    def after_backward(self, ctx: TrainingContext, iteration: int) -> None:
        assert self.controller is not None
        self.controller.step(iteration)
        if self.masks_final():
            return
        if self.allocation is not None and self._ramping(ctx, iteration):
            self.allocation.observe()
            self.allocation.step()
        # the pressure acts on the sparsity of this iteration's check only, never a stale one
        checked = iteration % self.controller.check_every == 0
        if self.options.level == "pressure" and checked:
            if self.pressure is None:
                until = max(1, round(self.options.schedule_until * ctx.iterations))
                self.pressure = ThresholdPressure(
                    self.target, until, growth=self.options.pressure_growth
                )
            sparsity = self.controller.last_sparsity
            if sparsity is not None:
                self.pressure.update(ctx.optimizer, iteration, sparsity)

    def on_start(self, ctx: TrainingContext) -> None:
        if self.options.level == "schedule":
            self._scheduled_level(ctx).begin()

    def after_step(self, ctx: TrainingContext, iteration: int) -> None:
        assert self.controller is not None
        if self.options.level == "schedule" and not self.masks_final():
            self._scheduled_level(ctx).step(iteration)

    def _scheduled_level(self, ctx: TrainingContext) -> ScheduledLevel:
        """Built on first use: the schedule's iterations depend on the run's length."""
        if self.level is None:
            assert self.controller is not None
            start = round(self.options.schedule_start * ctx.iterations)
            end = max(start + 1, round(self.options.schedule_until * ctx.iterations))
            schedule = CubicSchedule(self.target, start, end)
            self.level = ScheduledLevel(self.controller.model, schedule)
        return self.level

    def at_target(self) -> bool:
        assert self.controller is not None
        if self.controller.mode == "freeze_mask":
            return self.controller.frozen
        return reached(self.target, overall_sparsity(self.controller.model))

    @property
    def level_from_threshold_travel(self) -> bool:
        return self.options.level != "schedule"

    def summary(self) -> dict[str, Any]:
        assert self.controller is not None
        layers = sparse_layers(self.controller.model)
        hard = sum(p.hard for _, _, p in layers)
        return {
            "frozen_at": self.controller.frozen_at,
            "target": self.target,
            "threshold_layers": {"soft": len(layers) - hard, "hard": hard},
        }

    def state_dict(self) -> dict[str, Any]:
        assert self.controller is not None
        state: dict[str, Any] = {"controller": self.controller.state_dict()}
        if self.allocation is not None:
            state["allocation"] = self.allocation.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self.controller is not None
        self.controller.load_state_dict(state["controller"])
        if self.allocation is not None and "allocation" in state:
            self.allocation.load_state_dict(state["allocation"])


def resolve_recipe(options: AdapMTL.Options) -> AdapMTL.Options:
    """The options with ``threshold``, ``regrow``, ``level`` and ``allocation`` filled from
    ``recipe``; raises ``ValueError`` naming a bad recipe or choice."""
    if options.recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {options.recipe!r}")
    filled = {
        key: value if getattr(options, key) is None else getattr(options, key)
        for key, value in RECIPES[options.recipe].items()
    }
    for key, choices in CHOICES.items():
        if filled[key] not in choices:
            raise ValueError(f"{key} must be one of {choices}, got {filled[key]!r}")
    return replace(options, **filled)
