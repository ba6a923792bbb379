"""``adapmtl report CHECKPOINT``: per-component sparsity and thresholds of a trained model, or
with ``--cost`` its parameters and MACs, dense and nonzero (paper Table 4)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--layers", action="store_true", help="also print every layer")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--cost", action="store_true", help="parameters and MACs, dense and nonzero (Table 4)"
    )
    parser.add_argument(
        "--input-size", default="321x321", help="input HxW for --cost (default 321x321)"
    )


def _size(text: str) -> tuple[int, int]:
    from adapmtl.errors import UserError

    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--input-size: expected HxW such as 321x321, got {text!r}") from None
    if height < 1 or width < 1:
        raise UserError(f"--input-size: expected positive sizes, got {text!r}")
    return height, width


def run(args: argparse.Namespace) -> int:
    from adapmtl.engine.checkpoint import load_checkpoint
    from adapmtl.engine.trainer import model_from_checkpoint
    from adapmtl.errors import UserError
    from adapmtl.sparsity import is_sparsified, report

    state = load_checkpoint(args.checkpoint)
    model, config, _ = model_from_checkpoint(state, args.checkpoint)
    if args.cost:
        from adapmtl.analysis import count_cost

        cost = count_cost(model.eval(), _size(args.input_size))
        print(cost.to_json() if args.json else cost)
        return 0
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
