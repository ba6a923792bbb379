"""``lth``: lottery tickets with rewinding (Frankle & Carbin 2019; Frankle et al. 2020).

Train dense, prune by global magnitude, reset the surviving weights to their values theta_k after
k iterations (k = 0: the initial weights, the paper's "reset the model to its initial weights";
k > 0: rewinding), reset optimizer and learning-rate schedule, and retrain with the mask fixed
(paper Section 4.1.3; docs/reference_implementations.md, baselines). With ``rounds`` > 1 the
sparsity grows geometrically, s_r = 1 - (1 - target)^(r / rounds), with a rewind after every round.

The dense phase either runs inside this run (the first ``dense_fraction`` of the iterations,
split evenly over the rounds) or comes from a dense run's checkpoint (``dense_checkpoint``; the
dense run must store theta_k with ``method.options.keep_weights_at: k``). Then the first prune
happens before the first iteration, the remaining rounds share the first ``dense_fraction`` of
the iterations, and the whole run is retraining.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from adapmtl.checkpoint import read_dense_checkpoint
from adapmtl.errors import UserError
from adapmtl.methods.base import METHODS, Method, TrainingContext
from adapmtl.methods.masking import (
    install_masks,
    load_under_masks,
    mask_smallest,
    snapshot,
)


def round_sparsity(target: float, round_index: int, rounds: int) -> float:
    """Sparsity after round ``round_index`` (1-based) of ``rounds``: each round prunes the same
    fraction of the remaining weights."""
    return 1.0 - (1.0 - target) ** (round_index / rounds)


@METHODS.register("lth")
class LTH(Method):
    name = "lth"

    @dataclass
    class Options:
        dense_checkpoint: str | None = None
        """Checkpoint of a trained dense run to prune (instead of a dense phase in this run)."""
        rewind_iteration: int = 0
        """k: survivors are reset to their weights after k iterations (0 = initial weights)."""
        rounds: int = 1
        """Pruning rounds (1 = one-shot)."""
        dense_fraction: float = 0.5
        """Share of this run's iterations trained before the last prune."""
        exclude: list[str] = field(default_factory=list)

    def __init__(self, target: float | None, options: Options) -> None:
        if target is None:
            raise ValueError("lth needs a target sparsity (method.target)")
        if options.rounds < 1:
            raise ValueError(f"options.rounds must be >= 1, got {options.rounds}")
        if options.rewind_iteration < 0:
            raise ValueError(
                f"options.rewind_iteration must be >= 0, got {options.rewind_iteration}"
            )
        if not 0.0 <= options.dense_fraction < 1.0:
            raise ValueError(
                f"options.dense_fraction must be in [0, 1), got {options.dense_fraction}"
            )
        super().__init__(target, options)
        self.rewind_weights: dict[str, torch.Tensor] | None = None
        self.rounds_done = 0
        self.pruned_at: list[int] = []

    def prepare(self, model: nn.Module) -> nn.Module:
        return install_masks(model, self.options.exclude)

    def prune_iterations(self, iterations: int) -> list[int]:
        """Iterations (steps done) at which each round prunes and rewinds."""
        rounds = self.options.rounds
        if self.options.dense_checkpoint is not None:
            if rounds == 1:
                return [0]
            length = self.options.dense_fraction * iterations / (rounds - 1)
            events = [0] + [round(r * length) for r in range(1, rounds)]
        else:
            length = self.options.dense_fraction * iterations / rounds
            events = [round(r * length) for r in range(1, rounds + 1)]
        if any(b <= a for a, b in itertools.pairwise(events)) or (
            self.options.dense_checkpoint is None and events[0] < 1
        ):
            raise UserError(
                f"lth: {rounds} rounds in dense_fraction {self.options.dense_fraction} of "
                f"{iterations} iterations leave a round without training"
            )
        if events[-1] >= iterations:
            raise UserError(f"lth: the last prune at iteration {events[-1]} leaves no retraining")
        if self.options.rewind_iteration > events[0] and self.options.dense_checkpoint is None:
            raise UserError(
                f"lth: rewind_iteration {self.options.rewind_iteration} is after the first "
                f"prune at iteration {events[0]}"
            )
        return events

    def on_start(self, ctx: TrainingContext) -> None:
        events = self.prune_iterations(ctx.iterations)
        if self.options.dense_checkpoint is None:
            if self.options.rewind_iteration == 0:
                self.rewind_weights = snapshot(ctx.model)
            return
        option = "method.options.dense_checkpoint"
        state = read_dense_checkpoint(self.options.dense_checkpoint, option)
        kept = state.get("method", {}).get("kept_weights")
        k = self.options.rewind_iteration
        if kept is None or kept["iteration"] != k:
            raise UserError(
                f"{option}: {self.options.dense_checkpoint} does not store the weights after "
                f"{k} iterations; train the dense run with method.options.keep_weights_at: {k}"
            )
        self.rewind_weights = kept["state"]
        load_under_masks(ctx.model, state["model"], option)
        assert events[0] == 0
        self._prune_and_rewind(ctx, 0)

    def after_step(self, ctx: TrainingContext, iteration: int) -> None:
        done = iteration + 1
        if self.options.dense_checkpoint is None and done == self.options.rewind_iteration:
            self.rewind_weights = snapshot(ctx.model)
        events = self.prune_iterations(ctx.iterations)
        if self.rounds_done < len(events) and done == events[self.rounds_done]:
            self._prune_and_rewind(ctx, done)

    def _prune_and_rewind(self, ctx: TrainingContext, iteration: int) -> None:
        assert self.target is not None and self.rewind_weights is not None
        self.rounds_done += 1
        mask_smallest(ctx.model, round_sparsity(self.target, self.rounds_done, self.options.rounds))
        load_under_masks(ctx.model, self.rewind_weights, "lth rewind")
        ctx.reset_optimizer()
        self.pruned_at.append(iteration)
        if self.rounds_done == self.options.rounds:
            self.rewind_weights = None  # no longer needed: keep checkpoints small

    def masks_final(self) -> bool:
        """True once the last round has pruned and rewound."""
        return self.at_target()

    def at_target(self) -> bool:
        return self.rounds_done == self.options.rounds

    def summary(self) -> dict[str, Any]:
        return {
            "pruned_at": list(self.pruned_at),
            "rewind_iteration": self.options.rewind_iteration,
        }

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rounds_done": self.rounds_done, "pruned_at": list(self.pruned_at)}
        if self.rewind_weights is not None:
            state["rewind_weights"] = self.rewind_weights
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rounds_done = int(state["rounds_done"])
        self.pruned_at = [int(i) for i in state["pruned_at"]]
        self.rewind_weights = state.get("rewind_weights")
