"""Semantic segmentation: cross-entropy with ignore label 255; mIoU and pixel accuracy from a
confusion matrix over the whole evaluation set (paper Section 4.1.2), and the cross-entropy at
label resolution that the supplement's Taskonomy tables report
(docs/reference_implementations.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from adapmtl.tasks.base import (
    Metric,
    Task,
    batch_weighted,
    check_choice,
    cross_entropy_mean,
    resize_nearest,
    select_metrics,
)

IGNORE = 255
MIOU_CONVENTIONS = ("present", "official")
PIXEL_ACC_CONVENTIONS = ("pooled", "batch")
CE_AVERAGES = ("pooled", "batch")


class SegmentationTask(Task):
    """Per-pixel classification into ``num_classes`` classes; label 255 is ignored.

    Options:
        class_weights: per-class loss weights (Taskonomy's prior factor); the loss is then the
            weighted mean, as ``F.cross_entropy(weight=...)``.
        miou: ``"present"`` averages IoU over classes with union > 0 (appearing in the ground
            truth or the prediction); ``"official"`` over classes with TP > 0, the reference code's
            convention (drops classes never predicted correctly, which inflates mIoU).
        pixel_acc: ``"pooled"`` = correct / valid pixels of the whole set; ``"batch"`` = the
            reference's per-batch accuracy averaged with batch-size weights.
        metrics: what the task reports, out of ``miou``, ``pixel_acc`` (percent, higher is
            better; the default) and ``ce`` (lower is better): the cross-entropy of the
            prediction nearest-upsampled to label resolution, over the non-ignored pixels,
            weighted by ``class_weights`` like the loss (the supplement's Taskonomy tables).
        ce: ``"pooled"`` = the (weighted) mean over all valid pixels of the set; ``"batch"`` =
            the reference's per-batch mean averaged with batch-size weights.
    """

    METRICS: ClassVar[dict[str, bool]] = {"miou": True, "pixel_acc": True, "ce": False}

    def __init__(
        self,
        num_classes: int,
        name: str = "seg",
        class_weights: Sequence[float] | Tensor | None = None,
        miou: str = "present",
        pixel_acc: str = "pooled",
        metrics: Sequence[str] | None = None,
        ce: str = "pooled",
    ) -> None:
        if not isinstance(num_classes, int) or not 1 <= num_classes < IGNORE:
            raise ValueError(
                f"task {name!r}: num_classes must be an int in [1, 254], got {num_classes!r}"
            )
        check_choice(name, "miou", miou, MIOU_CONVENTIONS)
        check_choice(name, "pixel_acc", pixel_acc, PIXEL_ACC_CONVENTIONS)
        check_choice(name, "ce", ce, CE_AVERAGES)
        self.name = name
        self.channels = num_classes
        self.num_classes = num_classes
        self.miou = miou
        self.pixel_acc = pixel_acc
        self.ce = ce
        self.metric_directions = select_metrics(name, self.METRICS, metrics, ("miou", "pixel_acc"))
        self.class_weights = None if class_weights is None else self._weights(class_weights)

    def _weights(self, weights: Sequence[float] | Tensor) -> Tensor:
        w = torch.as_tensor(weights, dtype=torch.float32, device="cpu").flatten()
        if w.numel() != self.num_classes:
            raise self.error(f"class_weights must have {self.num_classes} entries, got {w.numel()}")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise self.error("class_weights must be finite and non-negative")
        return w

    def valid_mask(self, target: Tensor) -> Tensor:
        return target != IGNORE

    def target_problem(self, target: Tensor) -> Tensor:
        return ((target != IGNORE) & ((target < 0) | (target >= self.num_classes))).any()

    def check(self, pred: Tensor, target: Tensor, *, values: bool = True) -> None:
        self.check_dense(pred, target, target_channels=None, values=values)
        if not values:
            return
        labels = target[target != IGNORE]
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            bad = int(labels.max()) if int(labels.max()) >= self.num_classes else int(labels.min())
            raise self.error(
                f"target labels must be in [0, {self.num_classes - 1}] or {IGNORE} (ignore), "
                f"found {bad}; does the dataset have a different number of classes?"
            )

    def loss(self, pred: Tensor, target: Tensor, *, check_values: bool = True) -> Tensor:
        """Mean cross-entropy over the batch's non-ignored pixels (weighted mean with weights)."""
        self.check(pred, target, values=check_values)
        target = resize_nearest(target, pred.shape[-2:]).long()
        weight = (
            None if self.class_weights is None else self.class_weights.to(pred.device, pred.dtype)
        )
        return cross_entropy_mean(pred, target, weight, ignore_index=IGNORE)

    def new_metric(self) -> SegmentationMetric:
        return SegmentationMetric(self)


class SegmentationMetric(Metric):
    """Confusion matrix (rows = ground truth, columns = prediction) plus the per-batch accuracy
    sums needed by ``pixel_acc="batch"``; with ``ce`` reported, the sums of the (weighted) pixel
    cross-entropies and of their weights, and the per-batch means. mIoU and pixel accuracy are
    in percent, as the paper's tables."""

    task: SegmentationTask

    def _zero_state(self) -> dict[str, Tensor]:
        c = self.task.num_classes
        return {
            "confusion": torch.zeros(c, c, dtype=torch.int64, device="cpu"),
            "batch_sum": torch.zeros((), dtype=torch.float64, device="cpu"),
            "batch_samples": torch.zeros((), dtype=torch.int64, device="cpu"),
            "ce_sum": torch.zeros((), dtype=torch.float64, device="cpu"),
            "ce_weight_sum": torch.zeros((), dtype=torch.float64, device="cpu"),
            "ce_batch_sum": torch.zeros((), dtype=torch.float64, device="cpu"),
            "ce_batch_samples": torch.zeros((), dtype=torch.int64, device="cpu"),
        }

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.task.check(pred, target)
        with torch.no_grad():
            if "ce" in self.task.metric_directions:
                self._add_cross_entropy(pred, target)
            labels = resize_nearest(pred.argmax(dim=1), target.shape[-2:])
            valid = target != IGNORE
            gt, pr = target[valid].long(), labels[valid]
            c = self.task.num_classes
            confusion = torch.bincount(gt * c + pr, minlength=c * c).reshape(c, c)
            self.add(confusion=confusion)
            if gt.numel():
                accuracy = (gt == pr).double().mean()
                self.add(**batch_weighted(accuracy, int(target.shape[0])))

    def _add_cross_entropy(self, pred: Tensor, target: Tensor) -> None:
        logits = resize_nearest(pred, target.shape[-2:]).double()
        valid = target != IGNORE
        safe = torch.where(valid, target, 0).long()
        nll = -logits.log_softmax(dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
        weights = self.task.class_weights
        weight = valid.double() if weights is None else weights.to(nll)[safe] * valid
        total, mass = (nll * weight).sum(), weight.sum()
        # a batch without a valid pixel adds nothing to the per-batch mean (no host read)
        seen = mass > 0
        batch = torch.tensor(target.shape[0], dtype=torch.int64, device=target.device)
        self.add(
            ce_sum=total,
            ce_weight_sum=mass,
            ce_batch_sum=torch.where(seen, total / mass.clamp_min(1e-300), 0.0) * batch,
            ce_batch_samples=torch.where(seen, batch, 0),
        )

    def _compute(self, state: dict[str, Tensor]) -> dict[str, float]:
        confusion = state["confusion"].double()
        total = confusion.sum()
        if total == 0:
            raise self.no_data_error()
        tp = confusion.diagonal()
        union = confusion.sum(0) + confusion.sum(1) - tp
        keep = union > 0 if self.task.miou == "present" else tp > 0
        # "official" with no correctly predicted class: the reference divides 0 by 0; we report 0.
        miou = float((tp[keep] / union[keep]).mean()) if bool(keep.any()) else 0.0
        if self.task.pixel_acc == "pooled":
            pixel_acc = float(tp.sum() / total)
        else:
            pixel_acc = float(state["batch_sum"] / state["batch_samples"].double())
        values = {"miou": 100.0 * miou, "pixel_acc": 100.0 * pixel_acc}
        if "ce" in self.task.metric_directions:
            values["ce"] = self._cross_entropy(state)
        return {m: values[m] for m in self.task.metric_directions}

    def _cross_entropy(self, state: dict[str, Tensor]) -> float:
        if self.task.ce == "pooled":
            if state["ce_weight_sum"] == 0:
                raise self.no_data_error()
            return float(state["ce_sum"] / state["ce_weight_sum"])
        if state["ce_batch_samples"] == 0:
            raise self.no_data_error()
        return float(state["ce_batch_sum"] / state["ce_batch_samples"].double())
