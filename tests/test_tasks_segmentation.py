"""Segmentation loss and metrics against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from adapmtl.tasks import SegmentationTask


def one_hot_logits(labels: list[list[list[int]]], classes: int) -> torch.Tensor:
    """Logits [B, C, H, W] whose argmax is ``labels`` (10 on the label's channel, 0 elsewhere)."""
    idx = torch.tensor(labels)
    return 10.0 * torch.nn.functional.one_hot(idx, classes).permute(0, 3, 1, 2).float()


def test_ignore_label_and_class_absent_everywhere():
    # gt 0 0 / 1 255 ; pred 0 1 / 1 2. The ignored pixel's prediction (class 2) must not count,
    # so class 2 has union 0 and is left out: IoU0 = 1/2, IoU1 = 1/2; accuracy 2 of 3.
    task = SegmentationTask(3)
    metric = task.new_metric()
    metric.update(one_hot_logits([[[0, 1], [1, 2]]], 3), torch.tensor([[[0, 0], [1, 255]]]))
    result = metric.compute()
    assert result["miou"] == pytest.approx(50.0)
    assert result["pixel_acc"] == pytest.approx(200.0 / 3)


def test_class_absent_from_ground_truth_present_vs_official():
    # gt 0 0 ; pred 0 2: IoU0 = 1/2, class 2 predicted but absent from gt -> IoU2 = 0.
    target = torch.tensor([[[0, 0]]])
    pred = one_hot_logits([[[0, 2]]], 3)
    present = SegmentationTask(3).new_metric()
    present.update(pred, target)
    assert present.compute()["miou"] == pytest.approx(25.0)
    official = SegmentationTask(3, miou="official").new_metric()
    official.update(pred, target)
    assert official.compute()["miou"] == pytest.approx(50.0)  # only classes with TP > 0


def test_official_miou_without_any_correct_class_is_zero():
    metric = SegmentationTask(2, miou="official").new_metric()
    metric.update(one_hot_logits([[[1, 0]]], 2), torch.tensor([[[0, 1]]]))
    assert metric.compute()["miou"] == 0.0


def test_pixel_accuracy_pooled_vs_per_batch():
    # Batch 1: one image, 4 valid pixels, all right. Batch 2: two images, 1 valid pixel each
    # (the rest ignored), both wrong. Pooled 4/6; per-batch (1.0 * 1 + 0.0 * 2) / 3.
    gt1, pr1 = [[[0, 1], [1, 0]]], [[[0, 1], [1, 0]]]
    gt2 = [[[0, 255], [255, 255]], [[1, 255], [255, 255]]]
    pr2 = [[[1, 0], [0, 0]], [[0, 0], [0, 0]]]
    results = {}
    for mode in ("pooled", "batch"):
        metric = SegmentationTask(2, pixel_acc=mode).new_metric()
        metric.update(one_hot_logits(pr1, 2), torch.tensor(gt1))
        metric.update(one_hot_logits(pr2, 2), torch.tensor(gt2))
        results[mode] = metric.compute()["pixel_acc"]
    assert results["pooled"] == pytest.approx(400.0 / 6)
    assert results["batch"] == pytest.approx(100.0 / 3)


def test_metric_upsamples_prediction_by_nearest():
    # A 2x2 prediction against a 4x4 target: each predicted pixel covers a 2x2 block.
    pred_labels = torch.tensor([[[0, 1], [2, 0]]])
    target = torch.tensor([[[0, 0, 1, 1], [0, 255, 1, 2], [2, 2, 0, 0], [2, 1, 0, 0]]])
    metric = SegmentationTask(3).new_metric()
    metric.update(one_hot_logits(pred_labels.tolist(), 3), target)
    up = pred_labels.repeat_interleave(2, 1).repeat_interleave(2, 2)
    valid = target != 255
    expected = np.zeros((3, 3), dtype=np.int64)
    for g, p in zip(target[valid].tolist(), up[valid].tolist(), strict=True):
        expected[g, p] += 1
    np.testing.assert_array_equal(metric.state()["confusion"].numpy(), expected)
    tp = np.diag(expected)
    iou = tp / (expected.sum(0) + expected.sum(1) - tp)
    assert metric.compute()["miou"] == pytest.approx(100 * iou.mean())


def numpy_cross_entropy(logits: np.ndarray, labels: np.ndarray, weights=None) -> float:
    """Mean (or weighted mean) CE over labels != 255; logits [B, C, H, W]."""
    z = logits.transpose(0, 2, 3, 1).reshape(-1, logits.shape[1]).astype(np.float64)
    y = labels.reshape(-1)
    keep = y != 255
    z, y = z[keep], y[keep]
    log_softmax = z - z.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    nll = -log_softmax[np.arange(len(y)), y]
    w = np.ones(len(y)) if weights is None else np.asarray(weights)[y]
    return float((w * nll).sum() / w.sum())


def test_loss_matches_numpy_with_ignore_and_weights():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, 3, generator=gen)
    labels = torch.randint(0, 4, (2, 3, 3), generator=gen)
    labels[0, 0, :] = 255
    assert SegmentationTask(4).loss(logits, labels).item() == pytest.approx(
        numpy_cross_entropy(logits.numpy(), labels.numpy()), rel=1e-5
    )
    weights = [0.5, 2.0, 1.0, 0.0]
    assert SegmentationTask(4, class_weights=weights).loss(logits, labels).item() == pytest.approx(
        numpy_cross_entropy(logits.numpy(), labels.numpy(), weights), rel=1e-5
    )


