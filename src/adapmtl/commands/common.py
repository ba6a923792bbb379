"""Argument helpers shared by several commands."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from adapmtl.config import Config, load_config
from adapmtl.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from adapmtl.loading import ModelSpec


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
    from adapmtl.inference.pruning import magnitude_prune
    from adapmtl.loading import DEFAULT_TASKS, ModelSpec, load_model, model_for_file, parse_tasks

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
    from adapmtl.rundir import run_checkpoint

    found = run_checkpoint(path)
    if found != path:
        why = "" if found.name == "best.pt" else " (it has no best.pt)"
        print(f"{path}: using {found.name}{why}", file=sys.stderr)
    return found


def parse_size(text: str, option: str = "--input-size", minimum: int = 1) -> tuple[int, int]:
    """``"HxW"`` (e.g. ``64x64``, ``288x384``) or ``"N"`` (square) -> ``(H, W)``, each at least
    ``minimum``; ``option`` names the flag in the error."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    if not match or min(int(match[1]), int(match[2] or match[1])) < minimum:
        raise UserError(
            f"{option} must be HxW with integers >= {minimum} (e.g. 64x64), got {text!r}"
        )
    return int(match[1]), int(match[2] or match[1])
