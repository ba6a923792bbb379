"""The normalised score Delta_T against a dense reference (paper Section 4.1.2, Eq. 7).

For metric j of task t: delta_j = (-1)^{l_j} (M_j - M_dense,j) / M_dense,j * 100, with l_j = 1
when lower is better. Two forms of the per-task score:

* ``reduce="sum"`` (default): Delta_T_t = sum_j delta_j. This is what the paper's tables compute;
  it reproduces every row of Tables 1 and 2 (tests/test_score_paper_tables.py).
* ``reduce="mean"``: Delta_T_t = mean_j delta_j, Eq. 7 as printed.

Overall Delta_T = mean over tasks of Delta_T_t in both forms. With one metric per task (the
Taskonomy tables) the two forms coincide.

Which pairs are scored: exactly the (task, metric) pairs of the dense reference. Each must be
present in ``results`` and ``directions`` (else ``ValueError``); entries of ``results`` that the
reference does not list (extra metrics, extra tasks) are ignored. The reference therefore decides
what is compared, e.g. a Taskonomy reference with depth ``abs_err`` only.

Dense references come from files (:func:`load_reference`); none is built into the library.
:func:`normalised_score` is Delta_T of a task set's metrics as the trainer, ``eval``, suites and
the sensitivity sweep report it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adapmtl.errors import UserError
from adapmtl.structured import read_if_valid, read_structured
from adapmtl.tasks.base import Task

REDUCTIONS = ("sum", "mean")
Results = Mapping[str, Mapping[str, float]]


def relative_delta(value: float, dense: float, higher_is_better: bool) -> float:
    """delta_j of Eq. 7, in percent: positive when ``value`` is better than ``dense``."""
    sign = 1.0 if higher_is_better else -1.0
    return sign * (value - dense) / dense * 100.0


def delta_t(
    results: Results,
    dense: Results,
    directions: Mapping[str, Mapping[str, bool]],
    reduce: str = "sum",
) -> tuple[dict[str, float], float]:
    """Per-task Delta_T_t and overall Delta_T of ``results`` against ``dense``.

    ``results`` and ``dense`` map task -> metric -> value; ``directions`` maps task -> metric ->
    True when higher is better (``metric_directions(tasks)``). See the module docstring for the
    two ``reduce`` forms and which pairs are scored.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"delta_t: reduce must be one of {list(REDUCTIONS)}, got {reduce!r}")
    if not dense or not all(dense.values()):
        raise ValueError("delta_t: the dense reference must list at least one metric per task")
    per_task: dict[str, float] = {}
    for task, reference in dense.items():
        deltas = []
        for metric, dense_value in reference.items():
            where = f"{task}/{metric}"
            if metric not in results.get(task, {}):
                raise ValueError(f"delta_t: results lack {where}, which the dense reference lists")
            if metric not in directions.get(task, {}):
                raise ValueError(f"delta_t: no direction (higher/lower is better) for {where}")
            value = float(results[task][metric])
            if not math.isfinite(value):
                raise ValueError(f"delta_t: result {where} is not finite: {value}")
            if dense_value == 0 or not math.isfinite(dense_value):
                raise ValueError(
                    f"delta_t: dense {where} must be finite and non-zero, got {dense_value}"
                )
            deltas.append(relative_delta(value, float(dense_value), bool(directions[task][metric])))
        per_task[task] = sum(deltas) if reduce == "sum" else sum(deltas) / len(deltas)
    overall = sum(per_task.values()) / len(per_task)
    return per_task, overall


def metric_directions(tasks: Mapping[str, Task]) -> dict[str, dict[str, bool]]:
    """``directions`` for :func:`delta_t` from a task set."""
    return {name: dict(task.metric_directions) for name, task in tasks.items()}


def normalised_score(
    metrics: Results,
    reference: Results,
    tasks: Mapping[str, Task],
    reduce: str = "sum",
) -> dict[str, Any]:
    """:func:`delta_t` of a task set's metrics against the dense reference, as results files
    hold it: ``{"per_task": ..., "overall": ..., "reduce": ...}``; problems are ``UserError`` s
    (a task the reference lacks, a metric the results lack)."""
    missing = [name for name in tasks if name not in reference]
    if missing:
        raise UserError(f"the dense reference has no metrics for task {missing[0]!r}")
    try:
        per_task, overall = delta_t(metrics, reference, metric_directions(tasks), reduce=reduce)
    except ValueError as err:
        raise UserError(f"Delta_T against the dense reference: {err}") from None
    return {"per_task": per_task, "overall": overall, "reduce": reduce}


