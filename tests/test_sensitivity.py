"""Sensitivity sweeps: one component magnitude-pruned to each level, the others untouched, every
task evaluated; expectations from NumPy sorts and hand-made metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adapmtl.analysis.sensitivity import points_table, prunable_model, prune_component, sweep
from adapmtl.errors import UserError
from adapmtl.sparsity import report, sparsify
from adapmtl.tasks.score import delta_t
from methods_harness import TinyMultiTask, top_k_np


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny tensors: threads only add contention (conftest restores)


def tiny() -> TinyMultiTask:
    torch.manual_seed(0)
    return TinyMultiTask()


def effective(model) -> dict[str, np.ndarray]:
    return {
        path: m.weight.detach().numpy().copy()
        for path, m in model.named_modules()
        if isinstance(m, torch.nn.Conv2d)
    }


def test_prune_component_is_a_magnitude_top_k_within_that_component_only():
    model = prunable_model(tiny())
    before = effective(model)
    prune_component(model, "a", 0.8)
    after = effective(model)
    head_a = {p: np.abs(w) for p, w in before.items() if p.startswith("heads.a")}
    total = sum(w.size for w in head_a.values())
    expected = top_k_np(head_a, round(0.2 * total))
    for path, w in after.items():
        if path in expected:
            assert np.array_equal(w != 0, expected[path]), path
            assert np.array_equal(w[expected[path]], before[path][expected[path]])
        else:
            assert np.array_equal(w, before[path]), path  # other components untouched
    assert report(model).components["a"].sparsity == pytest.approx(0.8, abs=1 / total)


def test_heads_are_pruned_jointly_and_a_lower_level_never_revives_weights():
    model = prunable_model(tiny())
    prune_component(model, "heads", 0.9)
    rep = report(model).components
    heads_total = rep["a"].total + rep["b"].total
    kept = rep["a"].nonzero + rep["b"].nonzero
    assert kept == round(0.1 * heads_total)
    before = effective(model)
    prune_component(model, "heads", 0.5)
    for path, w in effective(model).items():
        assert np.array_equal(w, before[path])


def test_a_soft_threshold_checkpoint_is_pruned_on_its_effective_weights():
    model = sparsify(tiny(), init=-3.0)
    expected = effective(model)  # S(W, alpha): zeros below alpha, survivors shrunk
    plain = prunable_model(model)
    for path, w in effective(plain).items():
        assert np.allclose(w, expected[path])
    assert report(plain).sparsity == pytest.approx(report(model).sparsity)


def test_sweep_rows_measure_each_level_against_the_model_as_loaded():
    directions = {"a": {"l1": True}, "b": {"l1": True}}

    def evaluate(model):
        weights = effective(model)
        return {
            t: {"l1": float(sum(np.abs(w).sum() for p, w in weights.items() if t in p))}
            for t in ("a", "b")
        }

    def score(metrics, reference):
        per_task, overall = delta_t(metrics, reference, directions)
        return {"per_task": per_task, "overall": overall}

    points = sweep(
        tiny(),
        {"a": None, "b": None},
        evaluate,
        ["a", "backbone"],
        [0.5, 0.9],
        fixed={"b": 0.7},
        score=score,
    )
    assert [(p.component, p.level) for p in points] == [
        ("as loaded", None),
        ("a", 0.5),
        ("a", 0.9),
        ("backbone", 0.5),
        ("backbone", 0.9),
    ]
    assert points[0].delta_t["overall"] == 0.0
    assert points[0].sparsity["b"] == pytest.approx(0.7, abs=0.01)
    assert points[2].sparsity["a"] == pytest.approx(0.9, abs=0.01)
    assert points[2].sparsity["backbone"] == 0.0
    # head b is unchanged by pruning a: its Delta_T stays 0, task a loses l1 mass
    assert points[2].delta_t["per_task"]["b"] == 0.0
    assert points[2].delta_t["per_task"]["a"] < points[1].delta_t["per_task"]["a"] < 0
    table = points_table(points, ["a", "b"])
    assert table.count("\n") == len(points) + 1


def test_unknown_component_and_bad_levels_are_user_errors():
    def never(model):
        raise AssertionError("evaluated before the input was checked")

    with pytest.raises(UserError, match="--component 'depth'"):
        sweep(tiny(), {}, never, ["depth"], [0.5], score=lambda m, r: {})
    with pytest.raises(UserError, match="--levels"):
        sweep(tiny(), {}, never, ["a"], [1.5], score=lambda m, r: {})
