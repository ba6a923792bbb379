"""The scheduled level on a model holding exactly-zero prunable weights (a zero-initialised layer,
or a pruned run's weights loaded with --init-from): the thresholds stay finite (alpha is floored
when the factor would be 0) and the schedule is followed above the zeros' share."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from adapmtl.sparsity import overall_sparsity, sparsify, thresholds
from adapmtl.sparsity.level import CubicSchedule, ScheduledLevel


class ZeroHead(nn.Module):
    """Backbone 16x16 and two 16x4 heads; head ``b`` is zero-initialised (64 of 384 weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(16, 16, bias=False)
        self.heads = nn.ModuleDict(
            {"a": nn.Linear(16, 4, bias=False), "b": nn.Linear(16, 4, bias=False)}
        )
        nn.init.zeros_(self.heads["b"].weight)


def test_scheduled_level_with_exact_zero_weights_keeps_thresholds_finite_and_on_schedule():
    torch.manual_seed(0)
    model = sparsify(ZeroHead(), mode="hard", regrow=True)
    total = 16 * 16 + 2 * 16 * 4
    level = ScheduledLevel(model, CubicSchedule(0.5, start=0, end=10))
    level.begin()
    for iteration in range(10):
        level.step(iteration)
    assert all(math.isfinite(float(theta)) for theta in thresholds(model).values())
    # level 0.5 after the schedule's end: ceil(0.5 * 384) = 192 weights pruned, the 64 zeros among
    # them (they are the smallest)
    assert overall_sparsity(model) == pytest.approx(192 / total)


@pytest.mark.slow
def test_init_from_a_pruned_run_prunes_further_with_the_recommended_recipe(tiny_settings, tmp_path):
    from adapmtl.config import from_dict
    from adapmtl.engine.trainer import Trainer

    tiny_settings["method"]["options"] = {"init": -5.0}
    tiny_settings["train"].update(iterations=24, val_every=24, checkpoint_every=24)
    first = Trainer(from_dict(tiny_settings), tmp_path / "first", verbose=False).fit()
    assert first["method"]["frozen_at"] is not None
    tiny_settings["method"]["target"] = 0.8
    second = Trainer(
        from_dict(tiny_settings),
        tmp_path / "second",
        verbose=False,
        init_from=tmp_path / "first" / "last.pt",
    ).fit()
    assert second["method"]["frozen_at"] is not None
    assert second["sparsity"]["overall"]["sparsity"] == pytest.approx(0.8, abs=0.005)
