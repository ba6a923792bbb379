"""Shared fixtures: a tiny scenes configuration that trains in seconds on 2 CPU cores."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from hypothesis import settings

# Property tests draw the same examples on every run (a failure reproduces on any machine) and
# keep no example database in the working tree.
settings.register_profile("adapmtl", derandomize=True, database=None, deadline=None)
settings.load_profile("adapmtl")

TINY: dict[str, Any] = {
    # init_std pinned to the reference's 0.01: the threshold settings below are calibrated to it
    # (a few dozen iterations must reach the targets).
    "model": {
        "name": "deeplab_resnet34_cpu",
        "options": {"width": 0.125, "head_channels": 16, "init_std": 0.01},
    },
    "tasks": {"preset": "scenes"},
    "data": {
        "name": "scenes",
        "batch_size": 4,
        "eval_batch_size": 8,
        "options": {"size": [32, 32]},
        "train_options": {"n": 32},
        "val_options": {"n": 8},
    },
    "method": {"name": "adapmtl", "target": 0.5, "options": {"init": -5.0}},
    "weighting": {"name": "adaptive", "options": {"window": 4, "warmup": 4}},
    "optim": {
        "lr": 1e-3,
        "lr_step": 10,
        "threshold_lr": 0.1,
        "threshold_weight_decay": 1.0,
    },
    "train": {
        "iterations": 12,
        "val_every": 6,
        "log_every": 3,
        "checkpoint_every": 6,
        "seed": 0,
        "deterministic": True,
        "threads": 1,
    },
}


@pytest.fixture
def tiny_settings() -> dict[str, Any]:
    return copy.deepcopy(TINY)


def fit_tiny(
    tiny: dict[str, Any],
    run_dir: Any,
    method: dict[str, Any] | None = None,
    optim: dict[str, Any] | None = None,
    **train: Any,
) -> Any:
    """A trainer fitted on ``tiny`` with ``method`` replaced and ``optim``/``train`` keys
    overridden."""
    from adapmtl.config import from_dict
    from adapmtl.engine.trainer import Trainer

    settings = copy.deepcopy(tiny)
    if method is not None:
        settings["method"] = method
    settings["optim"] = {**settings["optim"], **(optim or {})}
    settings["train"] = {**settings["train"], **train}
    trainer = Trainer(from_dict(settings), run_dir, verbose=False)
    trainer.fit()
    return trainer


@pytest.fixture(autouse=True)
def _restore_torch_state():
    """One intra-op thread per test: the tensors are small, and two threads on a shared 2-core
    machine spin against each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)
