"""What ``train`` (and ``compare``, ``demo``) leave and say: a finished run is never replaced by
less, a raised ``train.iterations`` continues it, a run off its target sparsity is flagged in
results.json, at the end of ``train``, in every table and plot, validation metrics are printed
during training, and every output is written atomically."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from adapmtl import atomic
from adapmtl.analysis import plots
from adapmtl.analysis.compare import Row, aggregate, suite_markdown
from adapmtl.analysis.suite import load_suite
from adapmtl.analysis.tables import aggregate_csv, per_seed_csv, results_table, spread_table
from adapmtl.checkpoint import load_checkpoint
from adapmtl.cli import main
from adapmtl.config import from_dict
from adapmtl.engine.trainer import Trainer
from adapmtl.errors import UserError

TASKS = ["seg", "depth"]
METRICS = {"seg": {"miou": 40.0}, "depth": {"abs_err": 0.5}}


def write_config(tmp_path: Path, settings: dict, **train: int) -> Path:
    settings = {**settings, "train": {**settings["train"], **train}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir())}


def result(target: float | None, sparsity: float | None) -> dict:
    out: dict = {"metrics": METRICS, "target": target, "final_sparsity": sparsity}
    if sparsity is not None:
        components = {c: {"sparsity": sparsity} for c in ["backbone", *TASKS]}
        out["sparsity"] = {"overall": {"sparsity": sparsity}, "components": components}
    return out


# ---------------------------------------------------------------- finished runs (item 1)
@pytest.mark.slow
@pytest.mark.parametrize("method", ["dense", "adapmtl"])
def test_resuming_a_finished_run_says_so_and_changes_nothing(
    method, tiny_settings, tmp_path, capsys
):
    if method == "dense":
        tiny_settings["method"] = {"name": "dense", "target": None}
    config = write_config(tmp_path, tiny_settings, iterations=4, val_every=2, checkpoint_every=2)
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(run), "--quiet"]) == 0
    before = snapshot(run)
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert f"{run} has finished (4 of 4 iterations); nothing was changed" in captured.err
    assert "--set train.iterations=N" in captured.err
    assert snapshot(run) == before
    results = json.loads((run / "results.json").read_text())
    # its numbers are printed again, from results.json
    assert f"| {method} | {results['metrics']['seg']['miou']:.2f} |" in captured.out


@pytest.mark.slow
def test_raising_train_iterations_continues_a_finished_run_as_if_never_stopped(
    tiny_settings, tmp_path, capsys
):
    # dense with equal weights: nothing in the run depends on its planned length, so 4 then 4
    # more iterations must give the 8-iteration run exactly
    tiny_settings["method"] = {"name": "dense", "target": None}
    tiny_settings["weighting"] = {"name": "equal"}
    config = write_config(tmp_path, tiny_settings, iterations=4, val_every=2, checkpoint_every=2)
    run, whole = tmp_path / "run", tmp_path / "whole"
    assert main(["train", "--config", str(config), "--out", str(run), "--quiet"]) == 0
    argv = ["train", "--out", str(run), "--resume", "--quiet", "--set", "train.iterations=8"]
    assert main(argv) == 0
    argv = ["train", "--config", str(config), "--out", str(whole), "--quiet"]
    assert main([*argv, "--set", "train.iterations=8"]) == 0
    a, b = load_checkpoint(run / "last.pt"), load_checkpoint(whole / "last.pt")
    assert a["iteration"] == b["iteration"] == 8
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    continued = json.loads((run / "results.json").read_text())
    assert continued["iteration"] == 8
    assert continued["metrics"] == json.loads((whole / "results.json").read_text())["metrics"]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["iterations"] == 8
    # the continued run is now finished at 8: resuming it again changes nothing
    before = snapshot(run)
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    assert snapshot(run) == before
    # fewer iterations than it has trained is refused, naming both numbers
    capsys.readouterr()
    argv = ["train", "--out", str(run), "--resume", "--quiet", "--set", "train.iterations=5"]
    assert main(argv) == 2
    assert "it has trained 8 iterations, more than train.iterations=5" in capsys.readouterr().err
    assert snapshot(run) == before


@pytest.mark.slow
def test_resume_restores_the_results_of_a_run_stopped_before_writing_them(tiny_settings, tmp_path):
    # what the earlier resume bug left (and what a kill between last.pt and results.json leaves)
    config = write_config(tmp_path, tiny_settings, iterations=4, val_every=2, checkpoint_every=2)
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(run), "--quiet"]) == 0
    complete = json.loads((run / "results.json").read_text())
    (run / "results.json").write_text('{"train_seconds": 9e-05, "skipped_steps": 0, "best": null}')
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    restored = json.loads((run / "results.json").read_text())
    for key in ("iteration", "metrics", "loss", "sparsity", "target_reached", "best"):
        assert restored[key] == complete[key], key
    assert load_checkpoint(run / "last.pt")["iteration"] == 4


def test_a_suite_run_finished_at_fewer_iterations_is_continued_not_refused(tiny_settings, tmp_path):
    from adapmtl.analysis.suite import plan, run_status

    suite = tmp_path / "suite.yaml"
    tiny_settings["train"]["iterations"] = 12
    suite.write_text(
        yaml.safe_dump(
            {
                "config": tiny_settings,
                "runs": [{"name": "dense", "method": {"name": "dense", "target": None}}],
            }
        )
    )
    planned = plan(load_suite(suite), tmp_path / "out")[0]
    planned.run_dir.mkdir(parents=True)
    (planned.run_dir / "last.pt").write_bytes(b"checkpoint")
    shorter = planned.config.to_dict()
    shorter["train"]["iterations"] = 6
    (planned.run_dir / "config.yaml").write_text(yaml.safe_dump(shorter))
    (planned.run_dir / "results.json").write_text(json.dumps({"iteration": 6, "metrics": {}}))
    assert run_status(planned) == "partial"
    (planned.run_dir / "config.yaml").write_text(yaml.safe_dump(planned.config.to_dict()))
    assert run_status(planned) == "partial"  # config raised, results still of iteration 6
    (planned.run_dir / "results.json").write_text(json.dumps({"iteration": 12, "metrics": {}}))
    assert run_status(planned) == "done"
    # a results.json without metrics (a run that never validated) is not a finished run
    (planned.run_dir / "results.json").write_text(json.dumps({"iteration": 12}))
    assert run_status(planned) == "partial"


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic.write_text(path, '{"metrics": 1}')

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full_disk)
    with pytest.raises(UserError, match=r"results\.json: .*No space left.*previous results"):
        atomic.write_text(path, "{}")
    assert path.read_text() == '{"metrics": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_plots_are_written_atomically(tmp_path, monkeypatch):
    out = tmp_path / "delta_t.png"
    out.write_bytes(b"previous")
    rows = [Row("a", "A", 0, 0.9, "snip", METRICS, {"per_task": {}, "overall": 1.0}, {})]

    def bad_disk(fd: int) -> None:
        raise OSError(errno.EIO, "bad disk")

    monkeypatch.setattr(atomic.os, "fsync", bad_disk)
    with pytest.raises(UserError, match="bad disk"):
        plots.plot_delta_t(aggregate(rows), out)
    assert out.read_bytes() == b"previous"
    monkeypatch.undo()
    plots.plot_delta_t(aggregate(rows), out)
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["delta_t.png"]


# ------------------------------------------------------------------- off target (item 2)
@pytest.mark.parametrize(
    ("target", "sparsity", "flagged"),
    [
        (0.9, 0.8951, False),
        (0.9, 0.9049, False),
        (0.9, 0.8949, True),
        (0.9, 0.91, True),
        (0.9, 0.1998, True),
        (None, None, False),
    ],
)
def test_results_table_flags_a_row_off_its_target(target, sparsity, flagged):
    table = results_table([("AdapMTL", result(target, sparsity))], TASKS)
    row = next(line for line in table.splitlines() if line.startswith("| AdapMTL"))
    assert row.startswith("| AdapMTL ⚠ |") is flagged
    if flagged:
        assert table.splitlines()[-1] == (
            f"⚠ AdapMTL: off target, reached {100 * sparsity:.2f} % overall sparsity, "
            "requested 90 %."
        )
    else:
        assert "⚠" not in table


def test_comparison_tables_csv_and_summary_flag_the_seeds_off_target(tmp_path):
    delta = {"per_task": {"seg": 0.0, "depth": 0.0}, "overall": 0.0}
    rows = [
        Row("dense", "Dense", 0, None, "dense", METRICS, delta, {}),
        Row("dense", "Dense", 1, None, "dense", METRICS, delta, {}),
        Row("adapmtl", "AdapMTL", 0, 0.9, "adapmtl", METRICS, delta, {"overall": 0.9}),
        Row("adapmtl", "AdapMTL", 1, 0.9, "adapmtl", METRICS, delta, {"overall": 0.2}),
    ]
    for row in rows[2:]:
        row.sparsity.update({c: row.sparsity["overall"] for c in ["backbone", *TASKS]})
    aggregates = aggregate(rows)
    assert [a.off_target_seeds for a in aggregates] == [[], [1]]
    spread = spread_table(aggregates, TASKS)
    assert "| AdapMTL ⚠ | 2 |" in spread and "| Dense | 2 |" in spread
    assert spread.splitlines()[-1] == (
        "⚠ AdapMTL: off target, seed 1 reached 20.00 % overall sparsity, requested 90 %."
    )
    means = results_table([(a.label, a.mean_results()) for a in aggregates], TASKS)
    assert "| AdapMTL ⚠ |" in means  # the mean, 55 %, hides nothing
    per_seed = per_seed_csv(rows, TASKS).splitlines()
    assert per_seed[0].split(",")[:5] == ["run_id", "label", "seed", "target", "target_reached"]
    assert [line.split(",")[4] for line in per_seed[1:]] == ["", "", "True", "False"]
    table = aggregate_csv(aggregates, TASKS).splitlines()
    assert table[0].split(",")[5] == "off_target_seeds"
    assert [line.split(",")[5] for line in table[1:]] == ["", "1"]


def test_comparison_plots_flag_the_runs_off_target(tmp_path, monkeypatch):
    delta = {"per_task": {"seg": 1.0, "depth": 1.0}, "overall": 1.0}
    sparsity = {c: 0.2 for c in ["overall", "backbone", *TASKS]}
    rows = [
        Row("snip", "SNIP", 0, 0.9, "snip", METRICS, delta, {**sparsity, "overall": 0.9}),
        Row("adapmtl", "AdapMTL", 0, 0.9, "adapmtl", METRICS, delta, sparsity),
    ]
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, plt, out: figures.append(fig) or out)
    plots.plot_delta_t(aggregate(rows), tmp_path / "a.png")
    plots.plot_sparsity_allocation(aggregate(rows), TASKS, tmp_path / "b.png")
    plots.plot_delta_t_vs_sparsity(aggregate(rows), tmp_path / "c.png")
    for fig in figures[:2]:
        labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
        assert labels == ["SNIP", "AdapMTL ⚠"]
    legend = [t.get_text() for t in figures[2].axes[0].get_legend().get_texts()]
    assert "off target" in legend


@pytest.mark.slow
def test_a_run_that_misses_its_target_says_so_in_results_and_at_the_end(
    tiny_settings, tmp_path, capsys
):
    # the paper recipe (fixed threshold decay) cannot reach 95 % in 2 iterations
    options = {"recipe": "paper", "init": -7.0}
    tiny_settings["method"] = {"name": "adapmtl", "target": 0.95, "options": options}
    config = write_config(tmp_path, tiny_settings, iterations=2, val_every=2, log_every=1)
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(run), "--quiet"]) == 0
    captured = capsys.readouterr()
    results = json.loads((run / "results.json").read_text())
    reached = results["final_sparsity"]
    assert reached == results["sparsity"]["overall"]["sparsity"] < 0.9
    assert results["target"] == 0.95 and results["target_reached"] is False
    assert results["best"] is None and not (run / "best.pt").exists()
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert f"reached {100 * reached:.2f} % overall sparsity, requested 95 %" in warnings[0]
    assert f"no {run / 'best.pt'}" in warnings[1] and str(run / "last.pt") in warnings[1]
    assert "| adapmtl ⚠ |" in captured.out


@pytest.mark.slow
def test_demo_that_misses_its_target_warns_instead_of_iteration_none(tmp_path, capsys):
    from test_demo import SHORT

    argv = ["demo", "--out", str(tmp_path / "demo"), "--iterations", "30", "--target", "0.99"]
    # the paper recipe (fixed threshold decay) cannot reach 99 % in 30 iterations
    argv += ["--quiet", "--set", "method.options.recipe=paper"]
    for override in SHORT:
        argv += ["--set", override]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "None" not in printed
    assert "warning (AdapMTL): the run missed its target: reached " in printed
    assert "requested 99 %" in printed
    assert "| AdapMTL ⚠ |" in (tmp_path / "demo" / "table.md").read_text()


def test_suite_description_is_followed_by_the_settings_after_set(tiny_settings, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        yaml.safe_dump(
            {
                "description": "1200 iterations, every method at 90 %.",
                "config": tiny_settings,
                "targets": [0.9],
                "runs": [
                    {"name": "dense", "method": {"name": "dense", "target": None}},
                    {"name": "snip", "method": {"name": "snip"}},
                ],
            }
        )
    )
    loaded = load_suite(suite, ["train.iterations=20", "method.target=0.5"])
    delta = {"per_task": {t: 0.0 for t in TASKS}, "overall": 0.0}
    rows = [Row("dense", "Dense", 0, None, "dense", METRICS, delta, {})]
    text = suite_markdown(loaded, rows, aggregate(rows), TASKS)
    settings = text.split("\n\n")[2]
    assert settings.startswith(
        "Settings in effect (with --set train.iterations=20, method.target=0.5; they override "
        "the description): "
    )
    # the suite's targets apply to every pruning run (method.target is the base's)
    assert ", 20 iterations, batch 4, target sparsity 90 %, seeds [0]." in settings


# ------------------------------------------------------------ validation line (item 3)
@pytest.mark.slow
def test_validation_metrics_are_printed_during_training_off_a_terminal(
    tiny_settings, tmp_path, capsys
):
    reference = tmp_path / "reference.json"
    reference.write_text(
        json.dumps({"metrics": {"seg": {"miou": 10.0}, "depth": {"abs_err": 1.0}}})
    )
    tiny_settings["tasks"] = {"preset": "scenes", "names": ["seg", "depth"]}
    tiny_settings["eval"] = {"reference": str(reference)}
    tiny_settings["train"].update(iterations=4, val_every=2)
    os.environ.pop("CI", None)
    Trainer(from_dict(tiny_settings), tmp_path / "run", verbose=True).fit()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if " val " in line]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    validations = [r for r in log if r["kind"] == "val"]
    assert [r["iteration"] for r in validations] == [2, 4]
    for line, record in zip(lines, validations, strict=True):
        assert line == (
            f"[{record['iteration']}] val seg miou {record['seg/miou']:.4g}, "
            f"depth abs_err {record['depth/abs_err']:.4g}, ΔT {record['delta_t']:+.2f} %"
        )
