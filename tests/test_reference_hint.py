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
    assert "reference file runs/dense_cpu/results.json does not exist (relative to the " in err
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
