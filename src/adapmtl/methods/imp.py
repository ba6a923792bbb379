"""``imp``: gradual (iterative) magnitude pruning with the cubic schedule of Zhu & Gupta (2017).

Between iterations t0 and t_end, ``steps`` times at equal intervals (t_j = t0 + j (t_end - t0) / n,
j = 1..n), the model is pruned by global magnitude to

    s_j = s_f + (s_i - s_f) (1 - j / n)^3

(global magnitude over every prunable weight). Pruned weights stay pruned; after t_end the mask is
fixed at s_f = the target and the survivors keep training. With ``dense_checkpoint`` the run starts
from a trained dense model, as the paper's IMP row; otherwise from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from adapmtl.checkpoint import read_dense_checkpoint
from adapmtl.methods.base import METHODS, Method, TrainingContext
from adapmtl.methods.masking import (
    install_masks,
    load_under_masks,
    mask_smallest,
)
from adapmtl.sparsity.blocks import check_block


def cubic_sparsity(step: int, steps: int, initial: float, final: float) -> float:
    """Zhu & Gupta's s_j = s_f + (s_i - s_f)(1 - j/n)^3."""
    return final + (initial - final) * (1.0 - step / steps) ** 3


@METHODS.register("imp")
class IMP(Method):
    name = "imp"

    @dataclass
    class Options:
        start_fraction: float = 0.1
        """t0 as a fraction of the run's iterations."""
        end_fraction: float = 0.6
        """t_end (the last prune, at the target) as a fraction of the run's iterations."""
        steps: int = 20
        """n: number of pruning steps between t0 and t_end."""
        initial_sparsity: float = 0.0
        """s_i."""
        dense_checkpoint: str | None = None
        """Checkpoint of a trained dense run to start from."""
        block: int = 1
        """Prune in blocks of this many consecutive output channels, scored by their magnitude
        (:mod:`adapmtl.sparsity.blocks`); 1 prunes weight by weight."""
        exclude: list[str] = field(default_factory=list)

    def __init__(self, target: float | None, options: Options) -> None:
        if target is None:
            raise ValueError("imp needs a target sparsity (method.target)")
        if not 0.0 <= options.start_fraction < options.end_fraction < 1.0:
            raise ValueError(
                "options: expected 0 <= start_fraction < end_fraction < 1, got "
                f"{options.start_fraction} and {options.end_fraction}"
            )
        if options.steps < 1:
            raise ValueError(f"options.steps must be >= 1, got {options.steps}")
        check_block(options.block, "options.block")
        if not 0.0 <= options.initial_sparsity <= target:
            raise ValueError(
                f"options.initial_sparsity must be in [0, target], got {options.initial_sparsity}"
            )
        super().__init__(target, options)
        self.steps_done = 0

    def prepare(self, model: nn.Module) -> nn.Module:
        return install_masks(model, self.options.exclude)

    def schedule(self, iterations: int) -> list[tuple[int, float]]:
        """(iteration, sparsity) of every pruning step, for a run of ``iterations``."""
        assert self.target is not None
        t0 = self.options.start_fraction * iterations
        t_end = self.options.end_fraction * iterations
        n = self.options.steps
        return [
            (
                round(t0 + j * (t_end - t0) / n),
                cubic_sparsity(j, n, self.options.initial_sparsity, self.target),
            )
            for j in range(1, n + 1)
        ]

    def on_start(self, ctx: TrainingContext) -> None:
        if self.options.dense_checkpoint is not None:
            option = "method.options.dense_checkpoint"
            state = read_dense_checkpoint(self.options.dense_checkpoint, option)
            load_under_masks(ctx.model, state["model"], option)
        t0 = round(self.options.start_fraction * ctx.iterations)
        if t0 == 0 and self.options.initial_sparsity > 0:
            mask_smallest(ctx.model, self.options.initial_sparsity, self.options.block)

    def after_step(self, ctx: TrainingContext, iteration: int) -> None:
        done = iteration + 1
        t0 = round(self.options.start_fraction * ctx.iterations)
        if done == t0 and t0 > 0 and self.options.initial_sparsity > 0:
            mask_smallest(ctx.model, self.options.initial_sparsity, self.options.block)
        for step, (at, sparsity) in enumerate(self.schedule(ctx.iterations), start=1):
            if at == done and step > self.steps_done:
                mask_smallest(ctx.model, sparsity, self.options.block)
                self.steps_done = step

    def masks_final(self) -> bool:
        """True once the last pruning step is done."""
        return self.at_target()

    def at_target(self) -> bool:
        return self.steps_done == self.options.steps

    def summary(self) -> dict[str, Any]:
        return {"prune_steps_done": self.steps_done}

    def state_dict(self) -> dict[str, Any]:
        return {"steps_done": self.steps_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps_done = int(state["steps_done"])
