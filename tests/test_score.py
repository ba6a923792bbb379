"""Delta_T on hand-computed cases, its pairing rule, and reference files."""

import json

import pytest

from adapmtl.errors import UserError
from adapmtl.tasks import delta_t, load_reference

DIRECTIONS = {"a": {"up": True, "down": False}, "b": {"err": False}}
DENSE = {"a": {"up": 50.0, "down": 2.0}, "b": {"err": 4.0}}


def test_hand_computed_sum_and_mean():
    # a/up: +10 % (55 vs 50); a/down: 2.5 vs 2.0 lower-is-better -> -25 %; b/err: 3 vs 4 -> +25 %.
    results = {"a": {"up": 55.0, "down": 2.5}, "b": {"err": 3.0}}
    per_task, overall = delta_t(results, DENSE, DIRECTIONS)
    assert per_task == pytest.approx({"a": -15.0, "b": 25.0})
    assert overall == pytest.approx(5.0)
    per_task, overall = delta_t(results, DENSE, DIRECTIONS, reduce="mean")
    assert per_task == pytest.approx({"a": -7.5, "b": 25.0})
    assert overall == pytest.approx(8.75)


def test_dense_against_itself_is_zero():
    per_task, overall = delta_t(DENSE, DENSE, DIRECTIONS)
    assert per_task == {"a": 0.0, "b": 0.0} and overall == 0.0


def test_only_pairs_of_the_reference_are_scored():
    results = {
        "a": {"up": 55.0, "down": 2.0, "extra": 1e9},
        "b": {"err": 4.0},
        "c": {"x": 1.0},  # a task the reference does not list
    }
    per_task, overall = delta_t(results, DENSE, DIRECTIONS)
    assert per_task == pytest.approx({"a": 10.0, "b": 0.0})
    assert overall == pytest.approx(5.0)


def test_missing_or_bad_entries_are_errors():
    with pytest.raises(ValueError, match=r"lack b/err"):
        delta_t({"a": {"up": 1.0, "down": 1.0}}, DENSE, DIRECTIONS)
    with pytest.raises(ValueError, match=r"direction.*b/err"):
        delta_t(DENSE, DENSE, {"a": DIRECTIONS["a"]})
    with pytest.raises(ValueError, match=r"dense a/up.*non-zero"):
        delta_t(DENSE, {"a": {"up": 0.0}}, DIRECTIONS)
    with pytest.raises(ValueError, match=r"reduce"):
        delta_t(DENSE, DENSE, DIRECTIONS, reduce="median")
    with pytest.raises(ValueError, match=r"not finite"):
        delta_t({"a": {"up": float("nan"), "down": 1.0}, "b": {"err": 1.0}}, DENSE, DIRECTIONS)
    with pytest.raises(ValueError, match=r"at least one metric"):
        delta_t(DENSE, {}, DIRECTIONS)


def test_load_reference_yaml_and_json(tmp_path):
    yaml_file = tmp_path / "dense.yaml"
    yaml_file.write_text("seg: {miou: 19.94, pixel_acc: 48.71}\ndepth:\n  abs_err: 0.64\n")
    assert load_reference(yaml_file) == {
        "seg": {"miou": 19.94, "pixel_acc": 48.71},
        "depth": {"abs_err": 0.64},
    }
    json_file = tmp_path / "dense.json"
    json_file.write_text(json.dumps({"keypoint": {"mae": 1}}))
    assert load_reference(json_file) == {"keypoint": {"mae": 1.0}}
    # JSON's exponent form: YAML 1.1 would read 1e-3 as a string, so JSON must be parsed as JSON
    json_file.write_text('{"depth": {"rel_err": 1e-3, "abs_err": 2E1}}')
    assert load_reference(json_file) == {"depth": {"rel_err": 0.001, "abs_err": 20.0}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "expected a mapping task -> metric"),
        ("seg: 3\n", "key 'seg'"),
        ("seg: {miou: high}\n", "seg.miou: expected a number"),
        ("seg: {miou: true}\n", "seg.miou: expected a number"),
        ("seg: {miou: [1\n", "not valid YAML"),
    ],
)
def test_load_reference_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "ref.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as info:
        load_reference(path)
    assert str(path) in str(info.value)


def test_load_reference_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"cannot read"):
        load_reference(tmp_path / "absent.yaml")


def test_an_empty_dense_reference_is_refused_by_name():
    message = r"^delta_t: the dense reference must list at least one metric per task$"
    for dense in ({}, {"seg": {}}):
        with pytest.raises(ValueError, match=message):
            delta_t({"seg": {"miou": 1.0}}, dense, {"seg": {"miou": True}})
