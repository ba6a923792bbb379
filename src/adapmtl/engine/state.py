"""A run's state in a checkpoint: what the trainer saves (weights, optimizer, schedule, weighting,
method, random state per process) and the checks and restores of a resume or an ``--init-from``.

A checkpoint holds tensors and plain containers only (read with ``weights_only=True``,
:mod:`adapmtl.checkpoint`), the fp16 loss scale included; the random state of every process is
saved, so a resumed run continues bit for bit, with the same or another number of processes
(docs/distributed.md).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adapmtl.config import Config, with_defaults, without_length
from adapmtl.engine.distributed import Distributed
from adapmtl.errors import UserError
from adapmtl.loading import model_from_checkpoint
from adapmtl.methods import Method
from adapmtl.sparsity import dense_state_dict, is_sparsified, load_dense_state_dict, thresholds
from adapmtl.weighting import Weighting

FORMAT = "adapmtl-checkpoint-1"


def rank_seed(seed: int, rank: int, iteration: int) -> int:
    """The torch seed of process ``rank`` from ``iteration`` on, when it has no saved state."""
    return (seed * 1_000_003 + rank * 7_919 + iteration) % 2**63


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's torch random state (and its CUDA device's)."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(
    state: dict[str, Any], dist: Distributed, device: torch.device, seed: int, iteration: int
) -> None:
    """This process's random state: its own when the job has as many processes as the one
    that saved the checkpoint; otherwise rank 0 takes rank 0's and the others are seeded
    from (seed, rank, iteration)."""
    per_rank = state.get("ranks") or [{"torch": state["torch"]}]
    if len(per_rank) == dist.world_size or dist.is_main:
        mine = per_rank[dist.rank]
        torch.set_rng_state(mine["torch"])
        if "cuda" in mine and device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda"], device)
    else:
        torch.manual_seed(rank_seed(seed, dist.rank, iteration))
    random.setstate((3, tuple(state["python"]), None))


def checkpoint_state(
    *,
    iteration: int,
    config: Config,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    weighting: Weighting,
    method: Method,
    rng_per_rank: list[dict[str, torch.Tensor]],
    best: dict[str, Any] | None,
    skipped_steps: int,
    scaler: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a resume needs, as one checkpoint dict."""
    return {
        "format": FORMAT,
        "iteration": iteration,
        "config": config.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "weighting": weighting.state_dict(),
        "method": method.state_dict(),
        "rng": {
            "torch": rng_per_rank[0]["torch"],
            "python": list(random.getstate()[1]),
            "ranks": rng_per_rank,
        },
        "best": best,
        "skipped_steps": skipped_steps,
        "scaler": scaler,
    }


def check_resumable(state: dict[str, Any], config: Config, run_dir: Path) -> None:
    """Refuse to resume a checkpoint made with another config (only ``train.iterations`` may
    change) or one that has trained past ``train.iterations``."""
    theirs = without_length(with_defaults(state.get("config") or {}))
    ours = without_length(config.to_dict())
    if theirs != ours:
        differing = [k for k in ours if theirs.get(k) != ours[k]]
        raise UserError(
            f"cannot resume {run_dir}: its checkpoint was made with a different config "
            f"(sections {differing}); resume with the run's own config.yaml (only "
            "train.iterations may change, to continue a run)"
        )
    if config.train.iterations < int(state["iteration"]):
        raise UserError(
            f"cannot resume {run_dir}: it has trained {state['iteration']} iterations, "
            f"more than train.iterations={config.train.iterations}"
        )


def init_from_run(model: nn.Module, state: dict[str, Any], path: Path) -> None:
    """Start ``model`` (prepared by its method) from another run's checkpoint ``state``: its
    effective weights, and the thresholds both models have."""
    source, _, _ = model_from_checkpoint(state, path)
    plain = dense_state_dict(source) if is_sparsified(source) else source.state_dict()
    try:
        if is_sparsified(model):
            load_dense_state_dict(model, plain)
        else:
            model.load_state_dict(plain)
    except (ValueError, RuntimeError) as err:
        raise UserError(f"--init-from {path}: {err}") from None
    with torch.no_grad():
        for key, theta in thresholds(source).items():
            if key in thresholds(model):
                thresholds(model)[key].copy_(theta)
