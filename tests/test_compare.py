"""Suites: loading and validation, the run plan, mean/spread aggregation and the CSV tables
(fast, no training)."""

from __future__ import annotations

import csv
import io
import statistics

import pytest
import yaml

from adapmtl.analysis import tables
from adapmtl.analysis.compare import Row, aggregate
from adapmtl.analysis.suite import load_suite, merge_run, plan
from adapmtl.errors import UserError

BASE = {
    "model": {"name": "deeplab_resnet34_cpu", "options": {"width": 0.125, "head_channels": 16}},
    "tasks": {"preset": "scenes", "names": ["seg", "normal"]},
    "data": {"name": "scenes", "batch_size": 4, "options": {"size": [32, 32]}},
    "weighting": {"name": "adaptive", "options": {"window": 4, "warmup": 4}},
    "train": {"iterations": 12},
}


def write_suite(tmp_path, **fields):
    suite = {
        "name": "unit",
        "seeds": [0, 1],
        "config": BASE,
        "runs": [
            {
                "name": "dense",
                "method": {"name": "dense", "target": None, "options": {"keep_weights_at": 0}},
                "config": {"weighting": {"name": "equal"}},
            },
            {"name": "snip", "label": "SNIP", "method": {"name": "snip"}},
            {
                "name": "lth",
                "method": {"name": "lth", "options": {"dense_checkpoint": "{dense}/last.pt"}},
            },
        ],
    }
    suite.update(fields)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_plan_runs_dense_first_per_seed_and_fills_in_targets_and_the_dense_directory(tmp_path):
    suite = load_suite(write_suite(tmp_path, targets=[0.5, 0.9]))
    planned = plan(suite, tmp_path / "out")
    ids = [(p.seed, p.run_id) for p in planned]
    assert ids == [
        (0, "dense"),
        (0, "snip@50"),
        (0, "snip@90"),
        (0, "lth@50"),
        (0, "lth@90"),
        (1, "dense"),
        (1, "snip@50"),
        (1, "snip@90"),
        (1, "lth@50"),
        (1, "lth@90"),
    ]
    lth = planned[4]
    assert lth.config.method.target == 0.9 and lth.config.train.seed == 0
    assert lth.config.method.options["dense_checkpoint"] == str(
        (tmp_path / "out" / "seed0" / "dense").resolve() / "last.pt"
    )
    assert lth.run_dir == tmp_path / "out" / "seed0" / "lth@90"
    assert planned[1].label == "SNIP @50%"
    dense = planned[0]
    assert dense.config.method.target is None
    # the dense run switches weighting to equal and does not inherit the adaptive options
    assert dense.config.weighting.name == "equal" and dense.config.weighting.options == {}
    assert planned[1].config.weighting.options == {"window": 4, "warmup": 4}


def test_overrides_apply_to_every_run(tmp_path):
    suite = load_suite(write_suite(tmp_path), ["train.iterations=5"])
    assert {p.config.train.iterations for p in plan(suite, tmp_path)} == {5}


