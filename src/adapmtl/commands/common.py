"""Argument helpers shared by several commands."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapmtl.config import Config, load_config
from adapmtl.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from adapmtl.inference.loading import ModelSpec


def add_set_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable), collected in ``args.overrides``."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        required=required,
        help="YAML config file, or a packaged preset by name, e.g. nyuv2/resnet34_adapmtl "
        "(adapmtl config list)",
    )
    add_set_argument(parser, "override a config value, e.g. --set method.target=0.8 (repeatable)")


DEVICE_HELP = "auto (the first CUDA device if there is one, else the CPU), cpu, cuda or cuda:N"
CHECKPOINT_HELP = (
    "a run's checkpoint (.pt), its run directory (best.pt, else last.pt) or a file written by "
    "'adapmtl export' from a checkpoint"
)


def add_weights_arguments(parser: argparse.ArgumentParser, prune_help: str) -> None:
    """The model a weights file belongs to (``export``, ``bench``): the file, ``--model``,
    ``--tasks`` and ``--prune``; the model and tasks default to what the file records."""
    parser.add_argument(
        "weights",
        nargs="?",
        help="weights file: a run's checkpoint (.pt) or run directory, an 'adapmtl export' file, "
        "or a plain state dict (safetensors or .pt)",
    )
    parser.add_argument(
        "--model",
        help="model name, e.g. deeplab_resnet34 (default: the one the weights file records; "
        "needed for a bare state dict or --prune without a file)",
    )
    parser.add_argument(
        "--tasks",
        help="NAME:CHANNELS,... (default: the tasks the weights file records, else "
        "seg:40,normal:3,depth:1)",
    )
    parser.add_argument("--prune", type=float, metavar="SPARSITY", help=prune_help)


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def model_from_weights_arguments(args: argparse.Namespace) -> tuple[nn.Module, ModelSpec]:
    """The model named by :func:`add_weights_arguments`: built as the weights file records it
    (``--model`` / ``--tasks`` override), loaded (random when there is no file) and
    magnitude-pruned to ``--prune`` when given; with the spec it was built from."""
    from adapmtl.inference.loading import (
        DEFAULT_TASKS,
        ModelSpec,
        load_model,
        model_for_file,
        parse_tasks,
    )
    from adapmtl.inference.pruning import magnitude_prune

    tasks = parse_tasks(args.tasks) if args.tasks else None
    if args.weights is not None:
        model, spec = model_for_file(resolve_checkpoint(Path(args.weights)), args.model, tasks)
    elif args.model is None:
        raise UserError("give --model with --prune and no weights file")
    else:
        spec = ModelSpec(args.model, dict(tasks or DEFAULT_TASKS))
        model = load_model(spec.name, None, spec.tasks)
    if args.prune is not None:
        try:
            magnitude_prune(model, args.prune)
        except ValueError as err:
            raise UserError(f"--prune {args.prune}: {err}") from None
    return model, spec


def resolve_checkpoint(path: Path) -> Path:
    """A run directory stands for its ``best.pt``, else its ``last.pt`` (said on stderr)."""
    if not path.is_dir():
        return path
    for name in ("best.pt", "last.pt"):
        if (path / name).is_file():
            why = "" if name == "best.pt" else " (it has no best.pt)"
            print(f"{path}: using {name}{why}", file=sys.stderr)
            return path / name
    raise UserError(f"{path} is a directory without best.pt or last.pt: not a run directory")


@dataclass
class Trained:
    """A trained model read for ``eval`` / ``report``: from a checkpoint or an export."""

    model: nn.Module
    path: Path
    config: Config | None
    """The run config (``None`` for an export of a bare state dict)."""
    tasks: dict[str, Any] | None
    iteration: int | None
    exported: bool


def load_trained(path: Path) -> Trained:
    """The model of a checkpoint, a run directory (:func:`resolve_checkpoint`) or an
    ``adapmtl export`` file, with the run config and tasks the file records."""
    from adapmtl.config import from_dict
    from adapmtl.engine.build import build_tasks

    path = resolve_checkpoint(path)
    if path.suffix == ".safetensors":
        from adapmtl.inference.loading import model_for_file

        model, spec = model_for_file(path)
        config = from_dict(spec.config) if spec.config is not None else None
        tasks = build_tasks(config) if config is not None else None
        return Trained(model, path, config, tasks, spec.iteration, exported=True)
    from adapmtl.engine.checkpoint import load_checkpoint
    from adapmtl.engine.trainer import model_from_checkpoint

    state = load_checkpoint(path)
    model, config, tasks = model_from_checkpoint(state, path)
    return Trained(model, path, config, tasks, state["iteration"], exported=False)
