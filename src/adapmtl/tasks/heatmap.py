"""Keypoint and edge maps: L1 loss and mean absolute error over valid pixels
(paper Section 4.1.2; docs/reference_implementations.md), or binary cross-entropy on logits for
[0, 1] maps."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
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
LOSSES = ("l1", "bce")


class HeatmapTask(Task):
    """A one-channel regression map ``[B, 1, H, W]`` (keypoint heatmap, edge map); 255 = invalid.

    Values are used as given: Taskonomy's readers scale them to [-1, 1], the synthetic scenes
    produce [0, 1]. ``average``: ``"pooled"`` = MAE over all valid pixels of the set; ``"batch"``
    = the references' per-batch MAE weighted by batch size. ``loss``: ``"l1"`` (the paper's) on
    the raw output, or ``"bce"``: the output is a logit, trained with binary cross-entropy against
    targets in [0, 1] and measured (MAE) after a sigmoid. On sparse [0, 1] maps such as the
    scenes' edges and keypoints, L1 is minimised by predicting 0 almost everywhere, so the head
    learns nothing; BCE does learn them (docs/results/data_difficulty_bce.md).
    """

    metric_directions: ClassVar[dict[str, bool]] = {"mae": False}

    def __init__(self, name: str, average: str = "pooled", loss: str = "l1") -> None:
        check_choice(name, "average", average, AVERAGES)
        check_choice(name, "loss", loss, LOSSES)
        self.name = name
        self.channels = 1
        self.average = average
        self.loss_kind = loss

    def valid_mask(self, target: Tensor) -> Tensor:
        return target[:, 0] != INVALID

    def check(self, pred: Tensor, target: Tensor, *, values: bool = True) -> None:
        self.check_dense(pred, target, target_channels=1, values=values)
        if not values or self.loss_kind != "bce":
            return
        labels = target[:, 0][self.valid_mask(target)]
        if labels.numel() and (labels.min() < 0 or labels.max() > 1):
            raise ValueError(
                f"task {self.name!r}: loss 'bce' needs targets in [0, 1], got values in "
                f"[{labels.min().item():.4g}, {labels.max().item():.4g}]"
            )

    def target_problem(self, target: Tensor) -> Tensor:
        if self.loss_kind != "bce":
            return super().target_problem(target)
        values = target[:, 0]
        return (self.valid_mask(target) & ((values < 0) | (values > 1))).any()

    def prediction(self, pred: Tensor) -> Tensor:
        """The map the output stands for: the output itself (L1) or its sigmoid (BCE)."""
        return torch.sigmoid(pred) if self.loss_kind == "bce" else pred

    def loss(self, pred: Tensor, target: Tensor, *, check_values: bool = True) -> Tensor:
        self.check(pred, target, values=check_values)
        target = resize_nearest(target, pred.shape[-2:])
        valid = self.valid_mask(target)
        if self.loss_kind == "l1":
            return masked_mean((pred - target).abs()[:, 0], valid)
        per_pixel = F.binary_cross_entropy_with_logits(
            pred[:, 0], torch.where(valid, target[:, 0], 0.0), reduction="none"
        )
        return masked_mean(per_pixel, valid)

    def new_metric(self) -> HeatmapMetric:
        return HeatmapMetric(self)


class HeatmapMetric(Metric):
    """Sum of absolute errors and valid-pixel count (plus per-batch sums for ``"batch"``)."""

    task: HeatmapTask

    def _zero_state(self) -> dict[str, Tensor]:
        return {
            "abs_sum": torch.zeros((), dtype=torch.float64, device="cpu"),
            "count": torch.zeros((), dtype=torch.int64, device="cpu"),
            "batch_sum": torch.zeros((), dtype=torch.float64, device="cpu"),
            "batch_samples": torch.zeros((), dtype=torch.int64, device="cpu"),
        }

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.task.check(pred, target)
        with torch.no_grad():
            pred = self.task.prediction(resize_nearest(pred, target.shape[-2:]))
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
