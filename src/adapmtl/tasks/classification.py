"""Image-level classification (cross-entropy, accuracy), so the same primitives serve
multitask classification models (MultiMNIST- or CelebA-style: one task per label)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from adapmtl.tasks.base import Metric, Task, cross_entropy_mean, shape_str


class ClassificationTask(Task):
    """Logits ``[B, num_classes]`` against integer labels ``[B]``; every sample is valid."""

    metric_directions: ClassVar[dict[str, bool]] = {"accuracy": True}

    def __init__(
        self,
        name: str,
        num_classes: int,
        class_weights: Sequence[float] | Tensor | None = None,
    ) -> None:
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"task {name!r}: num_classes must be an int >= 2, got {num_classes!r}")
        self.name = name
        self.channels = num_classes
        self.num_classes = num_classes
        self.class_weights = None
        if class_weights is not None:
            w = torch.as_tensor(class_weights, dtype=torch.float32, device="cpu").flatten()
            if w.numel() != num_classes or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
                raise self.error(f"class_weights must be {num_classes} finite non-negative values")
            self.class_weights = w

    def valid_mask(self, target: Tensor) -> Tensor:
        return torch.ones_like(target, dtype=torch.bool)

    def target_problem(self, target: Tensor) -> Tensor:
        return ((target < 0) | (target >= self.num_classes)).any()

    def check(self, pred: Tensor, target: Tensor, *, values: bool = True) -> None:
        if pred.ndim != 2 or pred.shape[1] != self.num_classes:
            raise self.error(
                f"prediction must have shape [B, {self.num_classes}], got {shape_str(pred)}"
            )
        if target.ndim != 1 or target.is_floating_point() or target.dtype == torch.bool:
            raise self.error(
                f"target must be integer labels [B], got {shape_str(target)} {target.dtype}"
            )
        if pred.shape[0] != target.shape[0]:
            raise self.error(
                f"batch size differs: prediction {shape_str(pred)} vs target {shape_str(target)}"
            )
        if not values:
            return
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= self.num_classes):
            raise self.error(
                f"target labels must be in [0, {self.num_classes - 1}], "
                f"found {int(target.min())}..{int(target.max())}"
            )
        self.check_finite(pred)

    def loss(self, pred: Tensor, target: Tensor, *, check_values: bool = True) -> Tensor:
        self.check(pred, target, values=check_values)
        weight = (
            None if self.class_weights is None else self.class_weights.to(pred.device, pred.dtype)
        )
        return cross_entropy_mean(pred, target.long(), weight)

    def new_metric(self) -> ClassificationMetric:
        return ClassificationMetric(self)


class ClassificationMetric(Metric):
    """Correct predictions and sample count; accuracy in percent."""

    task: ClassificationTask

    def _zero_state(self) -> dict[str, Tensor]:
        return {
            "correct": torch.zeros((), dtype=torch.int64, device="cpu"),
            "count": torch.zeros((), dtype=torch.int64, device="cpu"),
        }

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.task.check(pred, target)
        with torch.no_grad():
            correct = (pred.argmax(dim=1) == target).sum()
            self.add(correct=correct, count=torch.tensor(target.numel(), device=target.device))

    def _compute(self, state: dict[str, Tensor]) -> dict[str, float]:
        n = int(state["count"])
        if n == 0:
            raise self.no_data_error()
        return {"accuracy": 100.0 * int(state["correct"]) / n}
