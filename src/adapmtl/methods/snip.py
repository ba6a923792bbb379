"""``snip``: single-shot pruning at initialisation by connection sensitivity (Lee et al. 2019).

Before the first step, the score of every prunable weight is |dL/dm| = |g * W|, the gradient of
the multitask loss with respect to a multiplicative mask at m = 1 (Lee et al. 2019). L is
the sum of the task losses, as the training loop weights them at initialisation (all task weights
are 1 during the warm-up). One global top-k keeps (1 - target) of all weights of backbone and
heads together; the mask stays fixed for the whole schedule.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from adapmtl.methods.base import METHODS, Method, TrainingContext
from adapmtl.methods.masking import (
    accumulate_gradient_scores,
    install_masks,
)
from adapmtl.sparsity import set_masks
from adapmtl.sparsity.topk import keep_count, top_k_masks


@METHODS.register("snip")
class SNIP(Method):
    name = "snip"

    @dataclass
    class Options:
        batches: int = 1
        """Scoring mini-batches; scores |g * W| are summed over them (SNIP uses one)."""
        exclude: list[str] = field(default_factory=list)
        """Module paths (or ``re:`` patterns) never pruned."""

    def __init__(self, target: float | None, options: Options) -> None:
        if target is None:
            raise ValueError("snip needs a target sparsity (method.target)")
        if options.batches < 1:
            raise ValueError(f"options.batches must be >= 1, got {options.batches}")
        super().__init__(target, options)

    def prepare(self, model: nn.Module) -> nn.Module:
        return install_masks(model, self.options.exclude)

    def on_start(self, ctx: TrainingContext) -> None:
        assert self.target is not None
        scores = accumulate_gradient_scores(
            ctx.model,
            ctx.task_losses,
            itertools.islice(ctx.batches(), self.options.batches),
            {"all": None},
            lambda grad, weight: (grad * weight).abs(),
        )["all"]
        total = sum(s.numel() for s in scores.values())
        set_masks(ctx.model, top_k_masks(scores, keep_count(total, self.target)))

    def masks_final(self) -> bool:
        """SNIP's mask is set before the first step and never changes."""
        return True

    def summary(self) -> dict[str, Any]:
        return {"scoring_batches": self.options.batches}
