"""Strict config loading: unknown keys, wrong types, ranges, overrides, base files."""

import re

import pytest

from adapmtl.config import Config, load_config
from adapmtl.errors import UserError


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_and_overrides():
    config = load_config(None, ["method.target=0.8", "optim.betas=[0.9, 0.99]"])
    assert isinstance(config, Config)
    assert config.method.target == 0.8
    assert config.optim.betas == [0.9, 0.99]


def test_unknown_key_suggests_the_closest(tmp_path):
    path = write(tmp_path, "method:\n  tarjet: 0.9\n")
    with pytest.raises(UserError, match=r"unknown config key 'method.tarjet'.*'target'"):
        load_config(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method.target=1.5", "method.target"),
        ("train.iterations=ten", "train.iterations: expected an integer"),
        ("train.iterations=2.5", "train.iterations: expected an integer"),
        ("optim.lr=-1", "optim.lr"),
        ("train.device=tpu", "train.device"),
        ("weighting.name=dwa", "weighting.name"),
        ("weighting.options.window=1", "weighting.options.window"),
        ("train.deterministic=maybe", "expected true or false"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(UserError, match=message):
        load_config(None, [override])


def test_malformed_yaml_names_the_file(tmp_path):
    path = write(tmp_path, "model: [unclosed\n")
    with pytest.raises(UserError, match=r"c\.yaml is not valid YAML"):
        load_config(path)


def test_missing_file():
    with pytest.raises(UserError, match="does not exist"):
        load_config("no/such/file.yaml")


def test_base_file_merges_under_the_file(tmp_path):
    write(tmp_path, "train:\n  iterations: 5\n  seed: 3\n", "base.yaml")
    path = write(tmp_path, "base: base.yaml\ntrain:\n  iterations: 7\n")
    config = load_config(path)
    assert (config.train.iterations, config.train.seed) == (7, 3)


def test_round_trip_through_yaml(tmp_path):
    config = load_config(None, ["train.iterations=42", "data.options={size: [32, 32]}"])
    again = load_config(write(tmp_path, config.to_yaml()))
    assert again == config


# One validation path: every option is checked against the callee it is passed to, by every
# command, and the message names where the bad key was set.
CPU = "configs/scenes/adapmtl_cpu.yaml"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("method.options.inti=3", r"'method.options.inti' \(did you mean 'init'\?\)"),
        ("method.options.init=abc", r"method.options.init: expected a number, got 'abc'"),
        ("data.options.siz=32", r"'data.options.siz' \(did you mean 'size'\?\)"),
        ("data.options.size=32", r"data.options.size: expected a list, got 32"),
        ("data.train_options.nn=3", r"'data.train_options.nn' \(did you mean 'n'\?\)"),
        ("weighting.options.windw=3", r"'weighting.options.windw' \(did you mean 'window'\?\)"),
        ("weighting.options.lam=0", r"weighting.options.lam: expected > 0, got 0"),
        ("weighting.options.use_param_ratio=3", r"use_param_ratio: expected true or false"),
        ("tasks.options.seg_clases=3", r"'tasks.options.seg_clases' \(did you mean 'seg_classes'"),
        ("tasks.options.options={seg: {miuo: x}}", r"'miuo' \(did you mean 'miou'\?\)"),
        ("tasks.names=[seg, nomal]", r"tasks.names: unknown task 'nomal' \(did you mean 'normal'"),
        ("model.options.widht=0.5", r"'model.options.widht' \(did you mean 'width'\?\)"),
        ("model.options.width=wide", r"model.options.width: expected a number"),
        ("method.options.level=x", r"method.options.level: expected one of \('schedule'"),
        ("train.iteratons=5", r"'train.iteratons' \(did you mean 'iterations'\?\)"),
        ("trian.iterations=5", r"'trian' \(did you mean 'train'\?\)"),
    ],
)
def test_option_errors_name_the_set_and_suggest(override, expected):
    with pytest.raises(UserError) as info:
        load_config(CPU, [override])
    message = str(info.value)
    assert message.startswith(f"--set {override}: "), message
    assert CPU not in message
    assert re.search(expected, message), message


def test_an_option_typo_in_the_file_names_the_file(tmp_path):
    path = write(tmp_path, "weighting:\n  options:\n    windw: 3\n")
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}: .*'window'"):
        load_config(path, ["train.iterations=5"])


def test_the_file_wins_the_blame_when_the_set_is_elsewhere(tmp_path):
    path = write(tmp_path, "method:\n  options:\n    inti: 3\n")
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}: .*did you mean 'init'"):
        load_config(path, ["method.target=0.5"])


def _cli(argv, capsys):
    from adapmtl.cli import main

    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("override", ["model.options.widht=0.5", "data.options.siz=32"])
def test_every_command_rejects_what_config_show_rejects(override, tmp_path, capsys):
    shown, show_err = _cli(["config", "show", "--config", CPU, "--set", override], capsys)
    out = str(tmp_path / "run")
    trained, train_err = _cli(["train", "--config", CPU, "--out", out, "--set", override], capsys)
    demo, demo_err = _cli(["demo", "--out", out, "--set", override], capsys)
    compared, compare_err = _cli(
        ["compare", "--suite", "configs/suites/scenes_cpu.yaml", "--plan", "--set", override],
        capsys,
    )
    assert (shown, trained, demo, compared) == (2, 2, 2, 2)
    key = override.split("=")[0]
    for err in (show_err, train_err, demo_err, compare_err):
        assert f"'{key}' (did you mean" in err, err
        assert "Traceback" not in err and "__init__()" not in err
    assert not (tmp_path / "run").exists()
