"""Roofline probe of the sparse direct convolution: how fast the kernel of a layer runs when its
input comes from L1 or L2 instead of where the real offsets put it.

For each layer in ``--layers`` of the pruned model (as in ``benchmarks/inference_layers.py``:
per-layer magnitude pruning of a randomly initialised preset, BN statistics from one random
batch), on the input that layer sees for one random image, it times in one process, interleaved,
``--repeats`` rounds (median; the order rotated every round, as ``optimize`` does, since a run
right after the dense layer finds the caches cold), at ``--threads`` threads:

* ``dense``: the PyTorch layer;
* ``forward``: the sparse layer ``optimize`` chooses for that input (packing included), and
  ``pack``: its packing of the input alone;
* for every direct-convolution kernel shape in ``KERNELS`` that the layer supports, the numba
  kernel alone on the packed input (packed once), three ways:

  - ``real``: the layer's own geometry (its output is checked against the PyTorch layer);
  - ``L1`` / ``L2``: the same nonzeros per output channel, block and tap, the same values, row
    blocks, tiles and calls, but every offset replaced by ``(packed row mod R) x row width`` and
    every output row reading from the start of the buffer, so that all the input the kernel
    reads lies in ``rows x R`` packed rows: ``--l1-kib`` / ``--l2-kib`` of them (vector loads
    stay aligned). ``L1`` is the micro-kernel's speed with its input in L1: the ceiling of any
    loop order that keeps the input there. These outputs are not a convolution;
  - ``empty``: the same calls with no nonzeros: the fixed cost (filling the output with the
    bias, the loops, loading and storing every call's accumulators); ``ns/call`` divides it by
    the micro-kernel calls.

``--shapes 16x2,8x1`` adds direct-convolution shapes (input-channel block x most rows) that are
not in ``KERNELS``, e.g. blocks small enough to keep one block's input in L1.

Rates: nonzero GMAC/s = nonzero weights x output positions / time (``analysis.count_cost``'s
nonzero MACs, as in ``inference_layers.py``); FMA/ns = 16-float vector FMAs the kernel executes
(its tiles include the padding columns up to a multiple of 16; taps entirely in the padding are
skipped) per nanosecond; dense GMAC/s = all MACs / dense time. ``input KiB`` is the largest input
working set of one (row block, tile, input-channel block): what must stay in cache while every
output channel of the chunk reads it.

    python benchmarks/inference_roofline.py
    python benchmarks/inference_roofline.py --layers heads.seg.branches.0.0 --repeats 15
    python benchmarks/inference_roofline.py --model deeplab_resnet34 --sparsity 0.9 --threads 1 \
        --layers heads.normal.branches.0.0,heads.seg.branches.3.0,backbone.layer4.1.conv1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from adapmtl.inference import optimize
from adapmtl.inference import threads as _threads
from adapmtl.inference.layers import LANES, DirectGeometry, DirectSparseConv2d, _balanced_bounds
from adapmtl.inference.optimize import (
    KERNELS,
    candidate_kernels,
    record_inputs,
    relative_error,
    rotations,
)
from pruned_models import INPUT_SIZES, pruned_model

DEFAULT_LAYERS = (
    "heads.normal.branches.0.0",
    "heads.seg.branches.1.0",
    "heads.seg.branches.3.0",
    "backbone.layer4.1.conv1",
)
MODES = ("real", "L1", "L2", "empty")


def aligned_copy(packed: torch.Tensor) -> np.ndarray:
    """A vector-aligned copy of a packed input (the layers' scratch buffer is shared)."""
    raw = np.empty(packed.numel() + LANES, np.float32)
    skip = (-raw.ctypes.data // 4) % LANES
    out = raw[skip : skip + packed.numel()]
    out[:] = packed.numpy()
    return out


def confined(geo: DirectGeometry, region_rows: int) -> DirectGeometry:
    """``geo`` with every offset moved into the first ``region_rows`` packed rows (of the
    output's width) and every output row reading from the start of the buffer: the same
    nonzeros, values and calls, all reads inside ``rows x region_rows`` packed rows."""
    packed_row = geo.offs.astype(np.int64) // geo.out_stride
    offs = (packed_row % region_rows) * geo.out_stride
    return dataclasses.replace(
        geo, offs=offs.astype(np.int32), row_base=np.zeros_like(geo.row_base)
    )


def executed_vector_fmas(geo: DirectGeometry, kernel_w: int, out_group: int) -> int:
    """16-float vector FMAs the kernel executes for ``geo`` (per row block and tile, the
    nonzeros of the kernel rows and columns it visits x rows x vectors per row)."""
    per_tap = (geo.ptr[:, :, 1:] - geo.ptr[:, :, :-1]).sum((0, 1)).reshape(-1, kernel_w)
    total = 0
    for r, rows in zip(geo.group_row, geo.group_rows, strict=True):
        taps = per_tap[geo.kh_lo[r] : geo.kh_hi[r]]
        for lo, hi, width in zip(geo.kw_lo, geo.kw_hi, geo.tile_width, strict=True):
            total += int(taps[:, lo:hi].sum()) * int(rows) * int(width // LANES)
    return total * out_group


def input_working_set(geo: DirectGeometry, conv: nn.Conv2d, block: int) -> int:
    """Bytes of packed input one (row block, tile, input-channel block) reads, at most."""
    sh, dh = conv.stride[0], conv.dilation[0]
    worst = 0
    for r, rows in zip(geo.group_row, geo.group_rows, strict=True):
        in_rows = {
            sh * (r + i) + kh * dh
            for i in range(rows)
            for kh in range(geo.kh_lo[r + i], geo.kh_hi[r + i])
        }
        for lo, hi, width in zip(geo.kw_lo, geo.kw_hi, geo.tile_width, strict=True):
            worst = max(worst, len(in_rows) * block * int(hi - lo) * int(width) * 4)
    return worst


def micro_kernel_calls(geo: DirectGeometry, kernel_w: int) -> int:
    """Micro-kernel calls of one sample: per row block, tile, input-channel block and output
    channel (group), one, or one per kernel row where the tile skips kernel columns."""
    per_block = 0
    for r in geo.group_row:
        for lo, hi in zip(geo.kw_lo, geo.kw_hi, strict=True):
            whole = lo == 0 and hi == kernel_w
            per_block += 1 if whole else int(geo.kh_hi[r] - geo.kh_lo[r])
    return per_block * geo.ptr.shape[0] * geo.ptr.shape[1]


def kernel_call(
    module: DirectSparseConv2d, geo: DirectGeometry, packed: np.ndarray, out: np.ndarray
) -> Callable[[], object]:
    """The numba kernel of ``module`` on ``geo`` and an already packed sample."""
    bounds = _balanced_bounds(geo.ptr, min(torch.get_num_threads(), _threads.numba_max()))
    bias, kernel_w = module._bias, module.conv.kernel_size[1]

    def run() -> None:
        wanted = _threads.sync()
        module._kernel(
            packed, geo.ptr, geo.offs, geo.vals, bias, geo.row_base, geo.row_step, geo.kh_lo,
            geo.kh_hi, geo.group_row, geo.group_rows, geo.tile_col, geo.tile_width, geo.kw_lo,
            geo.kw_hi, kernel_w, geo.out_h, geo.out_stride, out, bounds,
        )  # fmt: skip
        _threads.restore(wanted)

    return run


def probe_layer(path: str, conv: nn.Conv2d, x: torch.Tensor, args: argparse.Namespace) -> dict:
    with torch.no_grad():
        expected = conv(x)
        _, plan = optimize(nn.Sequential(conv), x, repeats=args.layer_repeats, fold_bn=False)
        kernels = tuple(k for k in KERNELS if k.startswith("direct"))
        candidates = candidate_kernels(conv, kernels)
        if not candidates:
            raise ValueError(f"{path}: no direct-convolution kernel supports this layer")
        # "direct" stands in where optimize keeps the layer dense (the probe is about the kernel)
        chosen_name = plan.layers[0].kernel if plan.layers[0].kernel in candidates else "direct"
        chosen = candidates[chosen_name]
        for block, rows in args.shapes:
            candidates[f"{block}x{rows}"] = DirectSparseConv2d(conv, block, rows)
        chosen(x)  # compile, build the geometry
    height, width = x.shape[-2:]
    geo0 = chosen.geometry(height, width)
    packed = aligned_copy(chosen._packed(x[0], geo0))
    kernel_w = conv.kernel_size[1]
    out_shape = (conv.out_channels, geo0.out_h, geo0.out_stride)
    runners: dict[str, Callable[[], object]] = {
        "dense": lambda: conv(x),
        "forward": lambda: chosen(x),
        "pack": lambda: chosen._packed(x[0], geo0),
    }
    info: dict[str, dict] = {}
    for name, module in candidates.items():
        geo = module.geometry(height, width)
        most_rows = int(geo.group_rows.max())
        region = {
            "L1": max(1, args.l1_kib * 1024 // (4 * geo.out_stride * most_rows)),
            "L2": max(1, args.l2_kib * 1024 // (4 * geo.out_stride * most_rows)),
        }
        if max(region.values()) * geo.out_stride + geo.row_step * most_rows > packed.size:
            raise ValueError(f"{path}: the confined regions do not fit in the packed input")
        out = np.empty(int(np.prod(out_shape)), np.float32)
        variants = {
            "real": geo,
            "L1": confined(geo, region["L1"]),
            "L2": confined(geo, region["L2"]),
            "empty": dataclasses.replace(geo, ptr=np.zeros_like(geo.ptr)),
        }
        for mode, g in variants.items():
            runners[f"{name} {mode}"] = kernel_call(module, g, packed, out)
        runners[f"{name} real"]()
        got = torch.from_numpy(out.reshape(out_shape)[..., : geo.out_w].copy())[None]
        error = relative_error(got, expected)
        if error > 1e-4:
            raise RuntimeError(f"{path} {name}: relative error {error:.2e} against torch")
        info[name] = {
            "block": module.block,
            "rows": module.rows,
            "region_rows": region,
            "vector_fmas": executed_vector_fmas(geo, kernel_w, module.out_group),
            "calls": micro_kernel_calls(geo, kernel_w),
            "input_kib": input_working_set(geo, conv, module.block) / 1024,
            "max_rel_error": error,
        }
    for run in runners.values():
        run()  # warm up
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for order in rotations(list(runners), args.repeats):
        for name in order:
            start = time.perf_counter()
            runners[name]()
            samples[name].append(time.perf_counter() - start)
    ms = {name: 1e3 * statistics.median(ts) for name, ts in samples.items()}
    nonzeros = int(torch.count_nonzero(conv.weight))
    positions = expected.shape[-2] * expected.shape[-1]
    return {
        "path": path,
        "shape": plan.layers[0].kind,
        "input_shape": list(x.shape),
        "chosen": chosen_name,
        "macs": conv.weight.numel() * positions,
        "nonzero_macs": nonzeros * positions,
        "ms": ms,
        "kernels": info,
    }


def measure(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    size, _ = INPUT_SIZES[args.model]
    model = pruned_model(args.model, args.sparsity)
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        inputs = record_inputs(model, example)
    load_before = os.getloadavg()
    layers = [
        probe_layer(path, model.get_submodule(path), inputs[path], args) for path in args.layers
    ]
    return {
        "model": args.model,
        "sparsity": args.sparsity,
        "threads": args.threads,
        "repeats": args.repeats,
        "l1_kib": args.l1_kib,
        "l2_kib": args.l2_kib,
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
        "layers": layers,
    }


def markdown(r: dict) -> str:
    lines = [
        f"`{r['model']}`, {100 * r['sparsity']:.0f} % per layer, {r['threads']} thread(s), "
        f"median of {r['repeats']} interleaved rounds; L1 region {r['l1_kib']} KiB, L2 region "
        f"{r['l2_kib']} KiB; load average before {r['load_before']}, after {r['load_after']}.",
        "",
        "| layer | shape | kernel | block x rows | input KiB | mode | ms | nonzero GMAC/s "
        "| FMA/ns | x dense rate | x real | ns/call |",
        "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r["layers"]:
        ms = x["ms"]
        dense_rate = x["macs"] / ms["dense"] / 1e6
        lines.append(
            f"| {x['path']} | {x['shape']} | dense (PyTorch) | | | | {ms['dense']:.2f} "
            f"| ({dense_rate:.1f} dense) | | 1.00 | | |"
        )
        rate = x["nonzero_macs"] / ms["forward"] / 1e6
        lines.append(
            f"| | | {x['chosen']} (optimize's choice, forward) | | | packing included "
            f"| {ms['forward']:.2f} | {rate:.1f} | | {rate / dense_rate:.2f} | | |"
        )
        lines.append(f"| | | {x['chosen']} packing alone | | | | {ms['pack']:.2f} | | | | | |")
        for name, k in x["kernels"].items():
            head = f"| | | {name} | {k['block']} x {k['rows']} | {k['input_kib']:.0f} "
            for mode in MODES[:-1]:
                t = ms[f"{name} {mode}"]
                rate = x["nonzero_macs"] / t / 1e6
                lines.append(
                    f"{head}| {mode} | {t:.2f} | {rate:.1f} | {k['vector_fmas'] / t / 1e6:.2f} "
                    f"| {rate / dense_rate:.2f} | {ms[f'{name} real'] / t:.2f} | |"
                )
            t = ms[f"{name} empty"]
            lines.append(f"{head}| empty | {t:.2f} | | | | | {1e6 * t / k['calls']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="deeplab_resnet34", choices=sorted(INPUT_SIZES))
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--layers", default=",".join(DEFAULT_LAYERS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--layer-repeats", type=int, default=3, help="optimize's repeats")
    parser.add_argument("--l1-kib", type=int, default=24, help="input region for the L1 mode")
    parser.add_argument("--l2-kib", type=int, default=512, help="input region for the L2 mode")
    parser.add_argument(
        "--shapes", default="", help="extra direct shapes, block x rows: e.g. 16x2,8x1"
    )
    parser.add_argument("--json", type=Path, help="also write the measurements as JSON")
    args = parser.parse_args(argv)
    args.layers = [p for p in args.layers.split(",") if p]
    try:
        args.shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",") if s]
    except ValueError:
        parser.error(f"--shapes must look like 16x2,8x1, got {args.shapes!r}")
    if not 0.0 < args.sparsity < 1.0:
        parser.error(f"--sparsity must be in (0, 1), got {args.sparsity}")
    result = measure(args)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
