"""The README's tour, run as written: the plain loop on a user model of its own must reach its
target (90 % overall sparsity, within 0.5 points) and fix the mask; the Python API block trains
and reads back the CPU presets (shrunk to a few seconds by overrides the test adds)."""

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


API_HEADING = "**Runs from Python.**"
# the CPU presets at a size that trains in seconds: appended to the block's own overrides
SHRINK = [
    "model.options.head_channels=16",
    "data.batch_size=4",
    "data.eval_batch_size=8",
    "data.train_options={n: 32, size: [32, 32]}",
    "data.val_options={n: 8, size: [32, 32]}",
    "train.iterations=12",
    "train.val_every=6",
    "train.checkpoint_every=6",
    "train.threads=1",
]


def tour_block(heading: str = TOUR_HEADING) -> str:
    """The first ``python`` code block after ``heading`` in README.md."""
    text = README.read_text()
    after = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", after, re.DOTALL)
    assert match is not None, f"README.md: no python block after {heading}"
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


@pytest.mark.slow
def test_python_api_block_trains_and_reads_back_the_presets(tmp_path, monkeypatch) -> None:
    import adapmtl.runs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(README.parent / "configs")
    resolve = adapmtl.runs.resolve_config
    monkeypatch.setattr(
        adapmtl.runs,
        "resolve_config",
        lambda config, overrides=(): resolve(config, [*overrides, *SHRINK]),
    )
    names: dict[str, Any] = {}
    exec(compile(tour_block(API_HEADING), str(README), "exec"), names)
    run, test = names["run"], names["test"]
    assert run.directory == Path("runs/scenes/adapmtl_cpu")
    assert run.checkpoint.name in ("best.pt", "last.pt")
    assert run.config.method.name == "adapmtl" and run.config.method.target == 0.9
    assert run.results["final_sparsity"] == pytest.approx(0.9, abs=0.005)
    assert test["split"] == "test" and set(test["delta_t"]["per_task"]) == set(run.tasks)
