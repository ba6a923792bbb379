"""Tasks, losses, metrics and the normalised score Delta_T (paper Section 4.1.2)."""

from adapmtl.tasks.base import Metric, Task, resize_nearest
from adapmtl.tasks.classification import ClassificationMetric, ClassificationTask
from adapmtl.tasks.depth import DepthMetric, DepthTask
from adapmtl.tasks.heatmap import HeatmapMetric, HeatmapTask
from adapmtl.tasks.normal import NormalMetric, NormalTask
from adapmtl.tasks.presets import (
    TASK_SETS,
    TASK_TYPES,
    select_tasks,
    task_set,
    tasks_from_spec,
)
from adapmtl.tasks.score import (
    delta_t,
    load_reference,
    metric_directions,
    normalised_score,
    relative_delta,
)
from adapmtl.tasks.segmentation import SegmentationMetric, SegmentationTask

__all__ = [
    "TASK_SETS",
    "TASK_TYPES",
    "ClassificationMetric",
    "ClassificationTask",
    "DepthMetric",
    "DepthTask",
    "HeatmapMetric",
    "HeatmapTask",
    "Metric",
    "NormalMetric",
    "NormalTask",
    "SegmentationMetric",
    "SegmentationTask",
    "Task",
    "delta_t",
    "load_reference",
    "metric_directions",
    "normalised_score",
    "relative_delta",
    "resize_nearest",
    "select_tasks",
    "task_set",
    "tasks_from_spec",
]
