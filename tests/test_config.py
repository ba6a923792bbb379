"""Strict config loading: unknown keys, wrong types, ranges, overrides, base files."""

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
