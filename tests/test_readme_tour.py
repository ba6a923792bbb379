"""The README's plain-loop tour, run as written on a user model of its own: it must reach its
target (90 % overall sparsity, within 0.5 points) and fix the mask."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

README = Path(__file__).resolve().parent.parent / "README.md"
TOUR_HEADING = "**Primitives in your own training loop.**"
TARGET = 0.9
ITERATIONS = 80
LEVEL_STEP = re.compile(r"^( *)level\.step\(iteration\).*$", re.MULTILINE)


def tour_block() -> str:
    """The first ``python`` code block after the tour's heading in README.md."""
    text = README.read_text()
    after = text[text.index(TOUR_HEADING) :]
    match = re.search(r"```python\n(.*?)```", after, re.DOTALL)
    assert match is not None, "README.md: no python block after the tour heading"
    return match.group(1)


class TwoHeads(nn.Module):
    """A user's multitask model, written outside the project: a conv trunk and two MLP heads."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.heads = nn.ModuleDict(
            {
                task: nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2))
                for task in ("left", "right")
            }
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        return {task: head(features) for task, head in self.heads.items()}


def tour_names() -> dict[str, Any]:
    """The names the tour expects from the user: model, loader, tasks, losses, iterations."""
    torch.manual_seed(0)
    images = torch.randn(ITERATIONS, 8, 1, 8, 8)
    # learnable labels: the sign of the left and of the right half's mean
    labels = {
        "left": (images[..., :4].mean(dim=(2, 3, 4)) > 0).long(),
        "right": (images[..., 4:].mean(dim=(2, 3, 4)) > 0).long(),
    }
    loader = [(images[i], {task: labels[task][i] for task in labels}) for i in range(ITERATIONS)]
    return {
        "my_multitask_model": TwoHeads(),
        "loader": loader,
        "tasks": ["left", "right"],
        "loss_fn": {"left": nn.functional.cross_entropy, "right": nn.functional.cross_entropy},
        "iterations": ITERATIONS,
    }


def run_tour(code: str) -> dict[str, Any]:
    names = tour_names()
    exec(compile(code, str(README), "exec"), names)
    return names


def test_tour_reaches_its_target_and_fixes_the_mask(capsys: pytest.CaptureFixture[str]) -> None:
    from adapmtl.sparsity import overall_sparsity

    names = run_tour(tour_block())
    assert names["controller"].frozen
    assert names["controller"].target == TARGET
    assert overall_sparsity(names["model"]) == pytest.approx(TARGET, abs=0.005)
    assert "backbone" in capsys.readouterr().out  # the tour ends by printing the report


def test_without_the_level_step_the_tour_misses_its_target() -> None:
    """The check above is not vacuous: the level step is what takes sparsity to the target."""
    from adapmtl.sparsity import overall_sparsity

    code, removed = LEVEL_STEP.subn(r"\1pass", tour_block())
    assert removed == 1
    names = run_tour(code)
    assert not names["controller"].frozen
    assert overall_sparsity(names["model"]) < TARGET - 0.1
