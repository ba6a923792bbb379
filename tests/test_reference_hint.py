"""A relative eval.reference that is missing says what is missing, where it was looked for, and
how to point at the right file (issue 14, item 5)."""

import json
from pathlib import Path

import pytest

from adapmtl.cli import main
from adapmtl.errors import UserError

CONFIG = Path("configs/scenes/adapmtl_cpu.yaml").resolve()


def test_train_elsewhere_names_the_missing_reference_and_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--config", str(CONFIG), "--out", "run", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert (
        "reference file runs/scenes/dense_cpu/results.json does not exist (relative to the " in err
    )
    assert f"working directory {tmp_path})" in err
    assert "--set eval.reference=PATH" in err
    assert "--set eval.reference=null" in err
    assert "Traceback" not in err


def test_eval_names_its_flag(tmp_path):
    from adapmtl.tasks.score import load_reference as read_reference

    missing = tmp_path / "dense" / "results.json"
    with pytest.raises(UserError) as info:
        read_reference(missing, "--reference")
    message = str(info.value)
    assert message.startswith(f"reference file {missing} does not exist;")
    assert "relative" not in message
    assert "give --reference PATH" in message


def test_a_present_reference_still_reads(tmp_path):
    from adapmtl.tasks.score import load_reference as read_reference

    path = tmp_path / "results.json"
    path.write_text(json.dumps({"metrics": {"seg": {"miou": 0.5}}}))
    assert read_reference(path, "eval.reference") == {"seg": {"miou": 0.5}}


def _reference(path, tasks):
    path.write_text(json.dumps({"metrics": tasks}))
    return path


SCENES = {
    "seg": {"miou": 50.0, "pixel_acc": 80.0},
    "normal": {"angle_mean": 20.0},
    "depth": {"abs_err": 0.5},
    "keypoint": {"mae": 0.1},
    "edge": {"mae": 0.1},
}


def test_a_reference_of_another_task_set_is_refused_before_training(tiny_settings, tmp_path):
    """Issue 19, item 11: a NYUv2 reference for a five-task run (or the reverse) is named, with
    both task sets, before anything trains or is written."""
    from adapmtl.config import from_dict
    from adapmtl.engine.trainer import Trainer

    nyu = {name: SCENES[name] for name in ("seg", "normal", "depth")}
    path = _reference(tmp_path / "nyuv2_dense.json", nyu)
    tiny_settings["eval"] = {"reference": str(path)}
    with pytest.raises(UserError) as info:
        Trainer(from_dict(tiny_settings), tmp_path / "run", verbose=False)
    message = str(info.value)
    assert message.startswith(f"reference file {path} holds the tasks ['depth', 'normal', 'seg']")
    assert "this run has ['depth', 'edge', 'keypoint', 'normal', 'seg']" in message
    assert not (tmp_path / "run").exists()


def test_a_reference_scored_with_other_metrics_is_refused(tmp_path):
    from adapmtl.tasks import task_set
    from adapmtl.tasks.score import load_reference as read_reference

    # a Taskonomy dense run scored with metric_set full, read by a run with the paper's metrics
    path = _reference(tmp_path / "full.json", SCENES)
    with pytest.raises(UserError) as info:
        read_reference(path, "--reference", task_set("taskonomy"))
    assert (
        "task 'seg' lists ['miou', 'pixel_acc'], which this run does not compute (it "
        "reports ['ce'])" in str(info.value)
    )


def test_a_reference_of_the_same_task_set_reads(tmp_path):
    from adapmtl.tasks import task_set
    from adapmtl.tasks.score import load_reference as read_reference

    path = _reference(tmp_path / "same.json", SCENES)
    assert read_reference(path, "eval.reference", task_set("scenes")) == SCENES
