"""Metric state as documented: the segmentation confusion matrix has rows = ground truth and
columns = prediction, and statistics follow the device of the data they are given."""

from __future__ import annotations

import pytest
import torch

from adapmtl.tasks import ClassificationTask, DepthTask, NormalTask, SegmentationTask


def test_confusion_rows_are_ground_truth_and_columns_predictions():
    task = SegmentationTask(num_classes=3)
    # four pixels: truth 0 predicted 1, truth 0 predicted 1, truth 2 predicted 2, one ignored
    logits = torch.zeros(1, 3, 1, 4)
    logits[0, 1, 0, 0] = logits[0, 1, 0, 1] = logits[0, 2, 0, 2] = logits[0, 0, 0, 3] = 1.0
    target = torch.tensor([[[0, 0, 2, 255]]])
    metric = task.new_metric()
    metric.update(logits, target)
    expected = torch.zeros(3, 3, dtype=torch.int64)
    expected[0, 1], expected[2, 2] = 2, 1
    assert torch.equal(metric.state()["confusion"], expected)


def test_statistics_move_to_the_device_of_the_increments():
    # the meta device stands in for an accelerator: increments there move the state there
    metric = NormalTask().new_metric()
    metric.add(within=torch.ones(3, dtype=torch.int64, device="meta"))
    assert metric.state()["within"].device.type == "meta"
    assert metric.state()["count"].device.type == "cpu"  # untouched entries stay


@pytest.mark.parametrize(
    "task",
    [
        SegmentationTask(3, pixel_acc="batch"),
        NormalTask(),
        DepthTask(average="batch"),
        ClassificationTask("cls", 3),
    ],
    ids=lambda t: t.name,
)
def test_counts_are_exact_integers_and_a_loaded_state_keeps_the_metrics_dtypes(task):
    # the state is what processes all-reduce: counts must stay int64 and sums float64, whatever
    # dtype a caller hands to load_state
    metric = task.new_metric()
    own = {k: v.dtype for k, v in metric.state().items()}
    counts = [k for k in own if not k.endswith("sum")]  # counts, histograms, confusion
    assert counts and all(own[k] == torch.int64 for k in counts)
    assert all(own[k] == torch.float64 for k in own if k.endswith("sum"))
    metric.load_state({k: v.float() for k, v in metric.state().items()})
    assert {k: v.dtype for k, v in metric.state().items()} == own
