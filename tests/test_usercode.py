"""User code from configs and the CLI: a model, a task set and a weighting registered by a
module of the user's own (written here into tmp_path, outside the project) train, and every
later command on the run finds them in a fresh process, through the run's recorded config."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from adapmtl.errors import UserError

SRC = Path(__file__).resolve().parents[1] / "src"
MODULE = "tiny_user_code"
USER_CODE = '''
"""A user's own components, registered under new names."""
from torch import nn

from adapmtl.models import MODELS, MultiTaskModel
from adapmtl.tasks.presets import TASK_SETS, task_set
from adapmtl.weighting import WEIGHTINGS, EqualWeighting


@MODELS.register("tiny_user")
def tiny_user(tasks, hidden: int = 8):
    backbone = nn.Sequential(nn.Conv2d(3, hidden, 3, stride=2, padding=1), nn.ReLU())
    heads = {task: nn.Conv2d(hidden, channels, 1) for task, channels in tasks.items()}
    return MultiTaskModel(backbone, heads)


@TASK_SETS.register("tiny_user_tasks")
def tiny_user_tasks():
    return task_set("scenes", tasks=["seg", "depth"])


@WEIGHTINGS.register("tiny_user_equal")
class TinyUserEqual(EqualWeighting):
    pass
'''


def user_settings(tiny: dict, imports: list[str] | None) -> dict:
    settings = copy.deepcopy(tiny)
    settings["model"] = {"name": "tiny_user", "options": {"hidden": 6}}
    settings["tasks"] = {"preset": "tiny_user_tasks"}
    settings["weighting"] = {"name": "tiny_user_equal", "options": {}}
    if imports is not None:
        settings["imports"] = imports
    return settings


def write_user_code(root: Path) -> None:
    (root / f"{MODULE}.py").write_text(textwrap.dedent(USER_CODE))


def adapmtl(*args: str | Path, cwd: Path, user_code: Path) -> subprocess.CompletedProcess:
    """``python -m adapmtl ARGS`` in a fresh interpreter, the user's code on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(user_code)])}
    return subprocess.run(
        [sys.executable, "-m", "adapmtl", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_unknown_component_says_how_to_load_user_code(tmp_path, tiny_settings):
    write_user_code(tmp_path)
    config = tmp_path / "user.yaml"
    config.write_text(yaml.safe_dump(user_settings(tiny_settings, imports=None)))
    work = tmp_path / "work"
    work.mkdir()

    without = adapmtl("config", "show", "--config", config, cwd=work, user_code=tmp_path)
    assert without.returncode == 2
    assert "unknown task set 'tiny_user_tasks'" in without.stderr
    assert "--import MODULE" in without.stderr

    shown = adapmtl(
        "config", "show", "--config", config, "--import", MODULE, cwd=work, user_code=tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    assert "name: tiny_user" in shown.stdout


def test_a_missing_module_is_named(tmp_path, tiny_settings, monkeypatch):
    from adapmtl.config import from_dict

    settings = user_settings(tiny_settings, imports=["no_such_user_module"])
    with pytest.raises(UserError, match="imports: no module named 'no_such_user_module'"):
        from_dict(settings)
    (tmp_path / "needs_a_dependency.py").write_text("import not_installed_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    settings["imports"] = ["needs_a_dependency"]
    with pytest.raises(
        UserError, match="importing 'needs_a_dependency' failed: No module named 'not_installed"
    ):
        from_dict(settings)


@pytest.mark.slow
def test_every_command_on_the_run_imports_the_recorded_user_code(tmp_path, tiny_settings):
    code = tmp_path / "code"
    code.mkdir()
    write_user_code(code)
    work = tmp_path / "work"
    work.mkdir()
    config = work / "user.yaml"
    config.write_text(yaml.safe_dump(user_settings(tiny_settings, imports=None)))
    run = work / "run"

    trained = adapmtl(
        "train", "--config", config, "--out", run, "--import", MODULE, "--quiet",
        cwd=work, user_code=code,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["imports"] == [MODULE]

    # each command in a fresh interpreter, without --import: the run's config brings it in
    evaluated = adapmtl("eval", run, "--json", cwd=work, user_code=code)
    assert evaluated.returncode == 0, evaluated.stderr
    assert set(json.loads(evaluated.stdout)["metrics"]) == {"seg", "depth"}

    reported = adapmtl("report", run, "--json", cwd=work, user_code=code)
    assert reported.returncode == 0, reported.stderr
    assert set(json.loads(reported.stdout)["components"]) == {"backbone", "seg", "depth"}

    exported = adapmtl("export", run, "-o", work / "user.safetensors", cwd=work, user_code=code)
    assert exported.returncode == 0, exported.stderr

    benched = adapmtl(
        "bench", work / "user.safetensors", "--input-size", "16x16", "--repeats", "1",
        "--layer-repeats", "1", "--kernels", "csr", cwd=work, user_code=code,
    )  # fmt: skip
    assert benched.returncode == 0, benched.stderr
    assert benched.stdout.startswith("tiny_user, input 1x3x16x16")

    suite = work / "suite.yaml"
    suite.write_text(
        yaml.safe_dump(
            {
                "name": "user-suite",
                "base": "run/config.yaml",
                "seeds": [0],
                "targets": [0.5],
                "runs": [{"name": "dense", "method": {"name": "dense", "target": None}}],
            }
        )
    )
    planned = adapmtl("compare", "--suite", suite, "--plan", cwd=work, user_code=code)
    assert planned.returncode == 0, planned.stderr
    assert "dense" in planned.stdout


def test_the_import_flag_names_a_missing_module(capsys):
    from adapmtl.cli import main

    assert main(["config", "show", "--import", "no_such_user_module"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("adapmtl config: error: --import: no module named 'no_such_user_module'")


def test_compare_import_is_recorded_in_every_suite_run(tmp_path, tiny_settings):
    """``compare --import M`` reaches every run's config (after the run's own imports, once),
    so later commands on a suite run import M the way they do for ``train --import M``."""
    from adapmtl.analysis.suite import load_suite, plan

    (tmp_path / "base.yaml").write_text(yaml.safe_dump(tiny_settings))
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(
        yaml.safe_dump(
            {
                "name": "imports",
                "base": "base.yaml",
                "seeds": [0],
                "runs": [
                    {"name": "dense", "method": {"name": "dense", "target": None}},
                    {
                        "name": "own",
                        "method": {"name": "snip", "target": 0.5},
                        "config": {"imports": ["textwrap", "json"]},
                    },
                ],
            }
        )
    )
    planned = plan(load_suite(suite_file, imports=["json", "copy"]), tmp_path / "out")
    assert {p.run.name: p.config.imports for p in planned} == {
        "dense": ["json", "copy"],
        "own": ["textwrap", "json", "copy"],
    }
