"""Whether the order in which ``optimize`` times its candidates changes the optimized model: the
model is optimized once with the rotated order (``optimize``'s own) and once with a fixed one
(every round dense first, then the kernels in the same order: the previous behaviour), and the
two optimized models run end to end, interleaved (ratio rotated / fixed, median of pairs).

    python benchmarks/optimize_order.py --model deeplab_resnet34 --sparsity 0.9 --threads 1
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import time
from unittest import mock

import torch

from pruned_models import INPUT_SIZES, pruned_model

optimize_module = importlib.import_module("adapmtl.inference.optimize")


def fixed_order(names: list[str], rounds: int) -> list[list[str]]:
    return [list(names)] * rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="deeplab_resnet34", choices=sorted(INPUT_SIZES))
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--layer-repeats", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    model = pruned_model(args.model, args.sparsity).eval()
    x = torch.randn(1, 3, *INPUT_SIZES[args.model])
    rotated, rotated_plan = optimize_module.optimize(model, x, repeats=args.layer_repeats)
    with mock.patch.object(optimize_module, "rotations", fixed_order):
        fixed, fixed_plan = optimize_module.optimize(model, x, repeats=args.layer_repeats)
    times: dict[str, list[float]] = {"rotated": [], "fixed": []}
    models = {"rotated": rotated, "fixed": fixed}
    with torch.no_grad():
        for m in models.values():
            m(x)
        for pair in range(args.pairs):
            for name in ("rotated", "fixed") if pair % 2 == 0 else ("fixed", "rotated"):
                start = time.perf_counter()
                models[name](x)
                times[name].append(time.perf_counter() - start)
    ratios = [r / f for r, f in zip(times["rotated"], times["fixed"], strict=True)]
    choices = list(zip(rotated_plan.layers, fixed_plan.layers, strict=True))
    print(
        json.dumps(
            {
                "model": args.model,
                "sparsity": args.sparsity,
                "threads": args.threads,
                "ms": {name: 1e3 * statistics.median(ts) for name, ts in times.items()},
                "ratio_rotated_over_fixed": statistics.median(ratios),
                "ratio_range": [min(ratios), max(ratios)],
                "sparse_layers": {
                    "rotated": sum(c.kernel != "dense" for c in rotated_plan.layers),
                    "fixed": sum(c.kernel != "dense" for c in fixed_plan.layers),
                },
                "same_choice": sum(a.kernel == b.kernel for a, b in choices),
                "layers": len(choices),
                "load_before": list(load_before),
                "load_after": list(os.getloadavg()),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
