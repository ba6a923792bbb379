"""Task sets by name (``nyuv2``, ``taskonomy``, ``scenes``, ``fashion_pairs``) and task types for
custom sets.

``task_set(name, tasks=..., options=..., **kwargs)`` returns an ordered ``{task name: Task}`` in
the order of the paper's tables (seg, normal, depth, keypoint, edge). ``tasks`` selects a subset
(the preset order is kept); ``options`` maps a task name to constructor options of that task,
e.g. ``{"seg": {"miou": "official"}, "depth": {"valid_threshold": 3e-5}}``.

``conventions="reference"`` switches every task of the set to the reference implementations'
conventions at once (official mIoU, per-batch averaging, the depth quirk and, for NYUv2, the 3e-5
depth threshold); explicit ``options`` still win.

Taskonomy's ``metric_set`` picks what its tasks report (and so what Delta_T scores): ``"paper"``
(the default), the supplement's Taskonomy tables: segmentation cross-entropy, normal cosine
similarity, depth absolute error, keypoint and edge error; ``"full"``: mIoU and pixel accuracy,
the five angle metrics, abs / rel / delta depth metrics, keypoint and edge error (the NYUv2
metrics, as DiSparse reports Taskonomy).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from adapmtl.registry import Registry, closest
from adapmtl.tasks.base import Task
from adapmtl.tasks.classification import ClassificationTask
from adapmtl.tasks.depth import DepthTask
from adapmtl.tasks.heatmap import HeatmapTask
from adapmtl.tasks.normal import NormalTask
from adapmtl.tasks.segmentation import SegmentationTask

TaskSet = dict[str, Task]
Options = Mapping[str, Mapping[str, Any]]

TASK_SETS: Registry[TaskSet] = Registry("task set")
TASK_TYPES: Registry[Task] = Registry("task type")
TASK_TYPES.register("segmentation")(SegmentationTask)
TASK_TYPES.register("normal")(NormalTask)
TASK_TYPES.register("depth")(DepthTask)
TASK_TYPES.register("heatmap")(HeatmapTask)
TASK_TYPES.register("classification")(ClassificationTask)

CONVENTIONS = ("standard", "reference")
_REFERENCE_OPTIONS: dict[Callable[..., Task], dict[str, Any]] = {
    SegmentationTask: {"miou": "official", "pixel_acc": "batch", "ce": "batch"},
    DepthTask: {"faithful": True, "average": "batch"},
    HeatmapTask: {"average": "batch"},
}


def _build(
    set_name: str,
    task_name: str,
    factory: Callable[..., Task],
    defaults: Mapping[str, Any],
    conventions: str,
    options: Options,
) -> Task:
    kwargs = dict(defaults)
    if conventions == "reference":
        kwargs.update(_REFERENCE_OPTIONS.get(factory, {}))
    kwargs.update(options.get(task_name, {}))
    valid = sorted(p for p in inspect.signature(factory).parameters if p != "name")
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"task set {set_name!r}: unknown option {unknown[0]!r}{closest(unknown[0], valid)} "
            f"for task {task_name!r}; valid: {', '.join(valid)}"
        )
    return factory(name=task_name, **kwargs)


def _dense_set(
    set_name: str,
    specs: Sequence[tuple[str, Callable[..., Task], Mapping[str, Any]]],
    conventions: str,
    options: Options | None,
) -> TaskSet:
    if conventions not in CONVENTIONS:
        raise ValueError(
            f"task set {set_name!r}: conventions must be one of {list(CONVENTIONS)}, "
            f"got {conventions!r}"
        )
    options = options or {}
    names = [name for name, _, _ in specs]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(
            f"task set {set_name!r}: options for unknown task(s) {unknown}; tasks: {names}"
        )
    return {
        name: _build(set_name, name, factory, defaults, conventions, options)
        for name, factory, defaults in specs
    }


@TASK_SETS.register("nyuv2")
def nyuv2(
    seg_classes: int = 40, conventions: str = "standard", options: Options | None = None
) -> TaskSet:
    """NYUv2: segmentation (40 classes, as the paper's tables; or 13), surface normals, depth."""
    if seg_classes not in (13, 40):
        raise ValueError(f"task set 'nyuv2': seg_classes must be 13 or 40, got {seg_classes!r}")
    depth = {"valid_threshold": 3e-5} if conventions == "reference" else {}
    specs = [
        ("seg", SegmentationTask, {"num_classes": seg_classes}),
        ("normal", NormalTask, {}),
        ("depth", DepthTask, depth),
    ]
    return _dense_set("nyuv2", specs, conventions, options)


TASKONOMY_METRIC_SETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "seg": {"metrics": ["ce"]},
        "normal": {"metrics": ["cosine"]},
        "depth": {"metrics": ["abs_err"]},
    },
    "full": {"seg": {}, "normal": {}, "depth": {}},
}


