"""``adapmtl export``: write a model's weights for deployment, as dense or bitmask safetensors."""

from __future__ import annotations

import argparse
from pathlib import Path

from adapmtl.commands.common import add_weights_arguments, model_from_weights_arguments
from adapmtl.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_weights_arguments(
        parser, "magnitude-prune every layer to this sparsity first (for trying out, no training)"
    )
    parser.add_argument(
        "--format",
        choices=("dense", "sparse"),
        default="sparse",
        help="sparse: nonzero values and a bitmask for every tensor that shrinks that way; "
        "dense: every tensor in full, pruned weights as exact zeros",
    )
    parser.add_argument("-o", "--output", required=True, help="output .safetensors file")


def run(args: argparse.Namespace) -> int:
    from adapmtl.sparsity.export import export_model

    if args.weights is None and args.prune is None:
        raise UserError("give a weights file, or --prune SPARSITY to export a pruned random model")
    if not args.output.endswith(".safetensors"):
        raise UserError(f"--output {args.output!r}: expected a .safetensors file name")
    model, spec = model_from_weights_arguments(args)
    path = export_model(model, args.output, format=args.format, metadata=spec.metadata())
    print(f"wrote {path} ({args.format}, {Path(path).stat().st_size / 2**20:.2f} MiB)")
    return 0
