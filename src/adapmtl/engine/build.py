"""Building the pieces of a run from its config: tasks, model, method, weighting, datasets."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from adapmtl.config import Config
from adapmtl.errors import UserError
from adapmtl.methods import Method, build_method
from adapmtl.weighting import Weighting, build_weighting, param_ratio


def resolve_device(spec: str, setting: str = "train.device") -> torch.device:
    """``auto`` -> the first CUDA device if there is one, else the CPU. ``setting`` (the config
    key or flag ``spec`` came from) names it in errors."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec != "cpu" and spec != "cuda" and not spec.startswith("cuda:"):
        raise UserError(f"{setting}: expected auto, cpu, cuda or cuda:N, got {spec!r}")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{setting}: {spec!r} requested but CUDA is not available here")
    try:
        return torch.device(spec)
    except RuntimeError as err:
        raise UserError(f"{setting}: {spec!r} is not a device ({err})") from None


def build_tasks(config: Config) -> dict[str, Any]:
    from adapmtl.tasks import task_set

    try:
        tasks = task_set(config.tasks.preset, **config.tasks.options)
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


def build_model(config: Config, tasks: dict[str, Any]) -> nn.Module:
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
    return build_method(config.method.name, config.method.target, config.method.options)


def build_run_weighting(config: Config, tasks: dict[str, Any], model: nn.Module) -> Weighting:
    options = dict(config.weighting.options)
    if config.weighting.name == "adaptive":
        use_ratio = options.pop("use_param_ratio", True)
        options["param_ratio"] = param_ratio(model) if use_ratio else None
    try:
        return build_weighting(config.weighting.name, list(tasks), **options)
    except (TypeError, ValueError) as err:
        raise UserError(f"weighting.options: {err}") from None


def build_dataset(config: Config, split: str, tasks: dict[str, Any], train: bool) -> Any:
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
