"""Per-sample time of the optimized sparse model at batch 1 against a larger batch (issue 17).

The model is pruned as in ``benchmarks/inference.py`` (per-layer magnitude pruning of a randomly
initialised model, or ``--blocks 4`` for blocks of 4 output channels; BN statistics from one
random batch) and optimized twice, once for batch 1 and once for ``--batch`` (kernels chosen per
batch size, as in deployment). Then both copies run ``--repeats`` times, alternating, and each
run's wall time, CPU time (user + system) and minor page faults are divided by its batch size.
Wall time is the figure on an idle machine; on a shared one the CPU time is less disturbed, and
system time with page faults shows memory being mapped afresh rather than reused.

    python benchmarks/inference_batch.py --model deeplab_resnet34 --sparsity 0.9 --batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

import torch

from adapmtl.inference import optimize
from pruned_models import INPUT_SIZES, pruned_model


def _usage() -> tuple[float, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_minflt


def measure(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    size, _ = INPUT_SIZES[args.model]
    model = pruned_model(args.model, args.sparsity, args.blocks)
    generator = torch.Generator().manual_seed(0)
    batched = torch.randn(args.batch, 3, size, size, generator=generator)
    inputs = {1: batched[:1].clone(), args.batch: batched}
    load_before = os.getloadavg()
    fast = {n: optimize(model, x, repeats=args.layer_repeats)[0] for n, x in inputs.items()}
    seen: dict[int, dict[str, list[float]]] = {
        n: {"wall": [], "cpu": [], "faults": []} for n in fast
    }
    with torch.no_grad():
        for n, x in inputs.items():
            fast[n](x)  # warm-up
        for _ in range(args.repeats):
            for n, x in inputs.items():
                cpu, faults = _usage()
                start = time.perf_counter()
                fast[n](x)
                wall = time.perf_counter() - start
                cpu_after, faults_after = _usage()
                seen[n]["wall"].append(1e3 * wall / n)
                seen[n]["cpu"].append(1e3 * (cpu_after - cpu) / n)
                seen[n]["faults"].append((faults_after - faults) / n)
    per_sample = {
        n: {key: statistics.median(values) for key, values in runs.items()}
        for n, runs in seen.items()
    }
    return {
        "model": args.model,
        "sparsity": args.sparsity,
        "blocks": args.blocks,
        "threads": args.threads,
        "batch": args.batch,
        "repeats": args.repeats,
        "per_sample": per_sample,
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="deeplab_resnet34", choices=sorted(INPUT_SIZES))
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--blocks", type=int, default=1, help="prune blocks of this many outputs")
    parser.add_argument("--batch", type=int, default=8, help="compared with batch 1")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layer-repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the result as JSON")
    args = parser.parse_args()
    if min(args.batch, args.threads, args.blocks, args.repeats) < 1:
        parser.error("--batch, --threads, --blocks and --repeats take positive integers")
    result = measure(args)
    one, many = result["per_sample"][1], result["per_sample"][args.batch]
    print(
        f"{args.model} {100 * args.sparsity:.0f} %"
        f"{f' (blocks of {args.blocks})' if args.blocks > 1 else ''}, {args.threads} thread(s); "
        f"load average before {tuple(result['load_before'])}, after {tuple(result['load_after'])}"
    )
    print("| batch | wall ms / sample | CPU ms / sample | minor page faults / sample |")
    print("|---:|---:|---:|---:|")
    for n, row in result["per_sample"].items():
        print(f"| {n} | {row['wall']:.0f} | {row['cpu']:.0f} | {row['faults']:.0f} |")
    print(
        f"batch {args.batch} / batch 1 per sample: wall {many['wall'] / one['wall']:.3f}, "
        f"CPU {many['cpu'] / one['cpu']:.3f}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
