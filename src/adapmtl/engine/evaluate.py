"""Evaluation: the paper's metrics accumulated over a whole split (Delta_T against a dense
reference is :func:`adapmtl.tasks.score.normalised_score`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from adapmtl.errors import UserError


@torch.no_grad()
def evaluate(
    model: nn.Module,
    tasks: dict[str, Any],
    loader: DataLoader,
    device: torch.device,
    *,
    max_batches: int | None = None,
    reduce_state: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> dict[str, Any]:
    """Metrics per task over the loader (sufficient statistics accumulated, then computed) and the
    mean unweighted loss per task over the batches.

    ``reduce_state`` (DDP: a sum over processes) is applied to every metric's ``state()`` and to
    the loss sums and batch count before anything is computed, so N processes that evaluate
    disjoint batches report what one process evaluating all of them would."""
    was_training = model.training
    model.eval()
    metrics = {name: task.new_metric() for name, task in tasks.items()}
    loss_sums = torch.zeros(len(tasks), dtype=torch.float64, device="cpu")
    batches = 0
    for index, (images, targets) in enumerate(loader):
        if max_batches is not None and index >= max_batches:
            break
        outputs = model(images.to(device, non_blocking=True))
        for position, (name, task) in enumerate(tasks.items()):
            target = targets[name].to(device, non_blocking=True)
            loss_sums[position] += float(task.loss(outputs[name], target))
            metrics[name].update(outputs[name], target)
        batches += 1
    model.train(was_training)
    totals = {
        "loss": loss_sums,
        "batches": torch.tensor([batches], dtype=torch.int64, device="cpu"),
    }
    if reduce_state is not None:
        for metric in metrics.values():
            metric.load_state(reduce_state(metric.state()))
        totals = reduce_state(totals)
    batches = int(totals["batches"].item())
    if batches == 0:
        raise UserError("the evaluation split is empty")
    return {
        "metrics": {name: metric.compute() for name, metric in metrics.items()},
        "loss": {
            name: float(total) / batches
            for name, total in zip(tasks, totals["loss"].tolist(), strict=True)
        },
    }
