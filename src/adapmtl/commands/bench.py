"""``adapmtl bench``: dense vs sparse-kernel CPU latency, per layer and end to end."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from adapmtl.commands.common import (
    add_weights_arguments,
    model_from_weights_arguments,
    parse_size,
)
from adapmtl.errors import UserError
from adapmtl.inference.optimize import KERNELS

if TYPE_CHECKING:
    import torch
    from torch import nn


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_weights_arguments(
        parser,
        "magnitude-prune every layer to this sparsity first and set BN statistics from a "
        "random batch (for trying out, no training)",
    )
    parser.add_argument("--input-size", default="321x321", help="input HxW")
    parser.add_argument("--batch", type=int, default=1, help="images per forward pass")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=10, help="end-to-end runs per model")
    parser.add_argument("--layer-repeats", type=int, default=5, help="timed runs per layer")
    parser.add_argument(
        "--kernels",
        default=",".join(KERNELS),
        help=f"comma-separated sparse kernels to consider, among: {', '.join(KERNELS)}",
    )
    parser.add_argument(
        "--onnxruntime",
        action="store_true",
        help="also time onnxruntime running the dense model as an ONNX graph (needs the onnx "
        "extra), interleaved with the two others",
    )
    parser.add_argument("--json", help="also write the measurements to this JSON file")


def run(args: argparse.Namespace) -> int:
    import torch

    from adapmtl.inference import compare_end_to_end, numba_available, optimize
    from adapmtl.inference.bench import input_channels
    from adapmtl.inference.pruning import calibrate_batchnorm

    if args.weights is None and args.prune is None:
        raise UserError("give a weights file, or --prune SPARSITY to bench a pruned random model")
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: expected a positive integer")
        torch.set_num_threads(args.threads)
    if args.repeats < 1 or args.layer_repeats < 1 or args.batch < 1:
        raise UserError("--repeats, --layer-repeats and --batch must be positive")
    kernels = tuple(k.strip() for k in args.kernels.split(",") if k.strip())
    height, width = parse_size(args.input_size)
    model, spec = model_from_weights_arguments(args)
    channels = input_channels(model)
    if args.prune is not None:
        calibrate_batchnorm(model, torch.randn(2, channels, height, width))
    if not numba_available():
        print("numba is not installed: only CSR kernels (1x1 convs, Linear) are tried")
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(args.batch, channels, height, width, generator=generator)
    try:
        fast, plan = optimize(model, example, kernels=kernels, repeats=args.layer_repeats)
    except ValueError as err:
        raise UserError(f"--kernels {args.kernels!r}: {err}") from None
    ort_run = _onnxruntime_run(model, example, plan.threads) if args.onnxruntime else None
    result = compare_end_to_end(model, fast, example, repeats=args.repeats, onnxruntime=ort_run)
    print(f"{spec.name}, input {args.batch}x{channels}x{height}x{width}, {plan.threads} threads")
    print(plan)
    print(result)
    if args.json:
        report = {"plan": plan.to_dict(), "end_to_end": result.to_dict(), "args": vars(args)}
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _onnxruntime_run(model: nn.Module, example: torch.Tensor, threads: int) -> Callable[[], object]:
    """A call running ``model``'s ONNX graph in onnxruntime on ``example`` (``threads`` threads),
    checked against PyTorch first."""
    from adapmtl.inference.onnx_export import (
        check_against_torch,
        run_session,
        session,
        to_onnx_program,
    )

    program, _ = to_onnx_program(model, example)
    sess = session(program.model_proto.SerializeToString(), threads=threads)
    check_against_torch(sess, model, example)
    return lambda: run_session(sess, example)
