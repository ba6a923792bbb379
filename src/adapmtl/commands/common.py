"""Argument helpers shared by several commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from adapmtl.config import Config, load_config
from adapmtl.errors import UserError

if TYPE_CHECKING:
    from torch import nn


def add_set_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable), collected in ``args.overrides``."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument("--config", type=Path, required=required, help="YAML config file")
    add_set_argument(parser, "override a config value, e.g. --set method.target=0.8 (repeatable)")


def add_weights_arguments(parser: argparse.ArgumentParser, prune_help: str) -> None:
    """The model a weights file belongs to (``export``, ``bench``): the file, ``--model``,
    ``--tasks`` and ``--prune``."""
    parser.add_argument(
        "weights",
        nargs="?",
        help="weights file: safetensors (plain or exported) or a PyTorch state dict (.pt)",
    )
    parser.add_argument("--model", required=True, help="model name, e.g. deeplab_resnet34")
    parser.add_argument("--tasks", default="seg:40,normal:3,depth:1", help="NAME:CHANNELS,...")
    parser.add_argument("--prune", type=float, metavar="SPARSITY", help=prune_help)


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def model_from_weights_arguments(args: argparse.Namespace) -> nn.Module:
    """The model named by :func:`add_weights_arguments`: built, loaded from the weights file
    (random when there is none) and magnitude-pruned to ``--prune`` when given."""
    from adapmtl.inference.loading import load_model, parse_tasks
    from adapmtl.inference.pruning import magnitude_prune

    model = load_model(args.model, args.weights, parse_tasks(args.tasks))
    if args.prune is not None:
        try:
            magnitude_prune(model, args.prune)
        except ValueError as err:
            raise UserError(f"--prune {args.prune}: {err}") from None
    return model
