"""``adapmtl demo``: on the synthetic scenes, train a dense model, gradual magnitude pruning
(GMP, the baseline a user would write) and AdapMTL at 90 % overall sparsity, evaluate them, print
the paper-style table with Delta_T in both forms and write plots.

The settings are those of the CPU scenes quality suite (``configs/scenes/suite_cpu.yaml``) at seed
0, with 2 threads fixed, so the printed table is reproducible on a given torch build and its
seed-to-seed spread is measured (docs/results/quality_scenes.md).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from adapmtl.commands.common import add_set_argument
from adapmtl.config import apply_overrides, from_dict

DEMO_SETTINGS: dict[str, Any] = {
    # The CPU scenes suite's setting: Deeplab-ResNet34 at width 0.125 with 128-channel heads keeps
    # the full-size split of the prunable weights (backbone 23.5 %); NYUv2's three tasks (paper
    # Table 1). 1200 iterations: at 400 the dense runs of different seeds differed by 13 points
    # of Delta_T on average, at 1200 by 4.4 (docs/results/quality.md).
    "model": {"name": "deeplab_resnet34", "options": {"width": 0.125, "head_channels": 128}},
    "tasks": {"preset": "scenes", "names": ["seg", "normal", "depth"]},
    "data": {
        "name": "scenes",
        "batch_size": 16,
        "eval_batch_size": 32,
        "num_workers": 0,
        "options": {"cache": True},
        "train_options": {"n": 4000, "size": [48, 48], "augment": True},
        "val_options": {"n": 512, "size": [48, 48]},
    },
    "optim": {
        "lr": 1e-3,
        "betas": [0.5, 0.999],
        "weight_decay": 1e-4,
        "lr_step": 300,
        "lr_gamma": 0.5,
        "threshold_lr": 3e-2,
        "threshold_weight_decay": 0.1,
    },
    "method": {"name": "adapmtl", "target": 0.9, "options": {"init": -7.0}},
    "weighting": {"name": "adaptive", "options": {"window": 50, "warmup": 300}},
    "train": {
        "iterations": 1200,
        "val_every": 300,
        "log_every": 20,
        "checkpoint_every": 300,
        "threads": 2,
    },
}
"""The demo's AdapMTL run (``configs/scenes/adapmtl_cpu.yaml`` holds the same settings); the dense
run differs by ``method: dense`` and ``weighting: equal``, the GMP run by its method (``imp`` from
scratch on the cubic schedule from 10 % to 50 % of training, as AdapMTL's) and equal weights."""

GMP_METHOD: dict[str, Any] = {
    "name": "imp",
    "options": {"start_fraction": 0.1, "end_fraction": 0.5, "steps": 10},
}
RUNS = (("dense", "dense"), ("GMP from scratch", "gmp"), ("AdapMTL", "adapmtl"))
"""(table label, run directory) of the demo's runs, in training order."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory")
    parser.add_argument(
        "--iterations",
        type=int,
        help=f"training iterations per run (default: {DEMO_SETTINGS['train']['iterations']})",
    )
    parser.add_argument("--target", type=float, default=0.9, help="target overall sparsity")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier demo")
    add_set_argument(parser, "override a setting of every run")
    parser.add_argument("--quiet", action="store_true")


def demo_configs(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The dense, GMP and AdapMTL configs, in that order."""
    base = apply_overrides(_copy(DEMO_SETTINGS), args.overrides)
    if args.iterations is not None:
        base["train"]["iterations"] = args.iterations
    dense = _copy(base)
    dense["method"] = {"name": "dense", "target": None}
    dense["weighting"] = {"name": "equal"}
    gmp = _copy(base)
    gmp["method"] = {**_copy(GMP_METHOD), "target": args.target}
    gmp["weighting"] = {"name": "equal"}
    sparse = _copy(base)
    sparse["method"]["target"] = args.target
    reference = str(args.out / "dense" / "results.json")
    for config in (gmp, sparse):
        config["eval"] = {"reference": reference}
    return from_dict(dense), from_dict(gmp), from_dict(sparse)


def _copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_copy(v) for v in data]
    return data


def run(args: argparse.Namespace) -> int:
    from adapmtl.analysis.curves import plot_run
    from adapmtl.analysis.tables import results_table
    from adapmtl.atomic import write_text
    from adapmtl.engine.trainer import Trainer
    from adapmtl.runs import result_warnings
    from adapmtl.tasks.score import normalised_score

    started = time.perf_counter()
    rows = []
    for (label, name), config in zip(RUNS, demo_configs(args), strict=True):
        run_dir = args.out / name
        print(f"== training {label} ({config.train.iterations} iterations) -> {run_dir}")
        trainer = Trainer(config, run_dir, overwrite=args.overwrite, verbose=not args.quiet)
        rows.append((label, trainer.fit()))
    dense_metrics = rows[0][1]["metrics"]
    rows[0][1]["delta_t"] = normalised_score(dense_metrics, dense_metrics, trainer.tasks)
    table = results_table(rows, list(trainer.tasks))
    plots = plot_run(args.out / "adapmtl")
    write_text(args.out / "table.md", table + "\n")
    minutes = (time.perf_counter() - started) / 60
    print()
    print(table)
    print(
        "\nΔT above sums each task's metric terms, as the paper's tables do; with each task's "
        "terms averaged instead (Eq. 7 as printed), overall ΔT is:"
    )
    for label, results in rows[1:]:
        mean = normalised_score(results["metrics"], dense_metrics, trainer.tasks, reduce="mean")
        print(f"  {label}: {mean['overall']:+.2f}")
    print(
        "One seed: the same setting over 3 seeds, with the seed-to-seed spread of every row, is "
        "in docs/results/quality_scenes.md."
    )
    frozen = rows[2][1].get("method", {}).get("frozen_at")
    froze = "" if frozen is None else f"AdapMTL froze its masks at iteration {frozen}; "
    print(f"\n{froze}demo took {minutes:.1f} min ({DEMO_SETTINGS['train']['threads']} threads).")
    for label, results in rows[1:]:
        for warning in result_warnings(results, args.out / dict(RUNS)[label]):
            print(f"warning ({label}): {warning}")
    print(
        f"outputs: {args.out}/ (table.md; dense/, gmp/, adapmtl/ with results.json, last.pt, "
        f"log.jsonl; adapmtl/{', adapmtl/'.join(p.name for p in plots)})"
    )
    return 0
