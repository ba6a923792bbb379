"""Argument helpers shared by several commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from adapmtl.config import Config, load_config


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
