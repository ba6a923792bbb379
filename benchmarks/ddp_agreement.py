"""How closely N processes under torchrun (CPU, gloo) reproduce one process on the same global
batches (docs/distributed.md): trains the tiny test preset (tests/conftest.py, dropout off) once
with one process and once with ``torchrun --standalone --nproc_per_node=N``, and prints a
Markdown table of the overall sparsity, the per-task validation losses and every metric, with
the relative difference (and the absolute one for metrics in percent).

Usage::

    python benchmarks/ddp_agreement.py --out /tmp/ddp_agreement            # N = 2, seed 0
    python benchmarks/ddp_agreement.py --out /tmp/ddp_agreement --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))


def settings(seed: int) -> dict:
    from conftest import TINY

    tiny = copy.deepcopy(TINY)
    tiny["model"]["options"]["dropout"] = 0.0
    tiny["train"]["seed"] = seed
    return tiny


def train(config: Path, out: Path, processes: int) -> dict:
    launcher = [sys.executable, "-m", "adapmtl"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launcher += [f"--nproc_per_node={processes}", "-m", "adapmtl"]
    subprocess.run(
        [*launcher, "train", "--config", str(config), "--out", str(out), "--quiet", "--overwrite"],
        check=True,
        capture_output=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return json.loads((out / "results.json").read_text())


def rows(one: dict, many: dict) -> list[tuple[str, float, float, str]]:
    def relative(a: float, b: float) -> str:
        return f"{abs(a - b) / abs(a) * 100:.2f} %" if a else "-"

    sparsity = one["sparsity"]["overall"]["sparsity"], many["sparsity"]["overall"]["sparsity"]
    table = [("overall sparsity", *sparsity, f"{abs(sparsity[0] - sparsity[1]):.4f} abs")]
    for task, loss in one["loss"].items():
        table.append(
            (f"{task} val loss", loss, many["loss"][task], relative(loss, many["loss"][task]))
        )
    for task, metrics in one["metrics"].items():
        for name, value in metrics.items():
            other = many["metrics"][task][name]
            table.append(
                (
                    f"{task} {name}",
                    value,
                    other,
                    f"{relative(value, other)} / {abs(value - other):.2f} abs",
                )
            )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the runs")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    for seed in args.seeds:
        base = args.out / f"seed{seed}"
        base.mkdir(parents=True, exist_ok=True)
        config = base / "tiny.yaml"
        config.write_text(yaml.safe_dump(settings(seed)))
        one = train(config, base / "one", 1)
        many = train(config, base / f"n{args.processes}", args.processes)
        print(f"\n### seed {seed}: 1 process vs {args.processes} processes\n")
        print(f"| quantity | 1 process | {args.processes} processes | difference |")
        print("|---|---|---|---|")
        for name, a, b, diff in rows(one, many):
            print(f"| {name} | {a:.4f} | {b:.4f} | {diff} |")


if __name__ == "__main__":
    main()
