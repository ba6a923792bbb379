"""``adapmtl data synth``: write synthetic scenes to disk in a public dataset layout."""

from __future__ import annotations

import argparse
import sys

from adapmtl.commands.common import parse_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from adapmtl.data.writer import LAYOUTS

    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    synth = sub.add_parser(
        "synth",
        formatter_class=parser.formatter_class,
        help="render synthetic scenes into a public dataset layout",
        description="Render synthetic scenes and write them in a public dataset layout, so the "
        "NYUv2 / Taskonomy readers can be used without downloading anything.",
    )
    synth.add_argument("--layout", required=True, choices=LAYOUTS)
    synth.add_argument("--out", required=True, help="output directory (must be empty or absent)")
    synth.add_argument("--n", type=int, required=True, help="number of training images")
    synth.add_argument("--size", required=True, help="image size HxW, e.g. 64x64")
    synth.add_argument("--seed", type=int, default=0, help="random seed of the scenes")
    synth.add_argument(
        "--n-test", type=int, default=None, help="held-out images (default: max(1, n // 5))"
    )
    synth.add_argument(
        "--force",
        action="store_true",
        help="replace DIR if it holds an earlier 'adapmtl data synth' output",
    )


def run(args: argparse.Namespace) -> int:
    from adapmtl.data.writer import write_scenes

    size = parse_size(args.size, "--size", minimum=2)

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\rrendering {done}/{total}", end="", file=sys.stderr, flush=True)

    counts = write_scenes(
        args.layout,
        args.out,
        n=args.n,
        size=size,
        seed=args.seed,
        n_test=args.n_test,
        force=args.force,
        progress=progress,
    )
    if sys.stderr.isatty():
        print(file=sys.stderr)
    splits = ", ".join(f"{count} {split}" for split, count in counts.items())
    print(f"wrote {splits} images ({size[0]}x{size[1]}, layout {args.layout}) to {args.out}")
    return 0
