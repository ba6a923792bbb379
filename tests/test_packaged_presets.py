"""Preset configs shipped in the package, addressed by name (issue 15): names resolve to the
packaged files, paths still win, ``base:`` includes work from inside the package, the clone's
``configs`` is the same folder, and ``adapmtl config list`` shows every preset."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from adapmtl.cli import main
from adapmtl.config import load_config
from adapmtl.config_presets import CONFIG_DIR, preset_path, presets
from adapmtl.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CLONE = ROOT / "configs"


def test_the_clones_configs_are_the_packaged_presets():
    assert CLONE.resolve() == CONFIG_DIR.resolve()
    assert CONFIG_DIR.is_relative_to(ROOT / "src" / "adapmtl")
    files = CLONE.rglob("*.yaml")
    in_clone = sorted(p.relative_to(CLONE).with_suffix("").as_posix() for p in files)
    assert [p.name for p in presets()] == in_clone
    assert "nyuv2/resnet34_adapmtl" in in_clone and "suites/scenes_cpu" in in_clone


@pytest.mark.parametrize(
    "spec",
    [
        "nyuv2/resnet34_adapmtl",
        "nyuv2/resnet34_adapmtl.yaml",
        "configs/nyuv2/resnet34_adapmtl.yaml",
        Path("nyuv2/resnet34_adapmtl"),
    ],
)
def test_a_name_loads_the_packaged_file_with_its_base(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # away from the clone's configs/
    assert preset_path(spec) == CONFIG_DIR / "nyuv2" / "resnet34_adapmtl.yaml"
    config = load_config(spec)
    # resnet34_adapmtl.yaml names only its method; the model and data come from its base.yaml
    own = yaml.safe_load((CONFIG_DIR / "nyuv2" / "resnet34_adapmtl.yaml").read_text())
    base = yaml.safe_load((CONFIG_DIR / "nyuv2" / "base.yaml").read_text())
    assert own["base"] == "base.yaml"
    assert config.method.name == own["method"]["name"] == "adapmtl"
    assert config.data.name == base["data"]["name"]
    assert config.model.name == "deeplab_resnet34"


def test_a_path_wins_over_a_preset_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "nyuv2" / "resnet34_adapmtl.yaml"
    mine.parent.mkdir()
    mine.write_text("train: {iterations: 7}\n")
    assert preset_path("nyuv2/resnet34_adapmtl.yaml") == Path("nyuv2/resnet34_adapmtl.yaml")
    assert load_config("nyuv2/resnet34_adapmtl.yaml").train.iterations == 7
    # without the suffix no file exists, so the name reads the packaged preset
    assert load_config("nyuv2/resnet34_adapmtl").train.iterations != 7


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("nyuv2/resnet34_adapmt", "did you mean 'nyuv2/resnet34_adapmtl'"),
        ("../pyproject", "no packaged preset is called '../pyproject'"),
        ("no/such/file.yaml", "config file no/such/file.yaml does not exist"),
    ],
)
def test_unknown_names_say_what_was_tried(spec, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="adapmtl config list") as err:
        preset_path(spec)
    assert expected in str(err.value)


def test_config_list_shows_every_preset(capsys):
    assert main(["config", "list"]) == 0
    out = capsys.readouterr().out
    runs, suites = out.split("suites (adapmtl compare --suite NAME):")
    for preset in presets():
        assert preset.name in (suites if preset.name.startswith("suites/") else runs)
    assert "Paper Table 1: NYUv2 (3 tasks), Deeplab-ResNet34" in suites
    assert main(["config", "list", "--config", "x"]) == 2


def test_commands_take_preset_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["config", "show", "--config", "scenes/adapmtl_cpu"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["method"]["target"] == 0.9
    assert main(["compare", "--suite", "suites/scenes_cpu", "--plan"]) == 0
    assert "dense" in capsys.readouterr().out


def test_a_preset_name_gets_the_run_directory_of_its_file(tmp_path, monkeypatch):
    from adapmtl.commands.train import default_run_dir

    monkeypatch.chdir(tmp_path)
    expected = Path("runs/taskonomy/resnet34_dense")
    assert default_run_dir(Path("taskonomy/resnet34_dense")) == expected
    assert default_run_dir(CLONE / "taskonomy" / "resnet34_dense.yaml") == expected
