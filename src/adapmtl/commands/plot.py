"""``adapmtl plot RUN [RUN ...]``: the training curves of one run, or of several overlaid."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories")
    parser.add_argument(
        "--out",
        type=Path,
        help="where the PNGs go (default: the run directory for one run, plots/ for several)",
    )


def run(args: argparse.Namespace) -> int:
    from adapmtl.analysis.curves import plot_runs

    out = args.out or (args.runs[0] if len(args.runs) == 1 else Path("plots"))
    for path in plot_runs(args.runs, out):
        print(path)
    return 0
