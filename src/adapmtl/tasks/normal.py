"""Surface normals: 1 - cosine loss on L2-normalised vectors; angle-error metrics in degrees
(paper Section 4.1.2) and the mean cosine similarity of the supplement's Taskonomy tables
(docs/reference_implementations.md, losses and metrics)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from adapmtl.tasks.base import Metric, Task, masked_mean, resize_nearest, select_metrics

WITHIN_DEGREES = (11.25, 22.5, 30.0)


def cosine(pred: Tensor, target: Tensor) -> Tensor:
    """Per-pixel cosine (float64, clipped to [-1, 1]) between ``[B, 3, H, W]`` vectors after L2
    normalisation. A zero prediction normalises to the zero vector: cosine 0."""
    p = F.normalize(pred.double(), dim=1)
    g = F.normalize(target.double(), dim=1)
    return (p * g).sum(dim=1).clamp(-1.0, 1.0)


def angle_degrees(pred: Tensor, target: Tensor) -> Tensor:
    """Per-pixel angle (degrees, float64) between ``[B, 3, H, W]`` vectors after L2 normalisation.

    A zero prediction normalises to the zero vector and so counts as 90 degrees off.
    """
    return torch.rad2deg(torch.arccos(cosine(pred, target)))


class NormalTask(Task):
    """Unit surface normals ``[B, 3, H, W]``; a pixel whose target is the zero vector is invalid.

    Loss: 1 - mean cosine between the L2-normalised prediction and target over valid pixels (the
    paper's "negative cosine" shifted by 1 so the loss stays positive, which the adaptive
    weighting's relative loss change needs). ``median_bin`` is the histogram resolution (degrees)
    of the median; see :class:`NormalMetric`. ``metrics``: what the task reports, out of the five
    angle metrics (the default) and ``cosine``, the mean cosine similarity over valid pixels
    (higher is better; the supplement's Taskonomy tables).
    """

    METRICS: ClassVar[dict[str, bool]] = {
        "angle_mean": False,
        "angle_median": False,
        "within_11.25": True,
        "within_22.5": True,
        "within_30": True,
        "cosine": True,
    }

    def __init__(
        self,
        name: str = "normal",
        median_bin: float = 0.01,
        metrics: Sequence[str] | None = None,
    ) -> None:
        if not 0.0 < median_bin <= 1.0:
            raise ValueError(
                f"task {name!r}: median_bin must be in (0, 1] degrees, got {median_bin}"
            )
        self.name = name
        self.channels = 3
        self.median_bin = median_bin
        self.metric_directions = select_metrics(
            name, self.METRICS, metrics, [m for m in self.METRICS if m != "cosine"]
        )

    def valid_mask(self, target: Tensor) -> Tensor:
        return (target != 0).any(dim=1)

    def check(self, pred: Tensor, target: Tensor, *, values: bool = True) -> None:
        self.check_dense(pred, target, target_channels=3, values=values)

    def loss(self, pred: Tensor, target: Tensor, *, check_values: bool = True) -> Tensor:
        self.check(pred, target, values=check_values)
        target = resize_nearest(target, pred.shape[-2:])
        cos = (F.normalize(pred, dim=1) * F.normalize(target, dim=1)).sum(dim=1)
        return masked_mean(1.0 - cos, self.valid_mask(target))

    def new_metric(self) -> NormalMetric:
        return NormalMetric(self)


class NormalMetric(Metric):
    """Angle statistics over all valid pixels of the set.

    Mean, the within-threshold percentages and the mean cosine are exact (sums of angles and
    cosines, exact counts of angle <= 11.25, 22.5, 30 degrees as the references count). The
    median comes from a histogram of ``task.median_bin``-degree bins over [0, 180] (18,000 bins
    at the default 0.01 degree): each middle order statistic is reported at its bin centre, so
    the median is within half a bin (0.005 degree by default) of the exact value.
    """

    task: NormalTask

    @property
    def bins(self) -> int:
        return round(180.0 / self.task.median_bin)

    def _zero_state(self) -> dict[str, Tensor]:
        return {
            "histogram": torch.zeros(self.bins, dtype=torch.int64, device="cpu"),
            "angle_sum": torch.zeros((), dtype=torch.float64, device="cpu"),
            "cos_sum": torch.zeros((), dtype=torch.float64, device="cpu"),
            "count": torch.zeros((), dtype=torch.int64, device="cpu"),
            "within": torch.zeros(len(WITHIN_DEGREES), dtype=torch.int64, device="cpu"),
        }

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.task.check(pred, target)
        with torch.no_grad():
            pred = resize_nearest(pred, target.shape[-2:])
            cos = cosine(pred, target)[self.task.valid_mask(target)]
            angles = torch.rad2deg(torch.arccos(cos))
            index = (angles / self.task.median_bin).long().clamp(max=self.bins - 1)
            thresholds = torch.tensor(WITHIN_DEGREES, dtype=angles.dtype, device=angles.device)
            self.add(
                histogram=torch.bincount(index, minlength=self.bins),
                angle_sum=angles.sum(),
                cos_sum=cos.sum(),
                count=torch.tensor(angles.numel(), device=angles.device),
                within=(angles[:, None] <= thresholds).sum(dim=0),
            )

    def _compute(self, state: dict[str, Tensor]) -> dict[str, float]:
        n = int(state["count"])
        if n == 0:
            raise self.no_data_error()
        cumulative = state["histogram"].cumsum(0)
        middle = torch.tensor([(n - 1) // 2, n // 2], device=cumulative.device)
        # Bin holding the k-th smallest angle (0-based): first bin whose cumulative count > k.
        bins = torch.searchsorted(cumulative, middle, right=True)
        median = float(((bins.double() + 0.5) * self.task.median_bin).mean())
        within = (100.0 * state["within"].double() / n).tolist()
        values = {
            "angle_mean": float(state["angle_sum"]) / n,
            "angle_median": median,
            "within_11.25": within[0],
            "within_22.5": within[1],
            "within_30": within[2],
            "cosine": float(state["cos_sum"]) / n,
        }
        return {m: values[m] for m in self.task.metric_directions}
