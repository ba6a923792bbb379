"""Can the soft thresholds travel far enough to reach the target sparsity in the run's schedule?

Adam moves a parameter by about its learning rate per step when its gradient keeps one sign
(the normalised update m / sqrt(v) is then close to 1), and the thresholds' weight decay is such
a steady push. So over the iterations still to run, theta can rise by at most about the sum of
the thresholds' learning rates under the step schedule, and alpha = sigmoid(theta) can reach at
most sigmoid(max theta + that sum).

How large alpha must become depends on how much training shrinks the weights, which a config
cannot know. The measurable part is the target quantile of |W| over the prunable weights now:
the official NYUv2 ResNet34 recipe (theta from -15, lr 1e-3 halved every 4000 of 20000
iterations) can reach alpha 7e-4, 22 times below that quantile (1.5e-2), and reaches 90 % only
in its best runs. A run whose reachable alpha is more than :data:`WARN_FACTOR` times below the
quantile gets a warning, more than :data:`REFUSE_FACTOR` times a refusal, both with the numbers.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from adapmtl.config import Config
from adapmtl.errors import UserError
from adapmtl.sparsity.sparsify import sparse_layers, thresholds

WARN_FACTOR = 100.0
REFUSE_FACTOR = 1000.0
SAMPLE = 2_000_000  # weights read for the quantile (evenly strided)


class ThresholdReachWarning(UserWarning):
    """The thresholds can probably not reach the target sparsity in the run's schedule."""


@dataclass(frozen=True)
class Reach:
    theta: float
    """The highest threshold now."""
    travel: float
    """Bound on theta's rise over the remaining iterations (sum of the thresholds' lr)."""
    needed_alpha: float
    """The target quantile of |W| over the prunable weights now."""

    @property
    def reachable_theta(self) -> float:
        return self.theta + self.travel

    @property
    def reachable_alpha(self) -> float:
        return 1.0 / (1.0 + math.exp(-self.reachable_theta))

    @property
    def shortfall(self) -> float:
        """How many times the reachable alpha is below the needed one (< 1: reachable)."""
        return self.needed_alpha / self.reachable_alpha

    def describe(self, config: Config) -> str:
        optim = config.optim
        lr = optim.threshold_lr if optim.threshold_lr is not None else optim.lr
        source = "optim.threshold_lr" if optim.threshold_lr is not None else "optim.lr"
        return (
            f"the thresholds start at theta {self.theta:.2f} and Adam moves them by at most "
            f"about their learning rate per step: {source} {lr:g}, x{optim.lr_gamma:g} every "
            f"{optim.lr_step} of {config.train.iterations} iterations, lets theta rise by "
            f"{self.travel:.2f} to {self.reachable_theta:.2f} (alpha {self.reachable_alpha:.2e}), "
            f"while {100 * (config.method.target or 0):.0f} % of the prunable weights are above "
            f"{self.needed_alpha:.2e} now ({self.shortfall:.0f} times more); raise "
            "optim.threshold_lr or method.options.init"
        )


def schedule_travel(lr: float, gamma: float, step: int, start: int, end: int) -> float:
    """Sum of the StepLR learning rates lr * gamma ** (t // step) for t in [start, end)."""
    total, t = 0.0, start
    while t < end:
        block_end = min(end, (t // step + 1) * step)
        total += (block_end - t) * lr * gamma ** (t // step)
        t = block_end
    return total


@torch.no_grad()
def threshold_reach(config: Config, model: nn.Module, iteration: int = 0) -> Reach | None:
    """The reach of ``model``'s soft thresholds from ``iteration`` on; None without any."""
    soft = [(m, p) for _, m, p in sparse_layers(model) if p.theta is not None and not p.masked]
    if not soft or config.method.target is None:
        return None
    optim = config.optim
    lr = optim.threshold_lr if optim.threshold_lr is not None else optim.lr
    travel = schedule_travel(lr, optim.lr_gamma, optim.lr_step, iteration, config.train.iterations)
    magnitudes = [p.magnitude(m.parametrizations.weight.original.detach()) for m, p in soft]
    everything = torch.cat([magnitude.flatten() for magnitude in magnitudes])
    sample = everything[:: max(1, everything.numel() // SAMPLE)].float().cpu()
    rank = min(sample.numel(), max(1, math.ceil(config.method.target * sample.numel())))
    needed = float(torch.kthvalue(sample, rank).values)
    theta = max(float(t) for t in thresholds(model).values())
    return Reach(theta=theta, travel=travel, needed_alpha=needed)


def check_threshold_reach(config: Config, model: nn.Module, iteration: int = 0) -> Reach | None:
    """Refuse a run whose thresholds cannot get near the target, warn when it looks unlikely."""
    reach = threshold_reach(config, model, iteration)
    if reach is None:
        return None
    if reach.shortfall > REFUSE_FACTOR:
        raise UserError(
            f"method.target {config.method.target}: cannot be reached in this schedule: "
            + reach.describe(config)
        )
    if reach.shortfall > WARN_FACTOR:
        warnings.warn(
            f"method.target {config.method.target} is unlikely to be reached: "
            + reach.describe(config),
            ThresholdReachWarning,
            stacklevel=2,
        )
    return reach
