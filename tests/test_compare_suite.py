"""``adapmtl compare`` end to end on a tiny suite with the real trainer: every method lands on
the target, the tables hold Delta_T computed independently from the runs' metrics, an
interrupted suite resumes to the same results, and a changed suite never reuses stale runs;
``adapmtl sensitivity`` on one of its checkpoints."""

from __future__ import annotations

import copy
import csv
import json

import pytest
import torch
import yaml

from adapmtl.cli import main
from adapmtl.engine.trainer import Trainer
from adapmtl.errors import UserError
from conftest import TINY

pytestmark = pytest.mark.slow

TARGET = 0.5
# seg and edge: metrics that cannot be exactly 0 after a few iterations (Delta_T divides by them)
DIRECTIONS = {"seg": {"miou": True, "pixel_acc": True}, "edge": {"mae": False}}


def base_config() -> dict:
    base = copy.deepcopy(TINY)
    base.pop("method")
    base["tasks"]["names"] = ["seg", "edge"]
    base["train"].update(iterations=8, val_every=8, checkpoint_every=4)
    return base


RUNS = [
    {
        "name": "dense",
        "method": {"name": "dense", "target": None, "options": {"keep_weights_at": 0}},
        "config": {"weighting": {"name": "equal"}},
    },
    {
        "name": "adapmtl",
        "label": "AdapMTL",
        "method": {"name": "adapmtl", "options": {"init": -5.0}},
    },
    {"name": "snip", "label": "SNIP", "method": {"name": "snip"}},
    {
        "name": "lth",
        "label": "LTH",
        "method": {"name": "lth", "options": {"dense_checkpoint": "{dense}/last.pt"}},
    },
    {"name": "imp", "label": "IMP", "method": {"name": "imp", "options": {"steps": 2}}},
    {
        "name": "disparse",
        "label": "DiSparse dynamic",
        "method": {"name": "disparse", "options": {"mode": "dynamic", "update_every": 2}},
    },
]


def write_suite(path, runs, **extra):
    suite = {"name": "tiny", "seeds": [0], "targets": [TARGET], "config": base_config()}
    suite.update(runs=runs, **extra)
    path.write_text(yaml.safe_dump(suite))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    suite = write_suite(root / "suite.yaml", RUNS)
    out = root / "out"
    torch.set_num_threads(1)
    assert main(["compare", "--suite", str(suite), "--out", str(out)]) == 0
    return suite, out


def delta_t_by_hand(metrics, dense):
    per_task = {}
    for task, directions in DIRECTIONS.items():
        total = 0.0
        for metric, higher in directions.items():
            relative = (metrics[task][metric] - dense[task][metric]) / dense[task][metric] * 100
            total += relative if higher else -relative
        per_task[task] = total
    return sum(per_task.values()) / len(per_task)


def test_suite_writes_tables_and_plots_with_independent_delta_t(finished):
    _, out = finished
    for name in ("table.md", "table.csv", "per_seed.csv", "summary.json"):
        assert (out / name).is_file(), name
    for plot in ("delta_t.png", "sparsity.png"):
        assert (out / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((out / "per_seed.csv").open()))
    assert [r["run_id"] for r in rows] == [r["name"] for r in RUNS]
    dense = json.loads((out / "seed0" / "dense" / "results.json").read_text())["metrics"]
    for row in rows:
        results = json.loads((out / "seed0" / row["run_id"] / "results.json").read_text())
        expected = delta_t_by_hand(results["metrics"], dense)
        assert float(row["delta_t/overall"]) == pytest.approx(expected, abs=1e-9)
        if row["run_id"] != "dense":
            assert abs(float(row["sparsity/overall"]) - TARGET) <= 0.005, row["run_id"]
            counts = results["sparsity"]["components"]
            assert set(counts) == {"backbone", "seg", "edge"}
            for component, c in counts.items():
                # the table's value is this run's own count, not another run's or component's
                expected_c = 1.0 - c["nonzero"] / c["total"]
                assert float(row[f"sparsity/{component}"]) == pytest.approx(expected_c), component
            overall = results["sparsity"]["overall"]
            assert sum(c["nonzero"] for c in counts.values()) == overall["nonzero"]
            assert sum(c["total"] for c in counts.values()) == overall["total"]
    table = (out / "table.md").read_text()
    for run in RUNS:
        assert f"| {run.get('label', run['name'])} |" in table
    summary = json.loads((out / "summary.json").read_text())
    assert [r["run_id"] for r in summary["runs"]] == [r["name"] for r in RUNS]


