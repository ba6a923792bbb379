"""``dense``: no pruning; the reference model of the normalised score Delta_T.

With ``keep_weights_at: k`` the run also stores its weights after k iterations (0 = the initial
weights) in its checkpoints, so an ``lth`` run can prune this dense model and rewind the
survivors to them (``lth`` option ``dense_checkpoint``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from adapmtl.methods.base import METHODS, Method, TrainingContext
from adapmtl.methods.masking import snapshot


@METHODS.register("dense")
class Dense(Method):
    name = "dense"

    @dataclass
    class Options:
        keep_weights_at: int | None = None
        """Store the weights after this many iterations (0 = initial) for LTH rewinding."""

    def __init__(self, target: float | None, options: Options) -> None:
        if options.keep_weights_at is not None and options.keep_weights_at < 0:
            raise ValueError(f"options.keep_weights_at must be >= 0, got {options.keep_weights_at}")
        super().__init__(None, options)  # prunes nothing: a configured target does not apply
        self.kept: dict[str, torch.Tensor] | None = None

    def on_start(self, ctx: TrainingContext) -> None:
        if self.options.keep_weights_at == 0:
            self.kept = snapshot(ctx.model)

    def after_step(self, ctx: TrainingContext, iteration: int) -> None:
        if self.options.keep_weights_at == iteration + 1:
            self.kept = snapshot(ctx.model)

    def state_dict(self) -> dict[str, Any]:
        if self.kept is None:
            return {}
        return {"kept_weights": {"iteration": self.options.keep_weights_at, "state": self.kept}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        kept = state.get("kept_weights")
        self.kept = None if kept is None else kept["state"]
