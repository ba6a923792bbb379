"""Evaluation: the paper's metrics accumulated over a whole split, and the normalised score."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from adapmtl.errors import UserError


@torch.no_grad()
def evaluate(
    model: nn.Module,
    tasks: dict[str, Any],
    loader: DataLoader,
    device: torch.device,
    *,
    max_batches: int | None = None,
    reduce_state: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> dict[str, Any]:
    """Metrics per task over the loader (sufficient statistics accumulated, then computed) and the
    mean unweighted loss per task over the batches.

    ``reduce_state`` (DDP: a sum over processes) is applied to every metric's ``state()`` and to
    the loss sums and batch count before anything is computed, so N processes that evaluate
    disjoint batches report what one process evaluating all of them would."""
    was_training = model.training
    model.eval()
    metrics = {name: task.new_metric() for name, task in tasks.items()}
    loss_sums = torch.zeros(len(tasks), dtype=torch.float64, device="cpu")
    batches = 0
    for index, (images, targets) in enumerate(loader):
        if max_batches is not None and index >= max_batches:
            break
        outputs = model(images.to(device))
        for position, (name, task) in enumerate(tasks.items()):
            target = targets[name].to(device)
            loss_sums[position] += float(task.loss(outputs[name], target))
            metrics[name].update(outputs[name], target)
        batches += 1
    model.train(was_training)
    totals = {
        "loss": loss_sums,
        "batches": torch.tensor([batches], dtype=torch.int64, device="cpu"),
    }
    if reduce_state is not None:
        for metric in metrics.values():
            metric.load_state(reduce_state(metric.state()))
        totals = reduce_state(totals)
    batches = int(totals["batches"].item())
    if batches == 0:
        raise UserError("the evaluation split is empty")
    return {
        "metrics": {name: metric.compute() for name, metric in metrics.items()},
        "loss": {
            name: float(total) / batches
            for name, total in zip(tasks, totals["loss"].tolist(), strict=True)
        },
    }


def read_reference(
    path: str | Path, setting: str | None = None, tasks: dict[str, Any] | None = None
) -> dict[str, dict[str, float]]:
    """Dense reference metrics from a JSON file: ``{"metrics": {task: {metric: value}}}`` (a
    ``results.json`` of a dense run) or directly ``{task: {metric: value}}``. ``setting`` names
    the config key or flag the path came from, for the hint when the file is missing; with
    ``tasks`` the reference must be of that task set (:func:`check_reference_tasks`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(missing_reference(path, setting))
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"reference file {path} is not valid JSON: {err}") from None
    metrics = data.get("metrics", data) if isinstance(data, dict) else None
    if not isinstance(metrics, dict) or not all(isinstance(v, dict) for v in metrics.values()):
        raise UserError(f"reference file {path}: expected {{task: {{metric: value}}}}")
    if tasks is not None:
        check_reference_tasks(metrics, tasks, path)
    return metrics


def check_reference_tasks(
    reference: dict[str, dict[str, float]], tasks: dict[str, Any], path: str | Path
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


def reference_split(path: str | Path) -> str | None:
    """The split a reference's metrics were measured on, where it is recorded: the ``split`` of
    an ``adapmtl eval --json`` output, else the validation split of the run directory holding the
    file (its ``config.yaml``); ``None`` when neither says."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if isinstance(data, dict) and isinstance(data.get("split"), str):
        return data["split"]
    run_config = path.parent / "config.yaml"
    if not run_config.is_file():
        return None
    import yaml

    try:
        settings = yaml.safe_load(run_config.read_text())
    except yaml.YAMLError:
        return None
    data_settings = settings.get("data") if isinstance(settings, dict) else None
    split = data_settings.get("val_split", "val") if isinstance(data_settings, dict) else "val"
    return split if isinstance(split, str) else None


def missing_reference(path: Path, setting: str | None) -> str:
    """What is missing, where it was looked for, and how to point at the right file."""
    where = f" (relative to the working directory {Path.cwd()})" if not path.is_absolute() else ""
    message = f"reference file {path} does not exist{where}"
    if setting is None:
        return message
    if setting.startswith("--"):
        how = f"give {setting} PATH"
    else:
        how = f"set --set {setting}=PATH, or --set {setting}=null to do without Delta_T"
    return (
        f"{message}; {setting} names the dense run's results.json: train the dense run first, "
        f"or {how}"
    )


def normalised_score(
    metrics: dict[str, dict[str, float]],
    reference: dict[str, dict[str, float]],
    tasks: dict[str, Any],
    reduce: str = "sum",
) -> dict[str, Any]:
    """Delta_T per task and overall against the dense reference (paper Eq. 7; ``reduce="sum"``
    reproduces the paper's tables)."""
    from adapmtl.tasks.score import delta_t

    missing = [name for name in tasks if name not in reference]
    if missing:
        raise UserError(f"the dense reference has no metrics for task {missing[0]!r}")
    directions = {name: task.metric_directions for name, task in tasks.items()}
    try:
        per_task, overall = delta_t(metrics, reference, directions, reduce=reduce)
    except ValueError as err:
        raise UserError(f"Delta_T against the dense reference: {err}") from None
    return {"per_task": per_task, "overall": overall, "reduce": reduce}
