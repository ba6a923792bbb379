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
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import yaml

from adapmtl.errors import UserError
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


def load_reference(path: str | Path) -> dict[str, dict[str, float]]:
    """Read a dense reference (or any results) file: JSON or YAML mapping task -> metric -> number.

    Raises ``UserError`` naming the file and key when the content does not have that form.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise UserError(f"{path}: cannot read the reference file ({err.strerror})") from err
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise UserError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {err}"
        ) from err
    if not isinstance(data, dict) or not data:
        raise UserError(
            f"{path}: expected a mapping task -> metric -> number, got {type(data).__name__}"
        )
    reference: dict[str, dict[str, float]] = {}
    for task, metrics in data.items():
        if not isinstance(metrics, dict) or not metrics:
            raise UserError(f"{path}: key {task!r}: expected a non-empty mapping metric -> number")
        for metric, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f"{path}: key {task}.{metric}: expected a number, got {value!r}")
        reference[str(task)] = {str(m): float(v) for m, v in metrics.items()}
    return reference
