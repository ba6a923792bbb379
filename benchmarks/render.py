"""Rendering speed of the synthetic scenes vs a training step, measured interleaved in one run.

For each size: the time to produce one sample (``ScenesDataset.__getitem__``: draw the scene,
ray-cast, shade, all five targets, tensors), median over many scenes; and, alternating with
batches of renders, the time of one training step (forward, backward, Adam) of the small dense
multitask net of benchmarks/scenes_difficulty.py at batch 8, both single-threaded. Wall-clock
medians; the machine may be shared, so the ratio is the figure to read. Finally the time per
sample of a second pass, served from ``cache=True``.

    .venv/bin/python benchmarks/render.py [--out docs/results/data.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from adapmtl.data.scenes import NUM_CLASSES, ScenesDataset
from scenes_difficulty import HEADS, SmallDenseNet, losses

BATCH = 8


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch) -> None:
    images, targets = batch
    loss = losses(model(images), targets)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def measure(size: tuple[int, int], rounds: int) -> dict[str, float]:
    scenes = ScenesDataset(rounds * BATCH, size=size, seed=0, cache=True)
    model = SmallDenseNet()
    optimizer = torch.optim.Adam(model.parameters())
    generator = torch.Generator().manual_seed(0)
    batch = (
        torch.randn(BATCH, 3, *size, generator=generator),
        {
            "seg": torch.randint(0, NUM_CLASSES, (BATCH, *size), generator=generator),
            **{
                t: torch.rand(BATCH, c, *size, generator=generator)
                for t, c in HEADS.items()
                if t != "seg"
            },
        },
    )
    training_step(model, optimizer, batch)  # warm-up
    per_image, per_batch, per_step = [], [], []
    for r in range(rounds):
        start = time.perf_counter()
        for i in range(r * BATCH, (r + 1) * BATCH):
            t = time.perf_counter()
            scenes[i]
            per_image.append(time.perf_counter() - t)
        per_batch.append(time.perf_counter() - start)
        t = time.perf_counter()
        training_step(model, optimizer, batch)
        per_step.append(time.perf_counter() - t)
    cached = []
    for i in range(rounds * BATCH):  # second epoch: served from the cache
        t = time.perf_counter()
        scenes[i]
        cached.append(time.perf_counter() - t)
    return {
        "render_ms_per_image": 1000 * statistics.median(per_image),
        "render_ms_per_batch": 1000 * statistics.median(per_batch),
        "train_step_ms": 1000 * statistics.median(per_step),
        "render_batch_over_step": statistics.median(per_batch) / statistics.median(per_step),
        "cached_ms_per_image": 1000 * statistics.median(cached),
        "images": len(per_image),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=12, help="batches of 8 renders per size")
    parser.add_argument("--out", default=None, help="markdown file for the results")
    args = parser.parse_args()
    # A ratio is measured: both sides single-threaded (rendering is single-threaded NumPy).
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    results = {f"{s}x{s}": measure((s, s), args.rounds) for s in (64, 128)}
    load_after = os.getloadavg()[0]
    command = " ".join([".venv/bin/python", *sys.argv])
    print(
        json.dumps(
            {
                "command": command,
                "torch_threads": torch.get_num_threads(),
                "load_average_1min": [load_before, load_after],
                **results,
            },
            indent=1,
        )
    )
    if args.out:
        parameters = sum(p.numel() for p in SmallDenseNet().parameters())
        header = (
            "| size | render / image (ms) | render / batch of 8 (ms) "
            "| train step, batch 8 (ms) | render batch / step | cached / image (ms) |"
        )
        lines = [
            "# Synthetic scenes: rendering speed",
            "",
            f"Command: `{command}` (torch threads: {torch.get_num_threads()}; wall-clock medians; "
            f"1-minute load average {load_before:.2f} before the run, {load_after:.2f} after, on "
            f"{os.cpu_count()} cores).",
            "",
            "One sample = draw the scene, ray-cast, shade, compute all five targets, convert to "
            f"tensors. Reference step: forward + backward + Adam of the {parameters:,}-"
            f"parameter dense net of benchmarks/scenes_difficulty.py at batch {BATCH}, measured "
            "alternating with the renders; torch and NumPy single-threaded. Cached: a second "
            "pass over the same items with `cache=True`.",
            "",
            header,
            "|---|---|---|---|---|---|",
        ]
        for size, r in results.items():
            lines.append(
                f"| {size} | {r['render_ms_per_image']:.1f} | {r['render_ms_per_batch']:.0f} | "
                f"{r['train_step_ms']:.0f} | {r['render_batch_over_step']:.2f} | "
                f"{r['cached_ms_per_image']:.2f} |"
            )
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
