"""``adapmtl export``: write a model for deployment, as dense or bitmask safetensors or as ONNX."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from adapmtl.commands.common import add_weights_arguments, model_from_weights_arguments
from adapmtl.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from adapmtl.loading import ModelSpec

SUFFIXES = {"dense": ".safetensors", "sparse": ".safetensors", "onnx": ".onnx"}
DEFAULT_ONNX_SIZE = (321, 321)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_weights_arguments(
        parser, "magnitude-prune every layer to this sparsity first (for trying out, no training)"
    )
    parser.add_argument(
        "--format",
        choices=tuple(SUFFIXES),
        default="sparse",
        help="sparse: nonzero values and a bitmask for every tensor that shrinks that way; "
        "dense: every tensor in full, pruned weights as exact zeros; onnx: an ONNX graph (input "
        "'image', one output per task, dynamic batch) checked in onnxruntime against PyTorch",
    )
    parser.add_argument(
        "--input-size",
        help="input HxW of the ONNX graph (default: the run's evaluation size, else "
        f"{DEFAULT_ONNX_SIZE[0]}x{DEFAULT_ONNX_SIZE[1]})",
    )
    parser.add_argument("-o", "--output", required=True, help="output .safetensors / .onnx file")


def run(args: argparse.Namespace) -> int:
    if args.weights is None and args.prune is None:
        raise UserError("give a weights file, or --prune SPARSITY to export a pruned random model")
    suffix = SUFFIXES[args.format]
    if not args.output.endswith(suffix):
        raise UserError(
            f"--output {args.output!r}: expected a {suffix} file name for {args.format}"
        )
    if args.input_size is not None and args.format != "onnx":
        raise UserError("--input-size is for --format onnx (safetensors files have no input size)")
    model, spec = model_from_weights_arguments(args)
    if args.format == "onnx":
        return _export_onnx(args, model, spec)
    from adapmtl.sparsity.export import export_model

    path = export_model(model, args.output, format=args.format, metadata=spec.metadata())
    print(f"wrote {path} ({args.format}, {Path(path).stat().st_size / 2**20:.2f} MiB)")
    return 0


def _export_onnx(args: argparse.Namespace, model: nn.Module, spec: ModelSpec) -> int:
    import torch

    from adapmtl.commands.common import parse_size
    from adapmtl.inference.bench import input_channels
    from adapmtl.inference.onnx_export import export_onnx

    if args.input_size is not None:
        size = parse_size(args.input_size)
    else:
        size = _run_size(spec) or DEFAULT_ONNX_SIZE
        print(f"input size {size[0]}x{size[1]}", file=sys.stderr)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(1, input_channels(model), *size, generator=generator)
    result = export_onnx(model, args.output, example)
    mib = result.path.stat().st_size / 2**20
    print(
        f"wrote {result.path} (onnx, {mib:.2f} MiB): input {result.inputs[0]} "
        f"[batch, {example.shape[1]}, {size[0]}, {size[1]}], outputs {', '.join(result.outputs)}; "
        f"onnxruntime agrees with PyTorch at batch {result.checked_batch} "
        f"(max relative error {result.max_rel_error:.1e})"
    )
    return 0


def _run_size(spec: ModelSpec) -> tuple[int, int] | None:
    """The evaluation input size of the run a weights file records, if it records one."""
    if spec.config is None:
        return None
    from adapmtl.commands.report import run_input_size
    from adapmtl.config import from_dict

    return run_input_size(from_dict(spec.config))