def test_sensitivity_command_on_a_suite_checkpoint(finished, tmp_path, capsys):
    _, out = finished
    code = main(
        [
            "sensitivity",
            str(out / "seed0" / "snip" / "last.pt"),
            "--component",
            "seg",
            "--levels",
            "0.6",
            "0.95",
            "--max-batches",
            "1",
            "--out",
            str(tmp_path / "sens"),
        ]
    )
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "sens" / "sensitivity.csv").open()))
    assert [r["component"] for r in rows] == ["as loaded", "seg", "seg"]
    assert float(rows[0]["delta_t/overall"]) == 0.0
    assert float(rows[2]["sparsity/seg"]) == pytest.approx(0.95, abs=0.002)
    assert rows[2]["sparsity/backbone"] == rows[0]["sparsity/backbone"]
    assert (tmp_path / "sens" / "sensitivity_seg.png").is_file()
    code = main(["sensitivity", str(out / "seed0" / "snip" / "last.pt"), "--component", "head"])
    assert code == 2 and "--component 'head'" in capsys.readouterr().err


def test_interrupted_suite_resumes_to_the_uninterrupted_results(finished, tmp_path, monkeypatch):
    _, reference = finished
    runs = RUNS[:1] + [r for r in RUNS if r["name"] in ("lth", "disparse")]
    suite = write_suite(tmp_path / "suite.yaml", runs)
    out = tmp_path / "out"
    train_step = Trainer.train_step

    def interrupt_once(self, batch):
        if self.config.method.name == "lth" and self.iteration == 6:
            monkeypatch.setattr(Trainer, "train_step", train_step)
            raise KeyboardInterrupt
        return train_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", interrupt_once)
    assert main(["compare", "--suite", str(suite), "--out", str(out)]) == 130
    assert (out / "seed0" / "lth" / "last.pt").is_file()
    assert not (out / "seed0" / "lth" / "results.json").exists()
    dense_results = (out / "seed0" / "dense" / "results.json").stat().st_mtime_ns
    assert main(["compare", "--suite", str(suite), "--out", str(out), "--plan"]) == 0
    assert main(["compare", "--suite", str(suite), "--out", str(out), "--no-plots"]) == 0
    assert (out / "seed0" / "dense" / "results.json").stat().st_mtime_ns == dense_results
    for run in ("lth", "disparse"):
        ours = json.loads((out / "seed0" / run / "results.json").read_text())
        theirs = json.loads((reference / "seed0" / run / "results.json").read_text())
        assert ours["metrics"] == theirs["metrics"], run
        assert ours["sparsity"] == theirs["sparsity"], run


def test_a_changed_suite_does_not_reuse_finished_runs(finished, tmp_path):
    from adapmtl.analysis.suite import load_suite
    from adapmtl.engine.suite_runner import run_suite

    _, out = finished
    changed = write_suite(tmp_path / "changed.yaml", RUNS)
    suite = load_suite(changed, ["optim.lr=0.01"])
    with pytest.raises(UserError, match="finished run made with a different config"):
        run_suite(suite, out)


def test_runs_made_before_a_setting_existed_still_count_as_done(finished, tmp_path):
    """A setting added since a run was made (here: written without `imports` and
    `train.autocast`, as runs made before those settings existed) takes its default, which keeps
    the earlier behaviour, so the finished run is reused; a real difference is still refused."""
    import shutil

    from adapmtl.analysis.suite import load_suite, plan, run_status

    suite_path, out = finished
    old = tmp_path / "old"
    shutil.copytree(out, old)
    for saved in old.glob("seed*/*/config.yaml"):
        data = yaml.safe_load(saved.read_text())
        del data["imports"], data["train"]["autocast"]
        saved.write_text(yaml.safe_dump(data))
    # runs reading the dense checkpoint name its path, which moved with the copy
    planned = [
        p
        for p in plan(load_suite(suite_path, []), old)
        if "dense_checkpoint" not in p.config.method.options
    ]
    assert len(planned) >= 2
    assert [run_status(p) for p in planned] == ["done"] * len(planned)
    saved = planned[0].run_dir / "config.yaml"
    data = yaml.safe_load(saved.read_text())
    data["optim"]["lr"] = 0.5
    saved.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match="finished run made with a different config"):
        run_status(planned[0])
