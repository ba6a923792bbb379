"""Building the pieces of a run from its config: tasks, model, method, weighting, datasets.

Errors are :class:`~adapmtl.errors.UserError` s naming the config key."""

from __future__ import annotations

from typing import Any

from torch import nn

from adapmtl.config import Config
from adapmtl.errors import UserError
from adapmtl.methods import Method, build_method
from adapmtl.weighting import Weighting, build_weighting


def build_run_tasks(config: Config) -> dict[str, Any]:
    """The task set of ``config`` (``tasks.preset`` and its options, ``tasks.names`` selected),
    with the options the data gives its tasks (:func:`with_data_task_options`) where the config sets
    none."""
    from adapmtl.tasks import task_set

    try:
        tasks = task_set(config.tasks.preset, **with_data_task_options(config))
    except KeyError as err:
        raise UserError(f"tasks.preset: {err.args[0]}") from None
    except (TypeError, ValueError) as err:
        raise UserError(f"tasks.options: {err}") from None
    if config.tasks.names is not None:
        unknown = [name for name in config.tasks.names if name not in tasks]
        if unknown:
            raise UserError(
                f"tasks.names: unknown task {unknown[0]!r} for preset "
                f"{config.tasks.preset!r}; valid: {', '.join(tasks)}"
            )
        tasks = {name: tasks[name] for name in config.tasks.names}
    return tasks


def with_data_task_options(config: Config) -> dict[str, Any]:
    """``tasks.options`` with, under its per-task ``options``, what the dataset derives from its
    files for each task (``task_options(root)`` of the dataset class, e.g. Taskonomy's class
    prior for the segmentation loss); an option the config sets wins. Nothing is added when the
    dataset has no such files, its root does not exist (a command that reads no data) or the
    task set takes no per-task options; a task the set does not have gets none."""
    import inspect
    from pathlib import Path

    from adapmtl.data.registry import dataset_class
    from adapmtl.tasks.presets import TASK_SETS

    options = dict(config.tasks.options)
    root = config.data.root
    if root is None or not Path(root).is_dir():
        return options
    try:
        derive = getattr(dataset_class(config.data.name), "task_options", None)
        factory = TASK_SETS.get(config.tasks.preset)
    except KeyError:  # a user's dataset or task set: the config's options as they are
        return options
    if derive is None or "options" not in inspect.signature(factory).parameters:
        return options
    known = set(factory(**options))  # options for a task the set lacks would be refused
    per_task = {task: dict(given) for task, given in (options.get("options") or {}).items()}
    for task, derived in derive(root).items():
        if task in known:
            per_task[task] = {**derived, **per_task.get(task, {})}
    return {**options, "options": per_task}


def build_run_model(config: Config, tasks: dict[str, Any]) -> nn.Module:
    """The model ``model.name`` with a head per task."""
    from adapmtl.models import build_model as build

    try:
        return build(
            config.model.name,
            {name: task.channels for name, task in tasks.items()},
            **config.model.options,
        )
    except KeyError as err:
        raise UserError(f"model.name: {err.args[0]}") from None
    except UserError as err:
        raise UserError(f"model: {err}") from None
    except TypeError as err:
        raise UserError(f"model.options: {err}") from None


def build_run_method(config: Config) -> Method:
    """The method ``method.name`` (its options checked)."""
    return build_method(config.method.name, config.method.target, config.method.options)


def build_run_weighting(config: Config, tasks: dict[str, Any], model: nn.Module) -> Weighting:
    """The weighting ``weighting.name``, taking what it needs from ``model``."""
    try:
        return build_weighting(
            config.weighting.name, list(tasks), model, **config.weighting.options
        )
    except (TypeError, ValueError) as err:
        raise UserError(f"weighting.options: {err}") from None


def build_run_dataset(config: Config, split: str, tasks: dict[str, Any], train: bool) -> Any:
    """Split ``split`` of ``data.name`` with the training or the validation options."""
    from adapmtl.data import build_dataset as build

    options = {
        **config.data.options,
        **(config.data.train_options if train else config.data.val_options),
    }
    if config.data.root is not None:
        options["root"] = config.data.root
    try:
        dataset = build(config.data.name, split=split, tasks=tuple(tasks), **options)
    except KeyError as err:
        raise UserError(f"data.name: {err.args[0]}") from None
    except TypeError as err:
        raise UserError(f"data.options: {err}") from None
    return dataset
