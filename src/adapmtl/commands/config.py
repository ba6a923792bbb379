"""``adapmtl config show``: print the resolved config (defaults, file, overrides);
``adapmtl config list``: the packaged preset configs, by name."""

from __future__ import annotations

import argparse

from adapmtl.commands.common import add_config_arguments, config_from_args
from adapmtl.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=["show", "list"],
        help="show: the resolved config; list: the packaged presets (names for --config)",
    )
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        if args.config is not None or args.overrides:
            raise UserError("config list takes no --config or --set")
        print(preset_table())
        return 0
    print(config_from_args(args).to_yaml(), end="")
    return 0


def preset_table() -> str:
    """Run configs (for ``train --config NAME``), then suites (``compare --suite NAME``)."""
    from adapmtl.config_presets import presets

    found = presets()
    width = max(len(p.name) for p in found) + 2
    lines = ["run configs (adapmtl train --config NAME):"]
    lines += [f"  {p.name:<{width}}{p.summary}" for p in found if not p.is_suite]
    lines += ["", "suites (adapmtl compare --suite NAME):"]
    lines += [f"  {p.name:<{width}}{p.summary}" for p in found if p.is_suite]
    return "\n".join(lines)
