"""Keypoint and edge maps: L1 loss and mean absolute error over valid pixels
(paper Section 4.1.2; REFERENCE.md §5)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from adapmtl.tasks.base import (
    AVERAGES,
    Metric,
    Task,
    batch_weighted,
    check_choice,
    masked_mean,
    resize_nearest,
)

INVALID = 255.0


class HeatmapTask(Task):
    """A one-channel regression map ``[B, 1, H, W]`` (keypoint heatmap, edge map); 255 = invalid.

    Values are used as given: Taskonomy's readers scale them to [-1, 1], the synthetic scenes
    produce [0, 1]. ``average``: ``"pooled"`` = MAE over all valid pixels of the set; ``"batch"``
    = the references' per-batch MAE weighted by batch size.
    """

    metric_directions: ClassVar[dict[str, bool]] = {"mae": False}

    def __init__(self, name: str, average: str = "pooled") -> None:
        check_choice(name, "average", average, AVERAGES)
        self.name = name
        self.channels = 1
        self.average = average

    def valid_mask(self, target: Tensor) -> Tensor:
        return target[:, 0] != INVALID

    def check(self, pred: Tensor, target: Tensor) -> None:
        self.check_dense(pred, target, target_channels=1)

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        self.check(pred, target)
        target = resize_nearest(target, pred.shape[-2:])
        return masked_mean((pred - target).abs()[:, 0], self.valid_mask(target))

    def new_metric(self) -> HeatmapMetric:
        return HeatmapMetric(self)


class HeatmapMetric(Metric):
    """Sum of absolute errors and valid-pixel count (plus per-batch sums for ``"batch"``)."""

    task: HeatmapTask

    def _zero_state(self) -> dict[str, Tensor]:
        return {
            "abs_sum": torch.zeros((), dtype=torch.float64),
            "count": torch.zeros((), dtype=torch.int64),
            "batch_sum": torch.zeros((), dtype=torch.float64),
            "batch_samples": torch.zeros((), dtype=torch.int64),
        }

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.task.check(pred, target)
        with torch.no_grad():
            pred = resize_nearest(pred, target.shape[-2:])
            valid = self.task.valid_mask(target)
            errors = (pred[:, 0][valid].double() - target[:, 0][valid].double()).abs()
            if errors.numel() == 0:
                return
            self.add(
                abs_sum=errors.sum(),
                count=torch.tensor(errors.numel(), device=errors.device),
                **batch_weighted(errors.mean(), pred.shape[0]),
            )

    def _compute(self, state: dict[str, Tensor]) -> dict[str, float]:
        n = int(state["count"])
        if n == 0:
            raise self.no_data_error()
        if self.task.average == "pooled":
            return {"mae": float(state["abs_sum"]) / n}
        return {"mae": float(state["batch_sum"] / state["batch_samples"].double())}
