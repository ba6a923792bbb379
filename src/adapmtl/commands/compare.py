"""``adapmtl compare --suite SUITE.yaml``: train the suite's methods on the same data, model,
iterations and seeds (dense first: the Delta_T reference), resume an interrupted suite, and write
the paper-style table (markdown + CSV), per-seed numbers with mean and spread, and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from adapmtl.commands.common import add_set_argument
from adapmtl.config_presets import preset_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--suite",
        type=Path,
        required=True,
        help="suite YAML file, or a packaged suite by name, e.g. suites/scenes_cpu",
    )
    parser.add_argument("--out", type=Path, help="output directory (default: runs/<suite name>)")
    add_set_argument(
        parser, "override a setting of every run, e.g. --set train.iterations=200 (repeatable)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="run these seeds instead")
    parser.add_argument("--plan", action="store_true", help="list the runs and their state, exit")
    parser.add_argument(
        "--table-only", action="store_true", help="write tables and plots from finished runs"
    )
    parser.add_argument("--no-plots", action="store_true", help="tables only, no matplotlib")
    parser.add_argument("--verbose", action="store_true", help="show each run's progress")


def run(args: argparse.Namespace) -> int:
    from adapmtl.analysis.compare import write_outputs
    from adapmtl.analysis.suite import load_suite, plan, run_status
    from adapmtl.engine.suite_runner import run_suite
    from adapmtl.errors import UserError

    suite = load_suite(preset_path(args.suite), args.overrides, args.imports)
    if args.seeds:
        if len(set(args.seeds)) != len(args.seeds):
            raise UserError(f"--seeds has duplicates: {args.seeds}")
        suite.seeds = list(args.seeds)
    out = args.out or Path("runs") / suite.name
    if args.plan:
        for p in plan(suite, out):
            print(f"{run_status(p):8} seed {p.seed:<3} {p.run_id:<24} {p.run_dir}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        run_suite(suite, out, verbose=args.verbose)
    files = write_outputs(suite, out, plots=not args.no_plots)
    print()
    print((out / "table.md").read_text())
    print("written: " + ", ".join(str(path) for path in files.values()))
    return 0
