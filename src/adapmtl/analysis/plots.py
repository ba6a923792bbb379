"""Training curves from a run's ``log.jsonl``: component sparsity over training (like the paper's
Figure 3) and task weights over training (like the supplement's Figure 2). Needs matplotlib
(``pip install adapmtl[plots]``)."""

from __future__ import annotations

import json
from pathlib import Path

from adapmtl.errors import UserError


def read_log(run_dir: Path, kind: str = "train") -> list[dict]:
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("kind") == kind]


def plot_series(run_dir: Path, prefix: str, ylabel: str, out: Path, scale: float = 1.0) -> Path:
    """Plot every logged scalar ``prefix/<name>`` against the iteration into ``out`` (PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise UserError("plots need matplotlib: pip install 'adapmtl[plots]'") from err
    records = read_log(run_dir)
    names = sorted({k.split("/", 1)[1] for r in records for k in r if k.startswith(prefix + "/")})
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    for name in names:
        points = [
            (r["iteration"], r[f"{prefix}/{name}"]) for r in records if f"{prefix}/{name}" in r
        ]
        ax.plot([p[0] for p in points], [scale * p[1] for p in points], label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_run(run_dir: Path) -> list[Path]:
    """Sparsity and task-weight curves of one run, written next to its log."""
    run_dir = Path(run_dir)
    outputs = [plot_series(run_dir, "weight", "task weight β", run_dir / "task_weights.png")]
    if any("sparsity/overall" in r for r in read_log(run_dir)):
        outputs.append(
            plot_series(run_dir, "sparsity", "sparsity (%)", run_dir / "sparsity.png", 100.0)
        )
    return outputs
