"""``adapmtl config show``: print the resolved config (defaults, file, overrides)."""

from __future__ import annotations

import argparse

from adapmtl.commands.common import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["show"], help="what to do with the config")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    print(config_from_args(args).to_yaml(), end="")
    return 0
