"""End-to-end training on a tiny scenes preset: thresholds move, the controller freezes at the
target, results/eval/report have the expected content, and resume equals an uninterrupted run."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from adapmtl.checkpoint import load_checkpoint
from adapmtl.cli import main
from adapmtl.config import from_dict
from adapmtl.engine.trainer import Trainer

pytestmark = pytest.mark.slow


def train(settings, run_dir, **kwargs):
    trainer = Trainer(from_dict(settings), run_dir, verbose=False, **kwargs)
    return trainer, trainer.fit()


def test_adapmtl_run_prunes_to_the_target_and_writes_its_files(tiny_settings, tmp_path):
    trainer, results = train(tiny_settings, tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.yaml", "meta.json", "log.jsonl", "results.json", "last.pt"):
        assert (run / name).is_file(), name
    # the cubic schedule reaches the target at schedule_until (0.5) * 12 = iteration 6, and the
    # controller freezes at its first check there
    assert results["method"]["frozen_at"] == 6
    overall = results["sparsity"]["overall"]["sparsity"]
    assert abs(overall - 0.5) <= 0.005
    assert set(results["sparsity"]["components"]) == {"backbone", *trainer.tasks}
    assert set(results["metrics"]) == set(trainer.tasks)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in log} == {"train", "val"}
    assert any("weight/seg" in r for r in log)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["torch"] == torch.__version__ and meta["seed"] == 0
    state = load_checkpoint(run / "last.pt")
    assert state["iteration"] == 12


def test_resume_equals_an_uninterrupted_run(tiny_settings, tmp_path):
    train(tiny_settings, tmp_path / "whole")
    half = dict(tiny_settings, train={**tiny_settings["train"], "iterations": 6})
    # the sparsity schedule runs from schedule_start to schedule_until * iterations: keep it
    # from 1 to 6 in both
    half["method"] = {
        **half["method"],
        "options": {**half["method"]["options"], "schedule_until": 1.0},
    }
    train(half, tmp_path / "split")
    # continue the same run to 12 iterations
    config = from_dict(tiny_settings)
    state = load_checkpoint(tmp_path / "split" / "last.pt")
    state["config"] = config.to_dict()  # the run is extended, as `--set train.iterations=12`
    torch.save(state, tmp_path / "split" / "last.pt")
    resumed = Trainer(config, tmp_path / "split", resume=True, verbose=False)
    resumed.fit()
    a = load_checkpoint(tmp_path / "whole" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert torch.equal(a["weighting"]["history"], b["weighting"]["history"])
    assert a["method"] == b["method"]


def test_cli_train_eval_report(tiny_settings, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_settings))
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["report", str(run / "last.pt"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert abs(report["overall"]["sparsity"] - 0.5) <= 0.005
    assert main(["report", str(run / "last.pt"), "--cost", "--input-size", "32x32", "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)["overall"]
    # the cost counter sees the same pruned weights as the sparsity report
    assert (
        cost["prunable"] - cost["nonzero_prunable"]
        == report["overall"]["total"] - report["overall"]["nonzero"]
    )
    reference = tmp_path / "ref.json"
    results = json.loads((run / "results.json").read_text())
    # the run's own metrics as the reference (Delta_T needs non-zero reference values)
    own = {t: {m: v for m, v in ms.items() if v != 0} for t, ms in results["metrics"].items()}
    reference.write_text(json.dumps({"metrics": own}))
    assert main(["eval", str(run / "last.pt"), "--reference", str(reference), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    # evaluating against its own metrics gives Delta_T = 0 for every task
    assert evaluated["delta_t"]["overall"] == pytest.approx(0.0, abs=1e-9)
    for task, values in results["metrics"].items():
        assert evaluated["metrics"][task] == pytest.approx(values)


def test_existing_run_is_not_overwritten(tiny_settings, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_settings))
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text("{}")
    assert main(["train", "--config", str(config), "--out", str(run), "--quiet"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "results.json").read_text() == "{}"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method.target=1.5", "method.target"),
        ("model.name=resnet9000", "unknown model 'resnet9000'"),
        ("tasks.names=[seg,depht]", "tasks.names"),
        ("tasks.preset=cityscapes", "tasks.preset"),
        ("data.name=nyuv2_adashare", "data"),
        ("methd.name=dense", "unknown config key 'methd'"),
    ],
)
def test_bad_configs_exit_nonzero_and_write_nothing(
    tiny_settings, tmp_path, capsys, override, message
):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_settings))
    run = tmp_path / "run"
    code = main(["train", "--config", str(config), "--out", str(run), "--set", override])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert not run.exists() or not any(run.iterdir())
