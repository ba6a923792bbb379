"""report(): counts on a small model whose weights and thresholds are chosen by hand."""

from __future__ import annotations

import json

import pytest
import torch

from adapmtl.sparsity import freeze_masks, overall_sparsity, report, sparsify, thresholds
from sparsity_toys import LinearMTL, logit, single_thread

_single_thread = pytest.fixture(autouse=True)(single_thread)

# Weights chosen so every |w| is at least 0.01 away from its threshold. Counting by hand:
# backbone (alpha 0.25): layer 0 survivors 0.3 0.4 0.5 0.6 -> 4 of 6; layer 2 survivors 0.26 0.9
# (the stored 0.0 and -0.24 are zero) -> 2 of 4; head a (alpha 0.1): 0.5 0.7 -> 2 of 4;
# head b (alpha 0.3): none -> 0 of 2. Overall 8 of 16 nonzero.
WEIGHTS = {
    "backbone.0": [[0.1, -0.2, 0.3], [-0.4, 0.5, -0.6]],
    "backbone.2": [[0.26, -0.24], [0.9, 0.0]],
    "heads.a": [[0.05, -0.5], [0.7, 0.01]],
    "heads.b": [[0.2, -0.02]],
}
ALPHAS = {"backbone": 0.25, "a": 0.1, "b": 0.3}


def _model(grouping: str = "component"):
    model = sparsify(LinearMTL(3, 2, 2, 1), grouping=grouping, init=-6.0)
    with torch.no_grad():
        for path, values in WEIGHTS.items():
            stored = model.get_submodule(path).parametrizations.weight.original
            stored.copy_(torch.tensor(values))
        for group, theta in thresholds(model).items():
            theta.fill_(logit(ALPHAS.get(group, 0.25)))
    return model


def test_counts_overall_per_component_per_layer():
    r = report(_model())
    assert (r.overall.nonzero, r.overall.total) == (8, 16)
    assert r.sparsity == pytest.approx(0.5)
    assert {n: (c.nonzero, c.total) for n, c in r.components.items()} == {
        "backbone": (6, 10),
        "a": (2, 4),
        "b": (0, 2),
    }
    assert r.components["b"].sparsity == 1.0
    assert [(x.path, x.component, x.group, x.mode, x.nonzero, x.total) for x in r.layers] == [
        ("backbone.0", "backbone", "backbone", "soft", 4, 6),
        ("backbone.2", "backbone", "backbone", "soft", 2, 4),
        ("heads.a", "a", "a", "soft", 2, 4),
        ("heads.b", "b", "b", "soft", 0, 2),
    ]
    assert r.layers[0].sparsity == pytest.approx(1 / 3)


def test_thresholds_are_reported_as_theta_and_alpha():
    r = report(_model())
    assert sorted(r.thresholds) == ["a", "b", "backbone"]
    for group, alpha in ALPHAS.items():
        assert r.thresholds[group]["alpha"] == pytest.approx(alpha, rel=1e-6)
        assert r.thresholds[group]["theta"] == pytest.approx(logit(alpha), rel=1e-6)
    assert r.layers[3].alpha == pytest.approx(0.3, rel=1e-6)


def test_sparsity_is_measured_on_the_effective_weight_not_the_stored_one():
    model = _model()
    stored_zeros = sum(
        int((model.get_submodule(p).parametrizations.weight.original == 0).sum()) for p in WEIGHTS
    )
    assert stored_zeros == 1
    assert report(model).overall.nonzero == 8
    assert overall_sparsity(model) == pytest.approx(0.5)


def test_layer_grouping_reports_one_threshold_per_layer():
    r = report(_model("layer"))
    assert sorted(r.thresholds) == ["backbone/0", "backbone/2", "heads/a", "heads/b"]
    # every layer at alpha 0.25: 4/6, 2/4, head a: 0.5 0.7 -> 2/4, head b: none -> 0/2
    assert [x.nonzero for x in r.layers] == [4, 2, 2, 0]
    assert {n: c.nonzero for n, c in r.components.items()} == {"backbone": 6, "a": 2, "b": 0}


def test_frozen_layers_report_mask_mode_with_the_same_counts():
    model = _model()
    freeze_masks(model)
    r = report(model)
    assert {x.mode for x in r.layers} == {"mask"}
    assert (r.overall.nonzero, r.overall.total) == (8, 16)


def test_dict_and_json_forms():
    d = report(_model()).to_dict()
    assert d["overall"] == {"nonzero": 8, "total": 16, "sparsity": pytest.approx(0.5)}
    assert d["components"]["backbone"] == {
        "nonzero": 6,
        "total": 10,
        "sparsity": pytest.approx(0.4),
    }
    assert d["thresholds"]["a"]["alpha"] == pytest.approx(0.1, rel=1e-6)
    assert d["layers"][1]["path"] == "backbone.2"
    assert d["layers"][1]["sparsity"] == pytest.approx(0.5)
    loaded = json.loads(report(_model()).to_json())
    assert loaded["overall"]["nonzero"] == 8
    assert loaded["components"]["b"]["sparsity"] == 1.0
    assert [layer["nonzero"] for layer in loaded["layers"]] == [4, 2, 2, 0]


def test_table_shows_the_numbers():
    text = str(report(_model()))
    counts, thetas = text.split("\n\n")
    rows = {line.split()[0]: line.split()[1:] for line in counts.splitlines()}
    assert rows["backbone"] == ["6", "10", "40.00%"]
    assert rows["a"] == ["2", "4", "50.00%"]
    assert rows["b"] == ["0", "2", "100.00%"]
    assert rows["overall"] == ["8", "16", "50.00%"]
    theta_rows = {line.split()[0]: line.split()[1:] for line in thetas.splitlines()}
    assert float(theta_rows["backbone"][0]) == pytest.approx(logit(0.25), abs=1e-4)
    assert float(theta_rows["b"][1]) == pytest.approx(0.3, rel=1e-4)
    assert rows["component"] == ["nonzero", "total", "sparsity"]
    assert thetas.splitlines()[0].split() == ["threshold", "group", "theta", "alpha"]
    layers = [line.split() for line in report(_model()).layer_table().splitlines()]
    assert layers[0] == ["layer", "component", "mode", "total", "sparsity"]
    assert layers[1:] == [
        ["backbone.0", "backbone", "soft", "6", "33.33%"],
        ["backbone.2", "backbone", "soft", "4", "50.00%"],
        ["heads.a", "a", "soft", "4", "50.00%"],
        ["heads.b", "b", "soft", "2", "100.00%"],
    ]
