"""``adapmtl demo`` end to end, shortened: both runs train, the table has the paper's columns for
the demo's tasks, and the outputs it announces exist."""

from __future__ import annotations

import json

import pytest

from adapmtl.cli import main

pytestmark = pytest.mark.slow

SHORT = [
    "model.options.width=0.125",
    "model.options.head_channels=16",
    "data.train_options.size=[32, 32]",
    "data.val_options.size=[32, 32]",
    "data.train_options.n=16",
    "data.val_options.n=8",
    "data.eval_batch_size=8",
    "weighting.options.warmup=2",
    "weighting.options.window=2",
    "train.val_every=30",
    "train.checkpoint_every=30",
    "train.threads=1",
]


def test_demo_prints_the_table_and_writes_what_it_announces(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--iterations", "30", "--quiet"]
    for override in SHORT:
        argv += ["--set", override]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("| method"))
    for task in ("seg", "normal", "depth"):
        assert f"ΔT {task}" in header and f"sparsity {task} %" in header
    assert "keypoint" not in header and "sparsity backbone %" in header
    assert (out / "table.md").read_text().strip() in printed
    dense_row = next(line for line in printed.splitlines() if line.startswith("| dense"))
    assert dense_row.rstrip(" |").endswith("0.00")  # the dense model is its own reference
    # GMP and AdapMTL rows; the mean form of Delta_T is the mean over tasks of each task's sum of
    # metric terms divided by its number of metrics (seg 2, normal 5, depth 5)
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    metrics_per_task = {"seg": 2, "normal": 5, "depth": 5}
    for label, run in (("GMP from scratch", "gmp"), ("AdapMTL", "adapmtl")):
        row = next(line for line in printed.splitlines() if line.startswith(f"| {label} |"))
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        expected = sum(
            float(cells[columns.index(f"ΔT {task}")]) / count
            for task, count in metrics_per_task.items()
        ) / len(metrics_per_task)
        mean_line = next(line for line in printed.splitlines() if line.startswith(f"  {label}: "))
        assert float(mean_line.split(": ")[1]) == pytest.approx(expected, abs=0.01)
        assert json.loads((out / run / "results.json").read_text())["target_reached"] is True
    sparse = json.loads((out / "adapmtl" / "results.json").read_text())
    dense = json.loads((out / "dense" / "results.json").read_text())
    assert set(sparse["metrics"]) == set(dense["metrics"]) == {"seg", "normal", "depth"}
    for plot in ("task_weights.png", "sparsity.png"):
        assert (out / "adapmtl" / plot).read_bytes()[:4] == b"\x89PNG"
        assert plot in printed
    assert f"outputs: {out}/" in printed

    # A second demo into the same directory refuses instead of overwriting the first.
    before = (out / "table.md").read_bytes()
    assert main(argv) == 2
    assert (out / "table.md").read_bytes() == before