def load_reference(
    path: str | Path, setting: str | None = None, tasks: Mapping[str, Any] | None = None
) -> dict[str, dict[str, float]]:
    """Read a dense reference (or any results) file: JSON or YAML mapping task -> metric ->
    number, or such a mapping under ``metrics`` (a dense run's ``results.json``, the output of
    ``adapmtl eval --json``). ``setting`` names the config key or flag the path came from, for
    the hint when the file is missing; with ``tasks`` the reference must be of that task set
    (:func:`check_reference_tasks`).

    Raises ``UserError`` naming the file and key when the content does not have that form.
    """
    path = Path(path)
    data = read_structured(
        path, "reference file", missing=missing_reference(path, setting), mapping=False
    )
    return reference_from_mapping(data, path, tasks)


def reference_from_mapping(
    data: Any, source: str | Path, tasks: Mapping[str, Any] | None = None
) -> dict[str, dict[str, float]]:
    """The metrics of a dense reference already read (:func:`load_reference`'s content, or an
    ``evaluate()`` result): task -> metric -> number, or that under ``metrics``. ``source``
    names it in errors; with ``tasks`` it must be of that task set."""
    if isinstance(data, Mapping) and isinstance(data.get("metrics"), Mapping):
        data = data["metrics"]
    if not isinstance(data, Mapping) or not data:
        raise UserError(
            f"{source}: expected a mapping task -> metric -> number, got {type(data).__name__}"
        )
    reference: dict[str, dict[str, float]] = {}
    for task, metrics in data.items():
        if not isinstance(metrics, Mapping) or not metrics:
            raise UserError(
                f"{source}: key {task!r}: expected a non-empty mapping metric -> number"
            )
        for metric, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f"{source}: key {task}.{metric}: expected a number, got {value!r}")
        reference[str(task)] = {str(m): float(v) for m, v in metrics.items()}
    if tasks is not None:
        check_reference_tasks(reference, tasks, source)
    return reference


def check_reference_tasks(
    reference: Mapping[str, Mapping[str, float]], tasks: Mapping[str, Any], path: str | Path
) -> None:
    """Refuse a reference of another task set, or one listing metrics the run does not compute
    (another dataset's dense run, or one scored with another metric set), before any training."""
    if set(reference) != set(tasks):
        raise UserError(
            f"reference file {path} holds the tasks {sorted(reference)}, this run has "
            f"{sorted(tasks)}: Delta_T needs the dense run of the same dataset and tasks"
        )
    for name, task in tasks.items():
        unknown = [m for m in reference[name] if m not in task.metric_directions]
        if unknown:
            raise UserError(
                f"reference file {path}: task {name!r} lists {unknown}, which this run does not "
                f"compute (it reports {list(task.metric_directions)}); was the reference scored "
                "with another metric set (tasks.options)?"
            )


def missing_reference(path: Path, setting: str | None) -> str:
    """What is missing, where it was looked for, and how to point at the right file."""
    where = f" (relative to the working directory {Path.cwd()})" if not path.is_absolute() else ""
    message = f"reference file {path} does not exist{where}"
    if setting is None:
        return f"{message}: cannot read the dense reference"
    if setting.startswith("--"):
        how = f"give {setting} PATH"
    else:
        how = f"set --set {setting}=PATH, or --set {setting}=null to do without Delta_T"
    return (
        f"{message}; {setting} names the dense run's results.json: train the dense run first, "
        f"or {how}"
    )


def reference_split(path: str | Path) -> str | None:
    """The split a reference's metrics were measured on, where it is recorded: the ``split`` of
    an ``adapmtl eval --json`` output, else the validation split of the run directory holding the
    file (its ``config.yaml``); ``None`` when neither says."""
    path = Path(path)
    data = read_if_valid(path)
    if isinstance(data, dict) and isinstance(data.get("split"), str):
        return data["split"]
    if data is None:
        return None
    settings = read_if_valid(path.parent / "config.yaml")
    if settings is None:
        return None
    data_settings = settings.get("data") if isinstance(settings, dict) else None
    split = data_settings.get("val_split", "val") if isinstance(data_settings, dict) else "val"
    return split if isinstance(split, str) else None
