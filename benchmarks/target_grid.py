"""Target grid: does AdapMTL land overall sparsity on its target with default settings?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/target_grid.py --threads 1
        [--jobs 2] [--out runs/target_grid] [--write docs/results/target_grid.md]
        [--parts main settings]

Each cell is one run of the project's Trainer (tiny data, validation and checkpoint only at the
end) and reports the overall sparsity reached at the end of training, its distance to the target
and the iteration at which the controller froze the mask. A cell *lands* when the controller froze
and the final overall sparsity is within 0.5 points of the target.

Crossing every axis is too expensive, so the grid has two parts:

* ``main``: targets x budgets x models at the default settings (threshold lr and theta init left
  at the config's defaults); fewer targets at the larger budget;
* ``settings``: threshold lr x theta init x targets on the cheapest model at the small budget.

Each part runs the recommended recipe and the previous mechanism (``recipe: paper, level:
pressure``); the paper recipe (fixed threshold weight decay) runs on a subset. Finished cells in
``--out`` are reused, so the page can be regenerated without training.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adapmtl.build import build_run_model, build_run_tasks
from adapmtl.config import from_dict
from adapmtl.engine.trainer import NonFiniteLossError, Trainer
from adapmtl.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 0.005

TARGETS = (0.5, 0.8, 0.9, 0.95, 0.98)
# the large budget costs five times as much: fewer targets there, the most on the cheap models
LARGE = {"resnet34": (0.5, 0.9, 0.98), "mobilenetv2": (0.5, 0.9), "lenet": (0.5, 0.9, 0.98)}
SETTINGS_MODEL = "lenet"
SETTINGS_TARGETS = {"recommended": (0.5, 0.9, 0.98), "previous": (0.9,), "paper": (0.9,)}
BUDGETS = (200, 1000)
THRESHOLD_LRS = (1e-3, 1e-2, 1e-1)
INITS = (-12.0, -7.0, -3.0)

MECHANISMS: dict[str, dict[str, Any]] = {
    "recommended": {"recipe": "recommended"},
    "previous": {"recipe": "paper", "level": "pressure"},
    "paper": {"recipe": "paper"},
}
MECHANISM_LABELS = {
    "recommended": "recommended (threshold auto + regrow, scheduled level, one global order)",
    "previous": "previous mechanism (recipe paper, level pressure)",
    "paper": "paper recipe (soft, fixed threshold weight decay)",
}

_SCENES = {
    "tasks": {"preset": "scenes", "names": ["seg", "normal", "depth"]},
    "data": {
        "name": "scenes",
        "batch_size": 4,
        "eval_batch_size": 8,
        "num_workers": 0,
        "options": {"size": [32, 32], "cache": True},
        "train_options": {"n": 64},
        "val_options": {"n": 8},
    },
}
MODELS: dict[str, dict[str, Any]] = {
    "resnet34": {
        "model": {"name": "deeplab_resnet34", "options": {"width": 0.125, "head_channels": 16}},
        **_SCENES,
    },
    # width 0.25 with 64-channel heads: the heads hold about 15 times the backbone's weights
    # (full width with heads that large costs seconds per iteration on one core)
    "mobilenetv2": {
        "model": {"name": "mobilenetv2", "options": {"width": 0.25, "head_channels": 64}},
        **copy.deepcopy(_SCENES),
    },
    "lenet": {
        "model": {"name": "lenet_mtl"},
        "tasks": {"preset": "fashion_pairs"},
        "data": {
            "name": "fashion_pairs",
            "batch_size": 16,
            "eval_batch_size": 64,
            "num_workers": 0,
            "options": {"root": "/usr/share/datasets/fashion-mnist"},
            "train_options": {"n": 2000},
            "val_options": {"n": 64},
        },
    },
}
MODELS["mobilenetv2"]["data"]["batch_size"] = 2


@dataclass(frozen=True)
class Cell:
    part: str
    mechanism: str
    model: str
    budget: int
    target: float
    threshold_lr: float | None = None
    init: float | None = None

    @property
    def name(self) -> str:
        lr = "default" if self.threshold_lr is None else f"{self.threshold_lr:g}"
        init = "default" if self.init is None else f"{self.init:g}"
        return f"{self.mechanism}_{self.model}_b{self.budget}_t{self.target:g}_lr{lr}_init{init}"


def cells(parts: list[str]) -> list[Cell]:
    found: list[Cell] = []
    small, large = BUDGETS
    if "main" in parts:
        for model in MODELS:
            found += [Cell("main", "recommended", model, small, t) for t in TARGETS]
            found += [Cell("main", "recommended", model, large, t) for t in LARGE[model]]
        for model in MODELS:
            found += [Cell("main", "previous", model, small, t) for t in TARGETS]
        found += [Cell("main", "paper", model, small, 0.9) for model in MODELS]
    if "settings" in parts:
        for mechanism, targets in SETTINGS_TARGETS.items():
            for lr in THRESHOLD_LRS:
                for init in INITS:
                    found += [
                        Cell("settings", mechanism, SETTINGS_MODEL, small, t, lr, init)
                        for t in targets
                    ]
    return found


def config_for(cell: Cell, threads: int) -> dict[str, Any]:
    config = copy.deepcopy(MODELS[cell.model])
    options: dict[str, Any] = dict(MECHANISMS[cell.mechanism])
    if cell.init is not None:
        options["init"] = cell.init
    config["method"] = {"name": "adapmtl", "target": cell.target, "options": options}
    config["weighting"] = {"name": "equal"}
    config["optim"] = {"lr": 1e-3, "lr_step": cell.budget}
    if cell.threshold_lr is not None:
        config["optim"]["threshold_lr"] = cell.threshold_lr
    config["train"] = {
        "iterations": cell.budget,
        "val_every": cell.budget,
        "log_every": cell.budget,
        "checkpoint_every": cell.budget,
        "seed": 0,
        "threads": threads,
    }
    return config


def run_cell(cell: Cell, out: Path, threads: int) -> dict[str, Any]:
    """The cell's outcome, from its finished run in ``out`` or a new run (its CPU seconds are
    kept beside the results). A run stopped on NaN/Inf, or refused before its first step because
    the target is out of the thresholds' reach, is a cell that did not land; its message is kept
    in ``failed.txt``."""
    run_dir = out / cell.name
    results_path = run_dir / "results.json"
    cpu_path = run_dir / "cpu_seconds.txt"
    failed_path = run_dir / "failed.txt"
    if not results_path.exists() and not failed_path.exists():
        torch.set_num_threads(threads)
        started = time.process_time()
        try:
            Trainer(
                from_dict(config_for(cell, threads)), run_dir, overwrite=True, verbose=False
            ).fit()
        except (NonFiniteLossError, UserError) as err:  # UserError: refused as unreachable
            run_dir.mkdir(parents=True, exist_ok=True)  # a refused run never made its directory
            failed_path.write_text(f"{err}\n")
        cpu_path.write_text(f"{time.process_time() - started}\n")
    cpu_seconds = float(cpu_path.read_text()) if cpu_path.exists() else 0.0
    if failed_path.exists():
        return {
            "reached": float("nan"),
            "error": float("nan"),
            "frozen_at": None,
            "landed": False,
            "failed": failed_path.read_text().strip(),
            "cpu_seconds": cpu_seconds,
        }
    results = json.loads(results_path.read_text())
    reached = float(results["sparsity"]["overall"]["sparsity"])
    frozen_at = results["method"]["frozen_at"]
    error = abs(reached - cell.target)
    return {
        "reached": reached,
        "error": error,
        "frozen_at": frozen_at,
        "landed": frozen_at is not None and error <= TOLERANCE,
        "failed": None,
        "cpu_seconds": cpu_seconds,
    }


def head_ratio(model: str) -> tuple[int, int]:
    """(backbone, heads) prunable weights of ``model`` as built for the grid."""
    config = from_dict(config_for(Cell("main", "recommended", model, 1, 0.5), 1))
    net = build_run_model(config, build_run_tasks(config))
    counts = {"backbone": 0, "heads": 0}
    for name, module in net.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            counts["backbone" if name.startswith("backbone") else "heads"] += module.weight.numel()
    return counts["backbone"], counts["heads"]


def _fmt_lr(value: float | None) -> str:
    return "default (= lr 1e-3)" if value is None else f"{value:g}"


def _fmt_init(value: float | None) -> str:
    return "default (-6)" if value is None else f"{value:g}"


def table(rows: list[tuple[Cell, dict[str, Any]]]) -> str:
    lines = [
        "| model | budget | target | threshold lr | init | reached % | abs error (points) "
        "| frozen_at | landed |",
        "|---|---:|---:|---|---|---:|---:|---:|---|",
    ]
    for cell, outcome in rows:
        frozen = "never" if outcome["frozen_at"] is None else str(outcome["frozen_at"])
        if outcome["failed"]:
            lines.append(
                f"| {cell.model} | {cell.budget} | {100 * cell.target:g} | "
                f"{_fmt_lr(cell.threshold_lr)} | {_fmt_init(cell.init)} | stopped: "
                f"{outcome['failed']} | | | **no** |"
            )
            continue
        lines.append(
            f"| {cell.model} | {cell.budget} | {100 * cell.target:g} | "
            f"{_fmt_lr(cell.threshold_lr)} | {_fmt_init(cell.init)} | "
            f"{100 * outcome['reached']:.2f} | {100 * outcome['error']:.2f} | {frozen} | "
            f"{'yes' if outcome['landed'] else '**no**'} |"
        )
    return "\n".join(lines)


def summary(rows: list[tuple[Cell, dict[str, Any]]]) -> str:
    landed = sum(outcome["landed"] for _, outcome in rows)
    return f"{landed} of {len(rows)} cells landed"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "(uptime unavailable)"


def page(
    outcomes: list[tuple[Cell, dict[str, Any]]], command: str, load: tuple[str, str], jobs: int
) -> str:
    cpu_s = sum(outcome["cpu_seconds"] for _, outcome in outcomes)
    ratios = {m: head_ratio(m) for m in MODELS}
    model_lines = [
        f"- `{m}`: {MODELS[m]['model']['name']} {MODELS[m]['model'].get('options', {})}, "
        f"backbone {ratios[m][0]:,} / heads {ratios[m][1]:,} prunable weights "
        f"(heads {ratios[m][1] / ratios[m][0]:.1f}x the backbone), data "
        f"{MODELS[m]['data']['name']} {MODELS[m]['data']['train_options']} batch "
        f"{MODELS[m]['data']['batch_size']}"
        for m in MODELS
    ]
    text = [
        "# Target grid: does overall sparsity land on the target?",
        "",
        "Generated by `benchmarks/target_grid.py` (do not edit by hand). Each cell is one run of",
        "the Trainer; it *lands* when the controller froze the mask and the final overall sparsity",
        f"is within {100 * TOLERANCE:g} points of the target. This is a quality run: landing does",
        "not depend on the machine's speed.",
        "",
        "Crossing every axis is too expensive (and the machine was shared), so the grid has two",
        "parts. *Default settings*: targets x budgets x models, with fewer targets at budget 1000",
        f"({', '.join(f'{m}: ' + ', '.join(f'{100 * t:g}' for t in ts) for m, ts in LARGE.items())}"
        " %); the previous mechanism at budget 200 only, the paper recipe at 90 % only.",
        f"*Settings*: threshold lr x theta init on `{SETTINGS_MODEL}` (the cheapest model) at",
        f"budget {BUDGETS[0]}, targets "
        + "; ".join(
            f"{m}: " + ", ".join(f"{100 * t:g}" for t in ts) + " %"
            for m, ts in SETTINGS_TARGETS.items()
        )
        + ".",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine()}",
        f"- Load before: `{load[0]}`",
        f"- Load after: `{load[1]}`",
        f"- CPU time of all cells: {cpu_s / 60:.1f} min ({jobs} processes of one thread)",
        "- Common settings: Adam lr 1e-3, equal task weights, seed 0, theta init -6 and threshold",
        "  lr = lr unless stated, threshold weight decay 1e-4 (the config's default), method",
        "  options at their defaults (schedule from 10 % to 50 % of training).",
        "- In the recommended recipe the thresholds receive no gradient (only the level moves",
        "  them), so the threshold lr does not act on them: its rows check that; theta init",
        "  matters only through the first level set before iteration 0.",
        *model_lines,
        "",
    ]
    for mechanism in MECHANISMS:
        mine = [(c, o) for c, o in outcomes if c.mechanism == mechanism]
        if not mine:
            continue
        text += [f"## {MECHANISM_LABELS[mechanism]}: {summary(mine)}", ""]
        for part, title in (("main", "Default settings"), ("settings", "Settings")):
            rows = [(c, o) for c, o in mine if c.part == part]
            if rows:
                text += [f"### {title}: {summary(rows)}", "", table(rows), ""]
    return "\n".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs/target_grid")
    parser.add_argument("--write", type=Path, default=ROOT / "docs/results/target_grid.md")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="cells run in parallel processes")
    parser.add_argument("--parts", nargs="+", choices=("main", "settings"), default=None)
    args = parser.parse_args()
    parts = args.parts or ["main", "settings"]

    command = "OMP_NUM_THREADS=1 .venv/bin/python " + shlex.join(
        ["benchmarks/target_grid.py", *sys.argv[1:]]
    )
    load_before = uptime()
    grid = cells(parts)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        futures = [pool.submit(run_cell, cell, args.out, args.threads) for cell in grid]
        outcomes = []
        for cell, future in zip(grid, futures, strict=True):
            outcome = future.result()
            outcomes.append((cell, outcome))
            print(
                f"{cell.name}: {100 * outcome['reached']:.2f} % (target {100 * cell.target:g}), "
                f"frozen at {outcome['frozen_at']}, landed {outcome['landed']}",
                flush=True,
            )
    args.write.parent.mkdir(parents=True, exist_ok=True)
    args.write.write_text(page(outcomes, command, (load_before, uptime()), args.jobs) + "\n")
    recommended = [(c, o) for c, o in outcomes if c.mechanism == "recommended"]
    print(f"recommended: {summary(recommended)}; wrote {args.write}")


if __name__ == "__main__":
    main()
