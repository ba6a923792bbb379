"""Depth: masked L1 loss; absolute/relative error and the delta < 1.25^k accuracies
(paper Section 4.1.2; docs/reference_implementations.md, losses and metrics)."""

from __future__ import annotations

from collections.abc import Sequence
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
    select_metrics,
)

DELTA_BASE = 1.25


class DepthTask(Task):
    """Depth maps ``[B, 1, H, W]``; a pixel is valid when its target exceeds ``valid_threshold``.

    Options:
        valid_threshold: 0 by default (0 = invalid); the NYUv2 references use 3e-5.
        eps: predictions are clamped to >= eps before the delta ratio max(p/g, g/p), so a
            non-positive prediction is never "within" a threshold. abs/rel use the raw prediction.
        faithful: skip that clamp, reproducing the references' quirk where a negative prediction
            gives a negative ratio and so counts as within every threshold.
        average: ``"pooled"`` = abs/rel averaged over all valid pixels of the set; ``"batch"`` =
            the references' per-batch mean weighted by batch size. Deltas are always pooled.
        metrics: what the task reports (default: all five; the supplement's Taskonomy tables
            report ``abs_err`` only).
    """

    METRICS: ClassVar[dict[str, bool]] = {
        "abs_err": False,
        "rel_err": False,
        "delta1": True,
        "delta2": True,
        "delta3": True,
    }

    def __init__(
        self,
        name: str = "depth",
        valid_threshold: float = 0.0,
        eps: float = 1e-6,
        faithful: bool = False,
        average: str = "pooled",
        metrics: Sequence[str] | None = None,
    ) -> None:
        check_choice(name, "average", average, AVERAGES)
        if valid_threshold < 0 or eps <= 0:
            raise ValueError(
                f"task {name!r}: valid_threshold must be >= 0 and eps > 0, "
                f"got {valid_threshold} and {eps}"
            )
        self.name = name
        self.channels = 1
        self.valid_threshold = valid_threshold
        self.eps = eps
        self.faithful = faithful
        self.average = average
        self.metric_directions = select_metrics(name, self.METRICS, metrics, list(self.METRICS))

    def valid_mask(self, target: Tensor) -> Tensor:
        return target[:, 0] > self.valid_threshold

    def check(self, pred: Tensor, target: Tensor, *, values: bool = True) -> None:
        self.check_dense(pred, target, target_channels=1, values=values)

    def loss(self, pred: Tensor, target: Tensor, *, check_values: bool = True) -> Tensor:
        self.check(pred, target, values=check_values)
        target = resize_nearest(target, pred.shape[-2:])
        return masked_mean((pred - target).abs()[:, 0], self.valid_mask(target))

    def new_metric(self) -> DepthMetric:
        return DepthMetric(self)


class DepthMetric(Metric):
    """Sums of |p - g| and |p - g| / g, valid-pixel count, and counts of
    max(p/g, g/p) <= 1.25^k (k = 1, 2, 3; "<=" as the references count). Deltas in percent."""

    task: DepthTask

    def _zero_state(self) -> dict[str, Tensor]:
        return {
            "abs_sum": torch.zeros((), dtype=torch.float64, device="cpu"),
            "rel_sum": torch.zeros((), dtype=torch.float64, device="cpu"),
            "count": torch.zeros((), dtype=torch.int64, device="cpu"),
            "within": torch.zeros(3, dtype=torch.int64, device="cpu"),
            "batch_sum": torch.zeros(2, dtype=torch.float64, device="cpu"),
            "batch_samples": torch.zeros((), dtype=torch.int64, device="cpu"),
        }

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.task.check(pred, target)
        with torch.no_grad():
            pred = resize_nearest(pred, target.shape[-2:])
            valid = self.task.valid_mask(target)
            p, g = pred[:, 0][valid].double(), target[:, 0][valid].double()
            if g.numel() == 0:
                return
            abs_err = (p - g).abs()
            rel_err = abs_err / g
            q = p if self.task.faithful else p.clamp_min(self.task.eps)
            ratio = torch.maximum(q / g, g / q)
            thresholds = DELTA_BASE ** torch.arange(1, 4, dtype=g.dtype, device=g.device)
            self.add(
                abs_sum=abs_err.sum(),
                rel_sum=rel_err.sum(),
                count=torch.tensor(g.numel(), device=g.device),
                within=(ratio[:, None] <= thresholds).sum(dim=0),
                **batch_weighted(torch.stack([abs_err.mean(), rel_err.mean()]), pred.shape[0]),
            )

    def _compute(self, state: dict[str, Tensor]) -> dict[str, float]:
        n = int(state["count"])
        if n == 0:
            raise self.no_data_error()
        if self.task.average == "pooled":
            abs_err, rel_err = float(state["abs_sum"]) / n, float(state["rel_sum"]) / n
        else:
            abs_err, rel_err = (state["batch_sum"] / state["batch_samples"].double()).tolist()
        delta = (100.0 * state["within"].double() / n).tolist()
        values = {
            "abs_err": abs_err,
            "rel_err": rel_err,
            "delta1": delta[0],
            "delta2": delta[1],
            "delta3": delta[2],
        }
        return {m: values[m] for m in self.task.metric_directions}
