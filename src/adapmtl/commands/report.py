"""``adapmtl report CHECKPOINT``: per-component sparsity and thresholds of a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--layers", action="store_true", help="also print every layer")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from adapmtl.engine.checkpoint import load_checkpoint
    from adapmtl.engine.trainer import model_from_checkpoint
    from adapmtl.errors import UserError
    from adapmtl.sparsity import is_sparsified, report

    state = load_checkpoint(args.checkpoint)
    model, config, _ = model_from_checkpoint(state, args.checkpoint)
    if not is_sparsified(model):
        raise UserError(f"{args.checkpoint} holds a dense model (method {config.method.name!r})")
    rep = report(model)
    if args.json:
        print(rep.to_json())
        return 0
    print(
        f"{args.checkpoint}: {config.model.name}, method {config.method.name}, "
        f"iteration {state['iteration']}\n"
    )
    print(rep)
    if args.layers:
        print()
        print(rep.layer_table())
    return 0