def test_merge_run_keeps_sibling_keys_and_drops_options_of_a_renamed_section():
    base = {"data": {"name": "scenes", "options": {"size": [8, 8]}, "batch_size": 4}}
    assert merge_run(base, {"data": {"batch_size": 2}}) == {
        "data": {"name": "scenes", "options": {"size": [8, 8]}, "batch_size": 2}
    }
    assert merge_run(base, {"data": {"name": "nyuv2_mtan", "root": "/d"}}) == {
        "data": {"name": "nyuv2_mtan", "batch_size": 4, "root": "/d"}
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"runz": []}, "unknown key 'runz'"),
        ({"seeds": []}, "'seeds' must be a non-empty list"),
        ({"seeds": [0, 0]}, "duplicates"),
        ({"targets": [1.5]}, "'targets' must be a list of sparsities"),
        ({"runs": [{"name": "snip", "method": {"name": "snip"}}]}, "exactly one run must use"),
        (
            {
                "runs": [
                    {"name": "dense", "method": {"name": "dense", "target": None}},
                    {"name": "x", "method": {"name": "snip", "options": {"batchez": 2}}},
                ]
            },
            "run 'x': .*method.options.batchez",
        ),
        (
            {
                "runs": [
                    {"name": "dense", "method": {"name": "dense", "target": None}},
                    {"name": "x", "method": {"name": "snip"}, "config": {"optim": {"lr": -1}}},
                ]
            },
            "run 'x': optim.lr",
        ),
        (
            {
                "runs": [
                    {"name": "dense", "method": {"name": "dense", "target": None}},
                    {"name": "dense", "method": {"name": "snip"}},
                ]
            },
            "used twice",
        ),
    ],
)
def test_bad_suites_name_the_problem(tmp_path, fields, message):
    with pytest.raises(UserError, match=message):
        load_suite(write_suite(tmp_path, **fields))


def test_missing_suite_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_suite(tmp_path / "nope.yaml")


def rows_for(run_id, values, sparsities):
    return [
        Row(
            run_id=run_id,
            label=run_id.upper(),
            seed=seed,
            target=0.9,
            method=run_id,
            metrics={"seg": {"miou": 20.0 + seed}, "depth": {"abs_err": 0.5 - 0.1 * seed}},
            delta_t={"per_task": {"seg": v, "depth": -v / 2}, "overall": v / 4},
            sparsity={"overall": 0.9, "backbone": s, "seg": 0.95, "depth": 0.97},
        )
        for seed, (v, s) in enumerate(zip(values, sparsities, strict=True))
    ]


def test_aggregate_gives_mean_and_sample_std_per_run_and_the_csv_holds_them():
    rows = rows_for("snip", [1.0, -2.0, 4.0], [0.7, 0.8, 0.6]) + rows_for("imp", [3.0], [0.5])
    aggregates = aggregate(rows)
    assert [a.run_id for a in aggregates] == ["snip", "imp"]
    snip = aggregates[0]
    assert snip.delta_t["seg"].mean == pytest.approx(1.0)
    assert snip.delta_t["seg"].std == pytest.approx(statistics.stdev([1.0, -2.0, 4.0]))
    assert snip.delta_t["overall"].values == [0.25, -0.5, 1.0]
    assert snip.sparsity["backbone"].mean == pytest.approx(0.7)
    assert snip.metrics["depth"]["abs_err"].mean == pytest.approx(0.4)
    assert aggregates[1].delta_t["seg"].std is None  # one seed: no spread

    table = list(csv.DictReader(io.StringIO(tables.aggregate_csv(aggregates, ["seg", "depth"]))))
    assert float(table[0]["delta_t/depth_mean"]) == pytest.approx(-0.5)
    assert float(table[0]["sparsity/backbone_std"]) == pytest.approx(0.1)
    assert table[1]["delta_t/seg_std"] == ""
    per_seed = list(csv.DictReader(io.StringIO(tables.per_seed_csv(rows, ["seg", "depth"]))))
    assert [float(r["delta_t/overall"]) for r in per_seed] == [0.25, -0.5, 1.0, 0.75]

    markdown = tables.spread_table(aggregates, ["seg", "depth"])
    assert "| SNIP | 3 | 1.00 ± 3.00 |" in markdown
    assert "+0.25, -0.50, +1.00" in markdown


def test_a_label_with_a_pipe_stays_in_its_cell():
    """Markdown rows escape "|" inside a cell: a label such as "lam * |W_B|" must not add
    columns to the row."""
    from adapmtl.analysis.tables import markdown_row

    row = markdown_row(["scale of |W_B| / sum |W_t|", "-1.5"])
    assert row == r"| scale of \|W_B\| / sum \|W_t\| | -1.5 |"
    assert len([c for c in row.replace(r"\|", "").split("|")[1:-1]]) == 2
