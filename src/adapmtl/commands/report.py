"""``adapmtl report CHECKPOINT``: per-component sparsity and thresholds of a trained model, or
with ``--cost`` its parameters and MACs, dense and nonzero (paper Table 4)."""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

from adapmtl.commands.common import CHECKPOINT_HELP, parse_size

DEFAULT_COST_SIZE = (321, 321)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help=CHECKPOINT_HELP)
    parser.add_argument("--layers", action="store_true", help="also print every layer")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--cost", action="store_true", help="parameters and MACs, dense and nonzero (Table 4)"
    )
    parser.add_argument(
        "--input-size",
        help="input HxW for --cost (default: the run's evaluation input size, else "
        f"{DEFAULT_COST_SIZE[0]}x{DEFAULT_COST_SIZE[1]})",
    )


def run_input_size(config: Any) -> tuple[int, int] | None:
    """The input size a run evaluates at: its dataset's ``size`` option (validation options
    first), else the dataset's default size; ``None`` when images keep their own size."""
    from adapmtl.data.registry import dataset_class

    options = {**config.data.options, **config.data.val_options}
    if "size" in options:
        size = options["size"]
    else:
        size = inspect.signature(dataset_class(config.data.name)).parameters["size"].default
    if size is None or size is inspect.Parameter.empty:
        return None
    height, width = size
    return int(height), int(width)


def run(args: argparse.Namespace) -> int:
    from adapmtl.commands.common import resolve_checkpoint
    from adapmtl.runs import load_run

    trained = load_run(resolve_checkpoint(args.checkpoint))
    model, config = trained.model, trained.config
    if args.cost:
        from adapmtl.analysis import count_cost

        if args.input_size is not None:
            size = parse_size(args.input_size)
        else:
            size = (run_input_size(config) if config is not None else None) or DEFAULT_COST_SIZE
            print(f"input size {size[0]}x{size[1]}", file=sys.stderr)
        cost = count_cost(model.eval(), size)
        print(cost.to_json() if args.json else cost)
        return 0
    rep = trained.report()
    if args.json:
        print(rep.to_json())
        return 0
    name = config.model.name if config is not None else "model"
    method = f"method {config.method.name}, " if config is not None else ""
    print(f"{trained.checkpoint}: {name}, {method}iteration {trained.iteration}\n")
    print(rep)
    if args.layers:
        print()
        print(rep.layer_table())
    return 0
