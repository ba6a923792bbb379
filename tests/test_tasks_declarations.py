"""What each task declares: which way every metric improves (Delta_T's signs depend on it, paper
Eq. 7: errors and angles are lower-is-better, accuracies and IoU higher-is-better) and the class
count segmentation accepts next to its ignore label 255."""

from __future__ import annotations

import pytest

from adapmtl.tasks import (
    ClassificationTask,
    DepthTask,
    HeatmapTask,
    NormalTask,
    SegmentationTask,
)

HIGHER_IS_BETTER = {
    SegmentationTask(3): {"miou": True, "pixel_acc": True},
    DepthTask(): {
        "abs_err": False,
        "rel_err": False,
        "delta1": True,
        "delta2": True,
        "delta3": True,
    },
    NormalTask(): {
        "angle_mean": False,
        "angle_median": False,
        "within_11.25": True,
        "within_22.5": True,
        "within_30": True,
    },
    HeatmapTask("edge"): {"mae": False},
    ClassificationTask("class", 4): {"accuracy": True},
}


@pytest.mark.parametrize("task", list(HIGHER_IS_BETTER), ids=lambda t: type(t).__name__)
def test_metric_directions(task):
    assert task.metric_directions == HIGHER_IS_BETTER[task]


def test_segmentation_class_count_stops_below_the_ignore_label():
    assert SegmentationTask(1).num_classes == 1
    assert SegmentationTask(254).num_classes == 254
    for bad in (0, 255):
        with pytest.raises(ValueError, match="num_classes"):
            SegmentationTask(bad)
