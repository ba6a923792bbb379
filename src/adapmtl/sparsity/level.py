"""Overall sparsity held on a schedule by one common rescale of the thresholds (no windup).

Learnable thresholds (paper Section 3.2) decide two things at once: how much of the model is
pruned (the level) and which component gives up how much (the allocation). Reaching a requested
level by balancing the thresholds' weight decay against the task gradients depends on the learning
rate, the initial theta and the budget (docs/methods.md, "Reaching the target"). Here the two are
separated:

* :func:`rescale_thresholds` multiplies every alpha by one factor ``c`` chosen so that overall
  sparsity is exactly the requested value. A weight is pruned when ``|W| / alpha_g <= c``, so ``c``
  is a quantile of the ratios ``|W| / alpha_g``; every group keeps its place in the pruning order.
* :class:`ScheduledLevel` calls it at every step with the cubic schedule of gradual magnitude
  pruning (Zhu & Gupta, 2017), so sparsity follows the schedule exactly whatever the threshold
  learning rate, initial theta or model; nothing accumulates, so nothing winds up.

The allocation stays with the thresholds' own updates (the optimizer, or
:class:`~adapmtl.sparsity.allocation.CostAllocation`): only ratios between alphas matter.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from adapmtl.sparsity.sparsify import sparse_layers, thresholds

# alpha = sigmoid(theta) in (0, 1): a rescaled alpha is kept inside so theta stays finite.
_MIN_ALPHA = 1e-30
_MAX_ALPHA = 1.0 - 1e-6


class CubicSchedule:
    """s(t) = target * (1 - (1 - (t - start) / (end - start))^3) for start <= t <= end; 0 before,
    the target after (the gradual pruning schedule of Zhu & Gupta, 2017)."""

    def __init__(self, target: float, start: int, end: int) -> None:
        if not 0.0 <= target < 1.0:
            raise ValueError(f"target sparsity must be in [0, 1), got {target!r}")
        if not 0 <= start < end:
            raise ValueError(f"schedule needs 0 <= start < end, got start={start}, end={end}")
        self.target = float(target)
        self.start = int(start)
        self.end = int(end)

    def __call__(self, iteration: int) -> float:
        progress = min(1.0, max(0.0, (iteration - self.start) / (self.end - self.start)))
        return self.target * (1.0 - (1.0 - progress) ** 3)


@torch.no_grad()
def rescale_thresholds(
    model: nn.Module, sparsity: float, *, only_down: bool = False
) -> torch.Tensor | None:
    """Scale every threshold alpha_g by one factor so that ``ceil(sparsity * n)`` of the ``n``
    thresholded weights are pruned; returns the factor as a 0-d tensor (``None`` when nothing
    was changed). No host synchronisation unless ``only_down``.

    With ``only_down`` a factor >= 1 is not applied: thresholds may only go down (used when
    landing on the target from above). Mask-mode and unthresholded layers are left alone.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    ratios, alphas = [], {}
    for _, module, p in sparse_layers(model):
        if p.masked or p.theta is None:
            continue
        alphas[p.group] = torch.sigmoid(p.theta)
        magnitude = p.magnitude(module.parametrizations.weight.original)
        ratios.append((magnitude / alphas[p.group]).flatten())
    if not ratios:
        return None
    everything = torch.cat(ratios).float()
    pruned = math.ceil(sparsity * everything.numel())
    if pruned >= everything.numel():
        return None
    first_kept = torch.kthvalue(everything, pruned + 1).values
    if pruned == 0:
        factor = first_kept / 2
    else:
        # halfway between the last pruned and the first kept ratio: robust to the rounding of
        # logit/sigmoid when the new thresholds are written back
        factor = (torch.kthvalue(everything, pruned).values + first_kept) / 2
    if only_down and bool(factor >= 1):
        return None
    for group, theta in thresholds(model).items():
        if group in alphas:
            alpha = (alphas[group] * factor.to(alphas[group])).clamp(_MIN_ALPHA, _MAX_ALPHA)
            theta.copy_(torch.logit(alpha))
    return factor


class ScheduledLevel:
    """Holds overall sparsity on ``schedule`` by :func:`rescale_thresholds` at every step.

    Call :meth:`begin` once before the first forward pass (it sets iteration 0's level, so an
    initial theta that already prunes too much does not matter), then :meth:`step` after every
    ``optimizer.step()``: it sets the thresholds the next forward pass uses.
    """

    def __init__(self, model: nn.Module, schedule: CubicSchedule) -> None:
        if not sparse_layers(model):
            raise ValueError("the model is not sparsified: call sparsify(model) first")
        self.model = model
        self.schedule = schedule

    def begin(self) -> float:
        """Set the thresholds for iteration 0; returns its scheduled sparsity."""
        return self.step(-1)

    def step(self, iteration: int) -> float:
        """Set the thresholds for iteration ``iteration + 1``; returns its scheduled sparsity."""
        level = self.schedule(iteration + 1)
        rescale_thresholds(self.model, level)
        return level