@TASK_SETS.register("taskonomy")
def taskonomy(
    conventions: str = "standard", options: Options | None = None, metric_set: str = "paper"
) -> TaskSet:
    """Tiny-Taskonomy's five tasks: segmentation (17 classes), normals, depth, keypoints, edges.

    ``metric_set``: ``"paper"`` (segmentation cross-entropy, normal cosine similarity, depth
    absolute error, keypoint and edge error: the supplement's Taskonomy tables) or ``"full"``
    (the NYUv2-style metrics; see the module docstring). Class weights for the segmentation loss
    and its cross-entropy metric (the prior factor file) go in
    ``options={"seg": {"class_weights": ...}}``.
    """
    if metric_set not in TASKONOMY_METRIC_SETS:
        raise ValueError(
            f"task set 'taskonomy': metric_set must be one of {list(TASKONOMY_METRIC_SETS)}, "
            f"got {metric_set!r}"
        )
    chosen = TASKONOMY_METRIC_SETS[metric_set]
    specs = [
        ("seg", SegmentationTask, {"num_classes": 17, **chosen["seg"]}),
        ("normal", NormalTask, chosen["normal"]),
        ("depth", DepthTask, chosen["depth"]),
        ("keypoint", HeatmapTask, {}),
        ("edge", HeatmapTask, {}),
    ]
    return _dense_set("taskonomy", specs, conventions, options)


@TASK_SETS.register("scenes")
def scenes(
    seg_classes: int = 8, conventions: str = "standard", options: Options | None = None
) -> TaskSet:
    """The synthetic scenes: segmentation (8 classes by default), normals, depth, and keypoint
    heatmaps / edge maps with values in [0, 1]."""
    specs = [
        ("seg", SegmentationTask, {"num_classes": seg_classes}),
        ("normal", NormalTask, {}),
        ("depth", DepthTask, {}),
        ("keypoint", HeatmapTask, {}),
        ("edge", HeatmapTask, {}),
    ]
    return _dense_set("scenes", specs, conventions, options)


@TASK_SETS.register("fashion_pairs")
def fashion_pairs(conventions: str = "standard", options: Options | None = None) -> TaskSet:
    """Fashion-MNIST pairs: the 10-class labels of the ``left`` and the ``right`` item."""
    specs = [
        ("left", ClassificationTask, {"num_classes": 10}),
        ("right", ClassificationTask, {"num_classes": 10}),
    ]
    return _dense_set("fashion_pairs", specs, conventions, options)


def select_tasks(
    tasks: TaskSet, names: Sequence[str] | None, set_name: str = "task set"
) -> TaskSet:
    """The subset ``names`` of ``tasks`` (all when ``None``), in the order of ``tasks``."""
    if names is None:
        return tasks
    if isinstance(names, str) or not names:
        raise ValueError(
            f"{set_name!r}: tasks must be a non-empty list of task names, got {names!r}"
        )
    unknown = sorted(set(names) - set(tasks))
    if unknown:
        raise ValueError(f"{set_name!r}: unknown task(s) {unknown}; available: {list(tasks)}")
    return {name: task for name, task in tasks.items() if name in names}


def task_set(name: str, tasks: Sequence[str] | None = None, **kwargs: Any) -> TaskSet:
    """Build the preset task set ``name`` (``TASK_SETS.names()``), optionally a subset ``tasks``.

    ``kwargs`` go to the preset (``seg_classes``, ``conventions``, ``options``).
    """
    return select_tasks(TASK_SETS.build(name, **kwargs), tasks, name)


def tasks_from_spec(spec: Mapping[str, Mapping[str, Any]]) -> TaskSet:
    """A custom task set from ``{task name: {"type": <TASK_TYPES name>, **options}}``.

    Example (MultiMNIST): ``{"left": {"type": "classification", "num_classes": 10},
    "right": {"type": "classification", "num_classes": 10}}``.
    """
    if not spec:
        raise ValueError("task spec: expected at least one task")
    result: TaskSet = {}
    for name, entry in spec.items():
        entry = dict(entry)
        kind = entry.pop("type", None)
        if kind is None:
            raise ValueError(f"task spec {name!r}: missing 'type' (one of {TASK_TYPES.names()})")
        factory = TASK_TYPES.get(kind)
        result[name] = _build("custom", name, factory, entry, "standard", {})
    return result
