"""``adapmtl train``: train one run from a config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adapmtl.commands.common import add_config_arguments
from adapmtl.config import load_config
from adapmtl.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", type=Path, help="run directory (default: runs/<config name>)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in --out")
    mode.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    parser.add_argument(
        "--init-from", type=Path, help="start from another run's checkpoint (weights, thresholds)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    from adapmtl.engine.distributed import MainRankError, session
    from adapmtl.engine.interrupt import TrainingInterruptedError
    from adapmtl.engine.trainer import Trainer

    if args.out is None:
        if args.config is None:
            raise UserError("give --config FILE, or --out RUN_DIR with --resume")
        args.out = Path("runs") / args.config.stem
    if args.resume:
        if args.init_from is not None:
            raise UserError("--resume continues a run; --init-from starts a new one: pick one")
        config_path = args.config or args.out / "config.yaml"
        config = load_config(config_path, args.overrides)
    else:
        if args.config is None:
            raise UserError("give --config FILE")
        config = load_config(args.config, args.overrides)
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

    print(results_table([(config.method.name, results)], list(trainer.tasks)))
    print(f"\nrun directory: {args.out}")
    return 0
