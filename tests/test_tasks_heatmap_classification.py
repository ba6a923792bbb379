"""Keypoint/edge maps (L1 or BCE, MAE) and image-level classification (CE, accuracy)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adapmtl.tasks import ClassificationTask, HeatmapTask


def test_heatmap_mae_ignores_255():
    pred = torch.tensor([[[[0.5, 0.0, 1.0]]]])
    target = torch.tensor([[[[1.0, 255.0, 0.25]]]])
    metric = HeatmapTask("edge").new_metric()
    metric.update(pred, target)
    assert metric.compute()["mae"] == pytest.approx((0.5 + 0.75) / 2)
    assert HeatmapTask("edge").loss(pred, target).item() == pytest.approx((0.5 + 0.75) / 2)


def test_heatmap_loss_downsamples_target_and_handles_all_invalid():
    pred = torch.tensor([[[[0.0, 1.0]]]], requires_grad=True)
    target = torch.tensor([[[[0.5, 9.0, 255.0, 9.0]]]])  # nearest picks columns 0 and 2
    task = HeatmapTask("keypoint")
    assert task.loss(pred, target).item() == pytest.approx(0.5)
    loss = task.loss(pred, torch.full((1, 1, 1, 4), 255.0))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()


def test_heatmap_batch_average():
    metric = HeatmapTask("keypoint", average="batch").new_metric()
    metric.update(torch.zeros(1, 1, 1, 2), torch.tensor([[[[1.0, 3.0]]]]))  # mean 2, B=1
    metric.update(torch.zeros(2, 1, 1, 1), torch.tensor([[[[5.0]]], [[[255.0]]]]))  # mean 5, B=2
    assert metric.compute()["mae"] == pytest.approx((2 * 1 + 5 * 2) / 3)


def test_heatmap_bce_loss_and_mae_of_the_sigmoid_by_hand():
    logits = torch.tensor([[[[0.0, 2.0, -1.0, 5.0]]]])
    target = torch.tensor([[[[1.0, 0.25, 0.0, 255.0]]]])
    task = HeatmapTask("edge", loss="bce")

    def bce(x: float, y: float) -> float:
        p = 1 / (1 + np.exp(-x))
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))

    expected = (bce(0.0, 1.0) + bce(2.0, 0.25) + bce(-1.0, 0.0)) / 3  # the 255 pixel is ignored
    assert task.loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    metric = task.new_metric()
    metric.update(logits, target)
    sigmoid = 1 / (1 + np.exp(-np.array([0.0, 2.0, -1.0])))
    mae = np.abs(sigmoid - np.array([1.0, 0.25, 0.0])).mean()
    assert metric.compute()["mae"] == pytest.approx(mae, rel=1e-6)


def test_heatmap_bce_refuses_targets_outside_0_1_and_unknown_losses():
    with pytest.raises(ValueError, match=r"'keypoint': loss 'bce' needs targets in \[0, 1\]"):
        HeatmapTask("keypoint", loss="bce").loss(
            torch.zeros(1, 1, 1, 2), torch.tensor([[[[-1.0, 1.0]]]])
        )
    with pytest.raises(ValueError, match=r"loss must be one of \['l1', 'bce'\], got 'l2'"):
        HeatmapTask("edge", loss="l2")


def test_scenes_task_set_takes_a_loss_per_heatmap_task():
    from adapmtl.tasks import task_set

    tasks = task_set("scenes", options={"edge": {"loss": "bce"}})
    assert tasks["edge"].loss_kind == "bce" and tasks["keypoint"].loss_kind == "l1"


def test_classification_accuracy_and_loss_against_numpy():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5], [0.3, 0.2, 0.1], [0.0, 0.0, 3.0]])
    labels = torch.tensor([0, 2, 0, 1])
    task = ClassificationTask("left", num_classes=3)
    metric = task.new_metric()
    metric.update(logits, labels)
    assert metric.compute()["accuracy"] == pytest.approx(50.0)
    z = logits.double().numpy()
    log_softmax = z - np.log(np.exp(z).sum(1, keepdims=True))
    expected = -log_softmax[np.arange(4), labels.numpy()].mean()
    assert task.loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_classification_bad_input():
    task = ClassificationTask("left", num_classes=3)
    with pytest.raises(ValueError, match=r"'left'.*\[B, 3\]"):
        task.loss(torch.zeros(2, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"'left'.*\[0, 2\]"):
        task.loss(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"'left'.*batch size"):
        task.loss(torch.zeros(2, 3), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"'left'.*NaN"):
        task.loss(torch.tensor([[0.0, float("nan"), 0.0]]), torch.tensor([0]))
    for labels in (torch.tensor([0.0, 1.0]), torch.tensor([True, False])):
        with pytest.raises(ValueError, match=r"'left'.*target must be integer labels \[B\]"):
            task.loss(torch.zeros(2, 3), labels)


def test_bce_heatmap_target_problem_flags_values_outside_0_1_but_not_ignored_pixels():
    task = HeatmapTask("edge", loss="bce")
    target = torch.tensor([[[[0.0, 1.0], [0.5, 255.0]]], [[[0.25, 0.75], [1.0, 0.0]]]])
    assert not bool(task.target_problem(target))
    target[1, 0, 1, 1] = 1.5
    assert bool(task.target_problem(target))
    target[1, 0, 1, 1] = -0.5
    assert bool(task.target_problem(target))


def test_classification_loss_with_class_weights_in_double_precision():
    gen = torch.Generator().manual_seed(3)
    weights = [0.1, 0.7, 0.3]
    task = ClassificationTask("cls", 3, class_weights=weights)
    pred = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 1, 0, 2, 1])
    # the weights are stored in float32; the loss takes them to the prediction's precision
    reference = F.cross_entropy(pred, target, weight=task.class_weights.double())
    loss = task.loss(pred, target)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(reference.item(), rel=1e-14)


def test_classification_accuracy_of_a_single_sample():
    task = ClassificationTask("cls", 3)
    metric = task.new_metric()
    metric.update(torch.tensor([[0.1, 2.0, 0.3]]), torch.tensor([1]))
    assert metric.compute() == {"accuracy": 100.0}
    metric.update(torch.tensor([[3.0, 2.0, 0.3]]), torch.tensor([1]))
    assert metric.compute() == {"accuracy": 50.0}


def test_heatmap_loss_reads_no_values_when_the_caller_vouches_for_them():
    task = HeatmapTask("edge")
    pred = torch.full((1, 1, 2, 2), float("nan"))
    target = torch.ones(1, 1, 2, 2)
    with pytest.raises(ValueError, match="NaN or Inf"):
        task.loss(pred, target)
    assert torch.isnan(task.loss(pred, target, check_values=False))


def test_heatmap_pooled_average_weighs_every_valid_pixel_once():
    metric = HeatmapTask("keypoint").new_metric()  # pooled, the default
    metric.update(torch.zeros(1, 1, 1, 2), torch.tensor([[[[1.0, 3.0]]]]))
    metric.update(torch.zeros(2, 1, 1, 1), torch.tensor([[[[5.0]]], [[[255.0]]]]))
    assert metric.compute()["mae"] == pytest.approx((1 + 3 + 5) / 3)


def test_classification_class_weights_may_be_zero_but_not_negative():
    ClassificationTask("cls", 3, class_weights=[0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"'cls'.*class_weights must be 3 finite non-negative"):
        ClassificationTask("cls", 3, class_weights=[-0.1, 1.0, 2.0])
