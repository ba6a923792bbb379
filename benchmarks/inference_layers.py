"""Where sparse CPU inference time goes: per-layer time of the optimized model against each
layer's nonzero MACs, and the time spent outside the sparse kernels (issue 17, goal 1).

The model is pruned and optimized as in ``benchmarks/inference.py`` (per-layer magnitude pruning
of a randomly initialised model, in blocks of output channels with ``--blocks 4``, BN statistics
from one random batch, ``optimize`` with ``--layer-repeats``). Then the dense model and the
optimized copy run ``--repeats`` times each, alternating, with a timer on every leaf module
(Conv2d, BatchNorm2d, ReLU, ... and the sparse kernels), and each module's median time is
reported:

* per Conv/Linear layer: dense time, time of the kernel ``optimize`` chose, and the "FLOP limit"
  = dense time x nonzero MACs / MACs (a sparse kernel as efficient per MAC as the dense one);
  ``x limit`` = used time / FLOP limit says how far a layer is from it;
* per module type: total time, and what is left outside any leaf module (functional ops in
  ``forward``: additions of residual blocks, interpolation, concatenation).

Module timers add a few microseconds per call, so the sum of module times is slightly below the
hooked end-to-end time, and both are slightly above an unhooked run.

    python benchmarks/inference_layers.py --model deeplab_resnet34 --sparsity 0.9 --threads 1
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from adapmtl.analysis import count_cost
from adapmtl.inference import optimize
from adapmtl.inference.layers import CSRConv1x1, CSRLinear, DirectSparseConv2d
from pruned_models import INPUT_SIZES, pruned_model

KERNEL_TYPES = (DirectSparseConv2d, CSRConv1x1, CSRLinear)


def _timed_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (path, m)
        for path, m in model.named_modules()
        if path and (isinstance(m, KERNEL_TYPES) or not list(m.children()))
    ]


def time_modules(
    models: dict[str, nn.Module], example: torch.Tensor, repeats: int
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Median time (ms) of every leaf module and of the whole forward, models alternating."""
    samples: dict[str, dict[str, list[float]]] = {n: collections.defaultdict(list) for n in models}
    totals: dict[str, list[float]] = {n: [] for n in models}
    handles = []
    for name, model in models.items():
        started: dict[str, float] = {}
        for path, module in _timed_modules(model):

            def pre(_m, _i, path=path, started=started):
                started[path] = time.perf_counter()

            def post(_m, _i, _o, path=path, started=started, seen=samples[name]):
                seen[path].append(time.perf_counter() - started[path])

            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        with torch.no_grad():
            for model in models.values():
                model(example)  # warm-up
            for seen in samples.values():
                seen.clear()
            for _ in range(repeats):
                for name, model in models.items():
                    start = time.perf_counter()
                    model(example)
                    totals[name].append(time.perf_counter() - start)
    finally:
        for handle in handles:
            handle.remove()
    per_module = {
        name: {path: 1e3 * statistics.median(ts) for path, ts in seen.items()}
        for name, seen in samples.items()
    }
    return per_module, {name: 1e3 * statistics.median(ts) for name, ts in totals.items()}


def _kind(module: nn.Module) -> str:
    if isinstance(module, DirectSparseConv2d):
        return "sparse direct conv"
    if isinstance(module, KERNEL_TYPES):
        return "sparse CSR"
    if isinstance(module, nn.Conv2d):
        return "dense Conv2d"
    return type(module).__name__


