"""The sample structure shared by every dataset (docs/architecture.md, "Samples")."""

from __future__ import annotations

from collections.abc import Iterable

from adapmtl.data.errors import DataError

TASK_NAMES: tuple[str, ...] = ("seg", "depth", "normal", "keypoint", "edge")
IGNORE_LABEL = 255  # seg ignore label; also the invalid marker of keypoint and edge targets


def check_tasks(tasks: Iterable[str], available: Iterable[str], dataset: str) -> tuple[str, ...]:
    """Return ``tasks`` as a tuple after checking each is one the dataset provides."""
    if isinstance(tasks, str):
        tasks = (tasks,)
    tasks = tuple(tasks)
    available = tuple(available)
    unknown = [t for t in tasks if t not in available]
    if unknown or not tasks:
        raise DataError(
            f"{dataset}: tasks must be a non-empty subset of {', '.join(available)}; "
            f"got {', '.join(map(repr, tasks)) or 'none'}"
        )
    if len(set(tasks)) != len(tasks):
        raise DataError(f"{dataset}: repeated task in {tasks}")
    return tasks


def is_size(size: object, minimum: int) -> bool:
    """Whether ``size`` is an ``(H, W)`` pair of integers >= ``minimum``."""
    return (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= minimum for s in size)
    )
