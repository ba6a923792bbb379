"""``adapmtl eval CHECKPOINT``: the paper's metric table and Delta_T on the validation split (or
another split, against a reference measured on that split)."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from adapmtl.commands.common import CHECKPOINT_HELP, DEVICE_HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help=CHECKPOINT_HELP)
    parser.add_argument(
        "--reference",
        type=Path,
        help="dense results for Delta_T: a results.json, or 'adapmtl eval --json' output "
        "(default: the run's eval.reference)",
    )
    parser.add_argument("--split", help="dataset split (default: the run's data.val_split)")
    parser.add_argument(
        "--reduce", choices=["sum", "mean"], help="Delta_T form (default: the run's, sum)"
    )
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from adapmtl.analysis.tables import results_table
    from adapmtl.commands.common import resolve_checkpoint
    from adapmtl.engine.distributed import resolve_device
    from adapmtl.runs import ReferenceSplitWarning, load_run

    run_ = load_run(resolve_checkpoint(args.checkpoint))
    device = resolve_device(args.device, "--device")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReferenceSplitWarning)
        results = run_.evaluate(args.split, args.reference, device=device, reduce=args.reduce)
    for warning in caught:
        if issubclass(warning.category, ReferenceSplitWarning):
            print(f"note: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        assert run_.config is not None and run_.tasks is not None
        label = f"{run_.config.method.name} @ {run_.iteration}"
        print(results_table([(label, results)], list(run_.tasks)))
    return 0