def measure(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    size, _ = INPUT_SIZES[args.model]
    model = pruned_model(args.model, args.sparsity, args.blocks)
    cost = {layer.path: layer for layer in count_cost(model, (size, size)).layers}
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    load_before = os.getloadavg()
    fast, plan = optimize(model, example, repeats=args.layer_repeats)
    per, total = time_modules({"dense": model, "sparse": fast}, example, args.repeats)
    load_after = os.getloadavg()
    by_kind: dict[str, collections.Counter] = {}
    for name, net in (("dense", model), ("sparse", fast)):
        counter: collections.Counter = collections.Counter()
        for path, ms in per[name].items():
            counter[_kind(net.get_submodule(path))] += ms
        counter["outside leaf modules"] = total[name] - sum(counter.values())
        by_kind[name] = counter
    layers = []
    for choice in plan.layers:
        c = cost[choice.path]
        dense_ms, used_ms = per["dense"][choice.path], per["sparse"][choice.path]
        limit_ms = dense_ms * c.nonzero_macs / c.macs if c.macs else 0.0
        layers.append(
            {
                "path": choice.path,
                "kind": choice.kind,
                "kernel": choice.kernel,
                "density": choice.density,
                "gmacs": c.macs / 1e9,
                "nonzero_gmacs": c.nonzero_macs / 1e9,
                "dense_ms": dense_ms,
                "used_ms": used_ms,
                "limit_ms": limit_ms,
            }
        )
    return {
        "model": args.model,
        "size": size,
        "sparsity": args.sparsity,
        "blocks": args.blocks,
        "threads": args.threads,
        "torch": torch.__version__,
        "load_before": list(load_before),
        "load_after": list(load_after),
        "dense_ms": total["dense"],
        "sparse_ms": total["sparse"],
        "by_kind": {name: dict(c) for name, c in by_kind.items()},
        "layers": layers,
    }


def markdown(r: dict, top: int) -> str:
    dense, sparse = r["by_kind"]["dense"], r["by_kind"]["sparse"]
    blocks = f" in blocks of {r['blocks']} output channels" if r["blocks"] > 1 else ""
    lines = [
        f"`{r['model']}` {r['size']}x{r['size']}, {100 * r['sparsity']:.0f} % per layer{blocks}, "
        f"{r['threads']} thread(s), batch 1; load average before {r['load_before']}, after "
        f"{r['load_after']}. End to end with module timers: dense {r['dense_ms']:.0f} ms, "
        f"sparse {r['sparse_ms']:.0f} ms ({r['dense_ms'] / r['sparse_ms']:.2f}x).",
        "",
        "| module type | dense ms | share | sparse ms | share |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind in sorted(set(dense) | set(sparse), key=lambda k: -sparse.get(k, 0.0)):
        d, s = dense.get(kind, 0.0), sparse.get(kind, 0.0)
        lines.append(
            f"| {kind} | {d:.1f} | {100 * d / r['dense_ms']:.1f} % "
            f"| {s:.1f} | {100 * s / r['sparse_ms']:.1f} % |"
        )
    rows = sorted(r["layers"], key=lambda x: -(x["used_ms"] - x["limit_ms"]))
    lines += [
        "",
        f"Layers farthest from the FLOP limit (largest used - limit ms; {top} of "
        f"{len(rows)}; limit = dense ms x nonzero MACs / MACs):",
        "",
        "| layer | shape | kernel | density | GMACs | nonzero GMACs | dense ms | used ms "
        "| limit ms | x limit | nonzero GMAC/s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in rows[:top]:
        ratio = x["used_ms"] / x["limit_ms"] if x["limit_ms"] else float("inf")
        rate = x["nonzero_gmacs"] / x["used_ms"] * 1e3 if x["used_ms"] else 0.0
        lines.append(
            f"| {x['path']} | {x['kind']} | {x['kernel']} | {x['density']:.3f} "
            f"| {x['gmacs']:.2f} | {x['nonzero_gmacs']:.3f} | {x['dense_ms']:.1f} "
            f"| {x['used_ms']:.1f} | {x['limit_ms']:.1f} | {ratio:.1f} | {rate:.1f} |"
        )
    used = sum(x["used_ms"] for x in rows)
    limit = sum(x["limit_ms"] for x in rows)
    dense_layers = sum(x["dense_ms"] for x in rows)
    lines += [
        "",
        f"All Conv/Linear layers: dense {dense_layers:.0f} ms, used {used:.0f} ms, "
        f"FLOP limit {limit:.0f} ms.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="deeplab_resnet34", choices=sorted(INPUT_SIZES))
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument(
        "--blocks", type=int, default=1, help="prune blocks of this many output channels"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layer-repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=15, help="layers listed in the table")
    parser.add_argument("--json", type=Path, help="also write the measurements as JSON")
    args = parser.parse_args(argv)
    if not 0.0 < args.sparsity < 1.0:
        parser.error(f"--sparsity must be in (0, 1), got {args.sparsity}")
    result = measure(args)
    print(markdown(result, args.top))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
