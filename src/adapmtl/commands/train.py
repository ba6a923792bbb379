"""``adapmtl train``: train one run from a config."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from adapmtl.commands.common import add_config_arguments
from adapmtl.config import Config, load_config
from adapmtl.config_presets import preset_path
from adapmtl.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--out",
        type=Path,
        help="run directory (default: runs/<config's folder>/<config name>, e.g. "
        "runs/nyuv2/resnet34_dense for configs/nyuv2/resnet34_dense.yaml)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in --out")
    mode.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    parser.add_argument(
        "--init-from", type=Path, help="start from another run's checkpoint (weights, thresholds)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def default_run_dir(config: Path) -> Path:
    """``runs/<folder>/<name>`` for ``<folder>/<name>.yaml``: presets of the same name for
    different datasets (``configs/nyuv2/resnet34_dense.yaml``, ``configs/taskonomy/...``) get
    different run directories, which the presets' ``eval.reference`` paths name."""
    path = preset_path(config)  # a preset name counts by its packaged file
    return Path("runs") / path.resolve().parent.name / path.stem


def run(args: argparse.Namespace) -> int:
    from adapmtl.engine.distributed import MainRankError, session
    from adapmtl.engine.interrupt import TrainingInterruptedError
    from adapmtl.engine.trainer import Trainer

    if args.out is None:
        if args.config is None:
            raise UserError("give --config FILE, or --out RUN_DIR with --resume")
        args.out = default_run_dir(args.config)
    if args.resume:
        if args.init_from is not None:
            raise UserError("--resume continues a run; --init-from starts a new one: pick one")
        config_path = args.config or args.out / "config.yaml"
        config = load_config(config_path, args.overrides)
    else:
        if args.config is None:
            raise UserError("give --config FILE")
        config = load_config(args.config, args.overrides)
        config = record_imports(config, args.imports)
    with session(config.train.device) as dist:
        try:
            trainer = Trainer(
                config,
                args.out,
                resume=args.resume,
                overwrite=args.overwrite,
                init_from=args.init_from,
                verbose=not args.quiet,
                dist=dist,
            )
            finished = trainer.finished_results is not None
            results = trainer.fit()
        except MainRankError:
            return 2  # rank 0 prints the message
        except TrainingInterruptedError as stop:
            if dist.is_main:
                print(f"adapmtl train: {stop}", file=sys.stderr)
            return stop.exit_code
        except UserError as err:
            if dist.enabled:
                raise UserError(f"rank {dist.rank}: {err}") from None
            raise
        if not dist.is_main:
            return 0
    from adapmtl.analysis.tables import results_table

    if finished:
        print(
            f"adapmtl train: {args.out} has finished ({trainer.iteration} of "
            f"{config.train.iterations} iterations); nothing was changed. To train it further, "
            f"raise train.iterations: adapmtl train --out {args.out} --resume "
            "--set train.iterations=N",
            file=sys.stderr,
        )
    print(results_table([(config.method.name, results)], list(trainer.tasks)))
    print(f"\nrun directory: {args.out}")
    write_plots(args.out)
    from adapmtl.runs import result_warnings

    for warning in result_warnings(results, args.out):
        print(f"adapmtl train: warning: {warning}", file=sys.stderr)
    return 0


def record_imports(config: Config, modules: list[str]) -> Config:
    """``config`` with the ``--import`` modules added to its ``imports`` (recorded in the run
    directory, so later commands on the run import them too)."""
    added = [name for name in modules if name not in config.imports]
    return dataclasses.replace(config, imports=[*config.imports, *added]) if added else config


def write_plots(run_dir: Path) -> None:
    """The run's curves next to its log (:func:`adapmtl.runs.draw_run_plots`), said on the
    terminal either way."""
    from adapmtl.runs import draw_run_plots

    drawn, problem = draw_run_plots(run_dir)
    if problem is not None:
        print(f"adapmtl train: warning: {problem}", file=sys.stderr)
        return
    names = ", ".join(path.name for path in drawn)
    print(f"plots: {names} (adapmtl plot RUN [RUN ...] redraws them, several runs overlaid)")
