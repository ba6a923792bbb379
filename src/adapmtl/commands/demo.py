"""``adapmtl demo``: on the synthetic scenes, train a dense model and an AdapMTL model at 90 %
overall sparsity on a CPU preset, evaluate both, print the paper-style table and write plots."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from adapmtl.commands.common import add_set_argument
from adapmtl.config import apply_overrides, from_dict

DEMO_SETTINGS: dict[str, Any] = {
    # The preset's 256-channel heads keep the full-size NYUv2 split of the prunable weights
    # (backbone / heads 0.31), which decides how sparse the heads must be at 90 % overall; the
    # three tasks are NYUv2's (paper Table 1). The scenes' keypoint and edge heads learn little
    # with the paper's L1 loss (docs/results/data_difficulty.md) and would be pruned away.
    "model": {"name": "deeplab_resnet34_cpu"},
    "tasks": {"preset": "scenes", "names": ["seg", "normal", "depth"]},
    "data": {
        "name": "scenes",
        "batch_size": 8,
        "eval_batch_size": 50,
        "options": {"size": [64, 64], "cache": True},
        "train_options": {"n": 1000},
        "val_options": {"n": 200},
    },
    "optim": {
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "lr_step": 300,
        "lr_gamma": 0.5,
        "threshold_lr": 2e-2,
        "threshold_weight_decay": 0.01,
    },
    "method": {"name": "adapmtl", "target": 0.9, "options": {"init": -7.0}},
    "weighting": {"name": "adaptive", "options": {"window": 50, "warmup": 150, "lam": 3.0}},
    "train": {"iterations": 600, "val_every": 200, "log_every": 10, "checkpoint_every": 200},
}
"""The demo's AdapMTL run (``configs/scenes/adapmtl_cpu.yaml`` holds the same settings); the dense
run differs only by ``method: dense`` and ``weighting: equal``."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory")
    parser.add_argument(
        "--iterations",
        type=int,
        help=f"training iterations per run (default: {DEMO_SETTINGS['train']['iterations']})",
    )
    parser.add_argument("--target", type=float, default=0.9, help="target overall sparsity")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier demo")
    add_set_argument(parser, "override a setting of both runs")
    parser.add_argument("--quiet", action="store_true")


def demo_configs(args: argparse.Namespace) -> tuple[Any, Any]:
    base = apply_overrides(_copy(DEMO_SETTINGS), args.overrides)
    if args.iterations is not None:
        base["train"]["iterations"] = args.iterations
    dense = _copy(base)
    dense["method"] = {"name": "dense", "target": None}
    dense["weighting"] = {"name": "equal"}
    sparse = _copy(base)
    sparse["method"]["target"] = args.target
    sparse["eval"] = {"reference": str(args.out / "dense" / "results.json")}
    return from_dict(dense), from_dict(sparse)


def _copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_copy(v) for v in data]
    return data


def run(args: argparse.Namespace) -> int:
    from adapmtl.analysis.plots import plot_run
    from adapmtl.analysis.tables import results_table
    from adapmtl.atomic import write_text
    from adapmtl.commands.train import result_warnings
    from adapmtl.engine.evaluate import normalised_score
    from adapmtl.engine.trainer import Trainer

    started = time.perf_counter()
    dense_config, sparse_config = demo_configs(args)
    rows = []
    for label, config in (("dense", dense_config), ("AdapMTL", sparse_config)):
        run_dir = args.out / config.method.name
        print(f"== training {label} ({config.train.iterations} iterations) -> {run_dir}")
        trainer = Trainer(config, run_dir, overwrite=args.overwrite, verbose=not args.quiet)
        results = trainer.fit()
        rows.append((label, results))
    dense_results = rows[0][1]
    dense_results["delta_t"] = normalised_score(
        dense_results["metrics"], dense_results["metrics"], trainer.tasks
    )
    table = results_table(rows, list(trainer.tasks))
    plots = plot_run(args.out / "adapmtl")
    write_text(args.out / "table.md", table + "\n")
    minutes = (time.perf_counter() - started) / 60
    print()
    print(table)
    frozen = rows[1][1].get("method", {}).get("frozen_at")
    froze = "" if frozen is None else f"AdapMTL froze its masks at iteration {frozen}; "
    print(f"\n{froze}demo took {minutes:.1f} min.")
    for warning in result_warnings(rows[1][1], args.out / "adapmtl"):
        print(f"warning (AdapMTL): {warning}")
    print(
        f"outputs: {args.out}/ (table.md, dense/, adapmtl/ with results.json, last.pt, "
        f"log.jsonl, {', '.join(p.name for p in plots)})"
    )
    return 0