def test_loss_downsamples_target_by_nearest():
    # Prediction 2x2, target 4x4: PyTorch's nearest picks rows/columns 0 and 2.
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 2, 2, generator=gen)
    labels = torch.randint(0, 3, (1, 4, 4), generator=gen)
    expected = numpy_cross_entropy(logits.numpy(), labels[:, ::2, ::2].numpy())
    assert SegmentationTask(3).loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)


def test_loss_without_valid_pixels_is_zero_with_grad():
    logits = torch.randn(2, 3, 2, 2, requires_grad=True)
    loss = SegmentationTask(3).loss(logits, torch.full((2, 4, 4), 255))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.count_nonzero(logits.grad) == 0
    weighted = SegmentationTask(3, class_weights=[0.0, 1.0, 1.0])
    loss = weighted.loss(logits, torch.zeros(2, 2, 2, dtype=torch.int64))  # weight-0 class only
    assert loss.item() == 0.0 and not math.isnan(loss.item())


def test_empty_metric_cannot_compute():
    metric = SegmentationTask(3).new_metric()
    metric.update(torch.randn(1, 3, 2, 2), torch.full((1, 2, 2), 255))
    with pytest.raises(ValueError, match=r"'seg'.*no valid"):
        metric.compute()


def test_batch_pixel_accuracy_is_accumulated_in_double_precision():
    # batches of one image: 1 of 3 pixels right, then 2 of 7; mean (1/3 + 2/7) / 2
    task = SegmentationTask(2, pixel_acc="batch")
    metric = task.new_metric()
    for labels in ([0, 1, 1], [0, 0, 1, 1, 1, 1, 1]):
        target = torch.tensor([[labels]])
        pred = torch.zeros(1, 2, 1, len(labels))
        pred[:, 0] = 1.0  # always class 0
        metric.update(pred, target)
    assert metric.compute()["pixel_acc"] == pytest.approx(100 * (1 / 3 + 2 / 7) / 2, rel=1e-13)


def test_target_problem_flags_labels_outside_the_classes_but_not_the_ignore_label():
    task = SegmentationTask(3)
    assert not bool(task.target_problem(torch.tensor([[[0, 2, 255]]])))
    for bad in (-1, 3):
        assert bool(task.target_problem(torch.tensor([[[0, bad, 255]]])))
