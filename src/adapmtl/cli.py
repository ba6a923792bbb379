"""Command-line entry point: ``adapmtl <command> ...``.

Argument parsing only; each command lives in ``adapmtl.commands.<name>`` with
``add_arguments(parser)`` and ``run(args) -> int``, imported only when that command runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from adapmtl import __version__
from adapmtl.errors import UserError
from adapmtl.usercode import import_modules

COMMANDS: dict[str, str] = {
    "train": "Train a run from a YAML config",
    "eval": "Evaluate a checkpoint: the paper's metrics and Delta_T",
    "report": "Per-component sparsity and thresholds of a checkpoint",
    "config": "Show the resolved config, or list the packaged presets",
    "demo": "Train dense and AdapMTL models on synthetic scenes and compare them",
    "plot": "Draw runs' curves: sparsity, thresholds, task weights, losses, metrics",
    "compare": "Train a suite of methods side by side and write the paper-style table and plots",
    "sensitivity": "Magnitude-prune one component of a checkpoint over a sweep, evaluate all tasks",
    "data": "Write synthetic scenes to disk in the NYUv2 / Taskonomy layouts",
    "export": "Write a model for deployment (dense or bitmask safetensors, or ONNX)",
    "bench": "Time dense vs sparse-kernel CPU inference, per layer and end to end",
}


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the option has none (``None``,
    ``False``, empty) or the help text already speaks of it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default == [] or default is argparse.SUPPRESS
        if unset or "default" in text or not action.option_strings:
            return action.help
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def _command_module(name: str):
    return importlib.import_module(f"adapmtl.commands.{name}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adapmtl",
        description="Adaptive pruning for multitask models (AdapMTL).",
    )
    parser.add_argument("--version", action="version", version=f"adapmtl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub_parser = sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        if name == command:
            _command_module(name).add_arguments(sub_parser)
        add_import_argument(sub_parser)
    return parser


def add_import_argument(parser: argparse.ArgumentParser) -> None:
    """``--import MODULE`` (repeatable, every command): user code registering its own models,
    datasets, task sets, methods or weightings, imported before the command runs."""
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module first: your code that registers its own models, datasets, "
        "task sets, methods or weightings (repeatable; 'train' records it in the run's config)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        import_modules(args.imports, "--import")
        return int(_command_module(args.command).run(args) or 0)
    except (UserError, FileNotFoundError) as err:
        print(f"adapmtl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adapmtl {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of stdout stopped early (`adapmtl report --layers | head`): not an error of
        # the command; point stdout at /dev/null so the interpreter's final flush stays quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe
