"""Bad and hostile input (docs/reliability.md): every case exits with code 2, prints one line
naming the file, key or value, and changes no existing file (nor creates one)."""

from __future__ import annotations

import ast
import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from adapmtl.cli import main
from adapmtl.config import from_dict
from adapmtl.engine.trainer import Trainer

pytestmark = pytest.mark.slow

SRC = Path(__file__).parents[1] / "src" / "adapmtl"


def tiny(**changes) -> dict:
    from conftest import TINY

    settings = copy.deepcopy(TINY)
    settings["train"].update(iterations=1, val_every=1)
    settings["data"]["val_options"] = {"n": 2}
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        settings[section][key] = value
    return settings


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def fails_cleanly(argv: list[str], where: Path, capsys, *expected: str) -> str:
    """Run the CLI; it must exit 2 with one line containing ``expected`` and leave ``where``
    exactly as it was."""
    before = snapshot(where)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("adapmtl "), err
    for text in expected:
        assert text in err, (text, err)
    assert snapshot(where) == before
    return err


class Plant:
    """Unpickling this creates a file: a stand-in for code an attacker's pickle would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A finished tiny run, and one of another model and task set."""
    root = tmp_path_factory.mktemp("runs")
    Trainer(from_dict(tiny()), root / "tiny", verbose=False).fit()
    other = tiny(tasks__names=["seg", "depth"])
    other["model"]["options"]["head_channels"] = 8
    Trainer(from_dict(other), root / "other", verbose=False).fit()
    return {"tiny": root / "tiny", "other": root / "other"}


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model: [unclosed\ntrain:\n  iterations: 3\n", "is not valid YAML: while parsing"),
        ("model:\n  name: x\n\tb: 1\n", "(line 3, column 1)"),
        ("- just\n- a list\n", "expected a mapping at the top level"),
        ("methd:\n  name: dense\n", "unknown config key 'methd'"),
        ("train:\n  iteratons: 10\n", "unknown config key 'train.iteratons'"),
        ("train:\n  iterations: ten\n", "train.iterations: expected an integer, got 'ten'"),
        ("optim:\n  lr: [0.1]\n", "optim.lr: expected a number"),
        ("train:\n  deterministic: 'yes'\n", "train.deterministic: expected true or false"),
        ("method:\n  target: 1.5\n", "method.target: expected a sparsity in (0, 1), got 1.5"),
        ("method:\n  target: 0\n", "method.target: expected a sparsity in (0, 1)"),
        ("optim:\n  lr: 0\n", "optim.lr: expected > 0, got 0.0"),
        ("optim:\n  lr: -0.001\n", "optim.lr: expected > 0"),
        ("weighting:\n  options: {window: 1}\n", "weighting.options.window: expected an integer"),
        ("weighting:\n  options: {window: 2.5}\n", "weighting.options.window"),
        ("data:\n  batch_size: 0\n", "data.batch_size: expected > 0"),
    ],
)
def test_bad_configs(tmp_path, capsys, text, expected):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    fails_cleanly(
        ["train", "--config", str(config), "--out", str(tmp_path / "run")],
        tmp_path,
        capsys,
        str(config),
        expected,
    )


def test_a_missing_config_file(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    fails_cleanly(["train", "--config", str(missing)], tmp_path, capsys, f"{missing} does not")


# ------------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def nyuv2_files(tmp_path_factory) -> Path:
    from adapmtl.data.writer import write_scenes

    root = tmp_path_factory.mktemp("data") / "nyuv2"
    write_scenes("nyuv2-adashare", root, n=2, size=(16, 16), n_test=1)
    return root


def nyuv2_config(tmp_path: Path, root: Path) -> Path:
    settings = tiny()
    settings["tasks"] = {"preset": "nyuv2"}
    settings["data"] = {
        "name": "nyuv2_adashare",
        "root": str(root),
        "val_split": "test",
        "batch_size": 2,
        "options": {"size": [16, 16]},
    }
    config = tmp_path / "nyuv2.yaml"
    config.write_text(yaml.safe_dump(settings))
    return config


def listing_entries(root: Path) -> dict:
    return json.loads((root / "nyu_v2_3task.json").read_text())


@pytest.mark.parametrize("fault", ["root", "listing", "image", "depth", "corrupt", "outside"])
def test_missing_corrupt_and_escaping_data_files(tmp_path, capsys, nyuv2_files, fault):
    root = tmp_path / "nyuv2"
    shutil.copytree(nyuv2_files, root)
    entries = listing_entries(root)
    image, _, _, depth = (root / p for p in entries["train"][0])
    if fault == "root":
        shutil.rmtree(root)
        expected = [f"data root {str(root)!r} does not exist"]
    elif fault == "listing":
        (root / "nyu_v2_3task.json").unlink()
        expected = ["missing file", "nyu_v2_3task.json"]
    elif fault == "image":
        image.unlink()
        expected = ["missing file", str(image)]
    elif fault == "depth":
        depth.unlink()
        expected = ["missing file", str(depth)]
    elif fault == "corrupt":
        image.write_bytes(image.read_bytes()[:20])
        expected = [str(image)]
    else:
        entries["train"][0][0] = "../../etc/passwd"
        (root / "nyu_v2_3task.json").write_text(json.dumps(entries))
        expected = ["'../../etc/passwd' points outside the data root"]
    config = nyuv2_config(tmp_path, root)
    fails_cleanly(
        ["train", "--config", str(config), "--out", str(tmp_path / "run")],
        tmp_path,
        capsys,
        *expected,
    )


# ------------------------------------------------------------------------ checkpoints
def bad_checkpoint(kind: str, directory: Path, runs: dict[str, Path]) -> tuple[Path, str]:
    """A checkpoint file of ``kind`` and the text its refusal must contain."""
    path = directory / f"{kind}.pt"
    good = runs["tiny"] / "last.pt"
    if kind == "malicious":
        torch.save({"model": Plant(directory / "pwned"), "config": {}, "iteration": 0}, path)
        return path, "(Unsupported global: GLOBAL getattr); refusing to unpickle it"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        return path, "is unreadable or truncated"
    if kind == "not_a_checkpoint":
        torch.save({"weights": torch.ones(2)}, path)
        return path, "is not an adapmtl checkpoint (no 'config' entry)"
    # the weights of one model under the config of another
    state = torch.load(good, weights_only=True)
    state["config"]["model"]["options"]["head_channels"] = 8
    torch.save(state, path)
    return path, "its weights do not fit the model its config describes ('deeplab_resnet34_cpu'"


KINDS = ["malicious", "truncated", "not_a_checkpoint", "mismatched"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", ["eval", "report", "resume", "init-from"])
def test_bad_checkpoints_are_refused(tmp_path, capsys, runs, command, kind):
    path, expected = bad_checkpoint(kind, tmp_path, runs)
    config = runs["tiny"] / "config.yaml"
    if command in ("eval", "report"):
        argv = [command, str(path)]
    elif command == "resume":
        run = tmp_path / "run"
        shutil.copytree(runs["tiny"], run)
        shutil.copy(path, run / "last.pt")
        path = run / "last.pt"
        argv = ["train", "--out", str(run), "--resume"]
        if kind == "mismatched":  # a checkpoint of a sound run, but not of this one
            shutil.copy(runs["other"] / "last.pt", run / "last.pt")
            expected = "its checkpoint was made with a different config"
    else:
        argv = ["train", "--config", str(config), "--out", str(tmp_path / "new")]
        argv += ["--init-from", str(path)]
    err = fails_cleanly(argv, tmp_path, capsys, expected)
    assert str(path if command != "resume" else path.parent) in err
    assert not (tmp_path / "pwned").exists()


def test_the_planted_pickle_would_have_run_code(tmp_path, runs):
    """The malicious checkpoint is a real threat: an unsafe load creates the file."""
    path, _ = bad_checkpoint("malicious", tmp_path, runs)
    torch.load(path, weights_only=False)
    assert (tmp_path / "pwned").exists()


def test_init_from_a_run_of_another_model_and_task_set(tmp_path, capsys, runs):
    argv = ["train", "--config", str(runs["tiny"] / "config.yaml"), "--out", str(tmp_path / "new")]
    argv += ["--init-from", str(runs["other"] / "last.pt")]
    fails_cleanly(argv, tmp_path, capsys, "--init-from", "state dict does not fit the model")


# ------------------------------------------------------------------------ run directory
def test_an_output_directory_holding_another_run_is_refused(tmp_path, capsys, runs):
    run = tmp_path / "run"
    shutil.copytree(runs["other"], run)
    config = runs["tiny"] / "config.yaml"
    fails_cleanly(
        ["train", "--config", str(config), "--out", str(run)],
        tmp_path,
        capsys,
        "already holds a run",
        "pass --resume to continue it or --overwrite to replace it",
    )
    fails_cleanly(
        ["train", "--config", str(config), "--out", str(run), "--resume"],
        tmp_path,
        capsys,
        "its checkpoint was made with a different config",
    )


def test_every_torch_load_in_the_library_is_weights_only():
    calls = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                keywords = {k.arg: k.value for k in node.keywords}
                safe = isinstance(keywords.get("weights_only"), ast.Constant) and (
                    keywords["weights_only"].value is True
                )
                calls.append((f"{path.relative_to(SRC)}:{node.lineno}", safe))
    assert calls, "no torch.load found: the scan is broken"
    assert [where for where, safe in calls if not safe] == []
