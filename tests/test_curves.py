"""Curves of every run (issue 15): what ``adapmtl plot`` draws from hand-written run logs, one
run and several overlaid, and that ``adapmtl train`` writes them at the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("matplotlib")

from adapmtl.analysis import curves
from adapmtl.cli import main
from adapmtl.engine.logging import TENSORBOARD_OFF
from adapmtl.errors import UserError

TASKS = ("seg", "depth")


def write_run(path: Path, method: str, *, sparsity: float | None = 0.9, frozen_at: int = 20):
    """A run directory as the trainer writes it: 4 training records, 2 validations, results."""
    path.mkdir(parents=True)
    target = None if method == "dense" else 0.9
    (path / "config.yaml").write_text(
        yaml.safe_dump({"method": {"name": method, "target": target}})
    )
    lines = []
    for i, iteration in enumerate((10, 20, 30, 40)):
        record = {"kind": "train", "iteration": iteration, "lr": 1e-3}
        record.update({f"loss/{t}": 1.0 / (i + 1) + k for k, t in enumerate(TASKS)})
        record["loss/total"] = sum(record[f"loss/{t}"] for t in TASKS)
        record.update({f"weight/{t}": 1.0 + 0.1 * i * (k + 1) for k, t in enumerate(TASKS)})
        if sparsity is not None:
            record["sparsity/overall"] = min(sparsity, 0.3 * i)
            record["sparsity/backbone"] = min(sparsity, 0.25 * i)
            record.update({f"sparsity/{t}": min(0.99, 0.35 * i) for t in TASKS})
            record["alpha/backbone"] = 10.0 ** (i - 4)
            record.update({f"alpha/{t}": 10.0 ** (i - 3) for t in TASKS})
        lines.append(json.dumps(record))
    for iteration, miou in ((20, 10.0), (40, 20.0)):
        lines.append(
            json.dumps(
                {
                    "kind": "val",
                    "iteration": iteration,
                    "seg/miou": miou,
                    "depth/abs_err": 1 / miou,
                    "loss/seg": 0.5,
                    "loss/depth": 0.2,
                }
            )
        )
    (path / "log.jsonl").write_text("\n".join(lines) + "\n")
    results = {"iteration": 40, "method": {}}
    if sparsity is not None:
        results["method"] = {"frozen_at": frozen_at, "target": target}
        results.update(target=target, final_sparsity=sparsity, target_reached=sparsity >= 0.895)
    (path / "results.json").write_text(json.dumps(results))
    return path


@pytest.fixture
def figures(monkeypatch):
    """Figures plot_runs draws, by file name, instead of being written."""
    drawn = {}

    def keep(fig, plt, out):
        drawn[Path(out).name] = fig
        return out

    monkeypatch.setattr(curves, "save_figure", keep)
    return drawn


def lines_of(ax):
    """(x, y) of the data lines of an axes (the marks are axhline/axvline: two points)."""
    return [(list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()]


def test_one_run_draws_every_curve_with_target_and_freeze(tmp_path, figures):
    run = write_run(tmp_path / "r1", "adapmtl")
    written = curves.plot_runs([run], run)
    assert [p.name for p in written] == [
        "sparsity.png", "thresholds.png", "task_weights.png", "losses.png", "validation.png"
    ]  # fmt: skip

    fig = figures["sparsity.png"]
    assert fig._suptitle.get_text() == "sparsity: r1 (adapmtl)"
    overall, components = fig.axes
    assert overall.get_title() == "overall"  # drawn apart from the components
    data, target, freeze = lines_of(overall)
    assert data == ([10, 20, 30, 40], pytest.approx([0.0, 30.0, 60.0, 90.0]))
    assert target[1] == [90.0, 90.0]  # the target line, in %
    assert freeze[0] == [20, 20]  # the iteration the mask was fixed
    labels = [line.get_label() for line in components.get_lines()][:3]
    assert labels == ["backbone", "seg", "depth"]
    assert lines_of(components)[0][1] == pytest.approx([0.0, 25.0, 50.0, 75.0])

    (alpha,) = figures["thresholds.png"].axes
    assert alpha.get_yscale() == "log"
    assert lines_of(alpha)[0][1] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])

    (beta,) = figures["task_weights.png"].axes
    assert lines_of(beta)[1][1] == pytest.approx([1.0, 1.2, 1.4, 1.6])
    assert [ax.get_title() for ax in figures["losses.png"].axes] == [
        "training loss seg", "training loss depth", "training loss total"
    ]  # fmt: skip
    validation = figures["validation.png"].axes
    assert [ax.get_title() for ax in validation] == [
        "seg miou", "depth abs_err", "loss seg", "loss depth"
    ]  # fmt: skip
    assert lines_of(validation[0])[0] == ([20, 40], [10.0, 20.0])


def test_several_runs_are_overlaid_one_colour_each(tmp_path, figures):
    dense = write_run(tmp_path / "dense", "dense", sparsity=None)
    sparse = write_run(tmp_path / "sparse", "adapmtl", frozen_at=30)
    curves.plot_runs([dense, sparse], tmp_path / "out")
    weights = figures["task_weights.png"]
    assert weights._suptitle.get_text() == "task weights β: dense (dense); sparse (adapmtl)"
    assert [ax.get_title() for ax in weights.axes] == ["β seg", "β depth"]
    colours = [line.get_color() for line in weights.axes[0].get_lines()]
    assert colours == ["C0", "C1"]
    legend = [t.get_text() for t in weights.legends[0].get_texts()]
    assert legend == ["dense (dense)", "sparse (adapmtl)"]
    # the dense run prunes nothing: only the sparse run, in its own colour, in the sparsity plot
    sparsity = figures["sparsity.png"]
    assert sparsity._suptitle.get_text() == "sparsity: sparse (adapmtl)"
    assert [ax.get_title() for ax in sparsity.axes] == ["overall", "backbone", "seg", "depth"]
    data, _, freeze = sparsity.axes[0].get_lines()
    assert data.get_color() == "C1" and list(freeze.get_xdata()) == [30, 30]
    assert [t.get_text() for t in sparsity.legends[0].get_texts()] == [
        "sparse (adapmtl)", "target", "mask fixed"
    ]  # fmt: skip


def test_a_run_off_its_target_says_so_in_the_title(tmp_path, figures):
    run = write_run(tmp_path / "low", "adapmtl", sparsity=0.5)
    curves.plot_runs([run], run)
    title = figures["sparsity.png"]._suptitle.get_text()
    assert title.startswith("sparsity: low (adapmtl) ⚠\n⚠ low off target: reached 50.00 %")


def test_bad_run_directories_are_named(tmp_path):
    with pytest.raises(UserError, match=r"log\.jsonl does not exist: .*nothing is not a run"):
        curves.plot_runs([tmp_path / "nothing"], tmp_path)
    run = write_run(tmp_path / "r", "adapmtl")
    with (run / "log.jsonl").open("a") as handle:
        handle.write("{broken\n")
    with pytest.raises(UserError, match=r"log\.jsonl, line 7: not JSON"):
        curves.plot_runs([run], run)


def test_plot_command_writes_pngs(tmp_path, capsys):
    one = write_run(tmp_path / "one", "adapmtl")
    two = write_run(tmp_path / "two", "snip")
    assert main(["plot", str(one)]) == 0
    assert (one / "sparsity.png").read_bytes()[:4] == b"\x89PNG"
    out = tmp_path / "both"
    assert main(["plot", str(one), str(two), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert str(out / "validation.png") in printed
    assert all((out / name).read_bytes()[:4] == b"\x89PNG" for name in
               ("sparsity.png", "thresholds.png", "task_weights.png", "losses.png"))  # fmt: skip


def test_train_writes_the_plots_and_says_when_tensorboard_is_off(tiny_settings, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_settings))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    assert "plots: sparsity.png, thresholds.png, task_weights.png" in captured.out
    assert (tmp_path / "run" / "losses.png").read_bytes()[:4] == b"\x89PNG"
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert captured.err.count(TENSORBOARD_OFF) == 1
    else:
        assert TENSORBOARD_OFF not in captured.err
