"""One table of candidates x suites: every run of several finished suites side by side.

    .venv/bin/python benchmarks/candidates.py --suite configs/suites/scenes_cpu.yaml runs/q13 \\
        --suite configs/suites/fashion_pairs.yaml runs/f13 [--write docs/results/candidates.md]

Per run and suite: overall Delta_T (mean ± sample std over seeds, then every seed) and the mean
sparsity of the backbone and of each head (%). Nothing is trained: runs come from the suites'
output directories (``benchmarks/quality.py --out``); a run missing from a suite shows "-".
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from adapmtl.analysis.compare import Aggregate, aggregate, collect
from adapmtl.analysis.suite import Suite, load_suite, plan, run_status
from adapmtl.analysis.tables import fmt_stat, markdown_row


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--suite",
        nargs=2,
        action="append",
        metavar=("SUITE", "OUT"),
        required=True,
        help="a suite file and the directory its runs were trained in",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", help="only these seeds (default: each suite's own)"
    )
    parser.add_argument("--write", type=Path, help="also write the table to this markdown file")
    return parser.parse_args()


def cell(agg: Aggregate | None) -> list[str]:
    if agg is None:
        return ["-", "-"]
    overall = agg.delta_t["overall"]
    seeds = ", ".join(f"{v:+.1f}" for v in overall.values)
    delta = f"{fmt_stat(overall.mean, overall.std)} ({seeds})"
    parts = [k for k in agg.sparsity if k != "overall"]
    sparsity = " / ".join(f"{100 * agg.sparsity[k].mean:.1f}" for k in parts)
    return [delta, sparsity]


def finished_only(suite: Suite, out: Path) -> Suite:
    """The suite restricted to the seeds whose dense run finished and to the runs finished at
    every one of them (the dense run always stays)."""
    planned = plan(suite, out)
    suite.seeds = [
        s
        for s in suite.seeds
        if any(p.is_dense and p.seed == s and run_status(p) == "done" for p in planned)
    ]
    unfinished = {p.run.name for p in planned if p.seed in suite.seeds and run_status(p) != "done"}
    suite.runs = [r for r in suite.runs if r.name not in unfinished or r is suite.dense]
    return suite


def main() -> int:
    args = parse_args()
    suites = []
    for suite_file, out in args.suite:
        suite = load_suite(Path(suite_file), [])
        if args.seeds:
            suite.seeds = [seed for seed in suite.seeds if seed in args.seeds]
        suite = finished_only(suite, Path(out))
        rows, _ = collect(suite, Path(out))
        suites.append((suite, {agg.run_id: agg for agg in aggregate(rows)}))
    names: list[str] = []
    labels: dict[str, str] = {}
    for _, by_id in suites:
        for run_id, agg in by_id.items():
            if run_id not in names:
                names.append(run_id)
                labels[run_id] = agg.label
    header = ["run"]
    for suite, by_id in suites:
        parts = next((a.sparsity for a in by_id.values() if a.sparsity), {})
        order = " / ".join(k for k in parts if k != "overall")
        header += [f"{suite.name}: ΔT", f"{suite.name}: sparsity % ({order})"]
    lines = [markdown_row(header), "|" + "---|" * len(header)]
    for name in names:
        cells = [f"{labels[name]} (`{name}`)"]
        for _, by_id in suites:
            cells += cell(by_id.get(name))
        lines.append(markdown_row(cells))
    command = " ".join(
        [".venv/bin/python", "benchmarks/candidates.py", *map(shlex.quote, sys.argv[1:])]
    )
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    text = "\n".join([f"Command: `{command}` (no training; {load})", "", *lines])
    print(text)
    if args.write:
        args.write.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
