"""Delta_T (paper Eq. 7) as properties over random results: zero against the reference itself,
the sign flip with the metric direction, the sum and mean forms, scale invariance, a single
task, and the formula against an independent NumPy computation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapmtl.tasks import delta_t

SETTINGS = settings(max_examples=80, deadline=None)
values = st.floats(0.01, 100.0)


@st.composite
def scored(draw, max_tasks: int = 4):
    """(results, dense, directions) with 1-3 metrics for each of 1-``max_tasks`` tasks."""
    tasks = [f"t{i}" for i in range(draw(st.integers(1, max_tasks)))]
    dense, results, directions = {}, {}, {}
    for task in tasks:
        metrics = [f"m{j}" for j in range(draw(st.integers(1, 3)))]
        dense[task] = {m: draw(values) for m in metrics}
        results[task] = {m: draw(values) for m in metrics}
        directions[task] = {m: draw(st.booleans()) for m in metrics}
    return results, dense, directions


def numpy_delta(results, dense, directions, reduce: str) -> tuple[dict, float]:
    per_task = {}
    for task, reference in dense.items():
        metrics = list(reference)
        m = np.array([results[task][k] for k in metrics])
        d = np.array([reference[k] for k in metrics])
        sign = np.where([directions[task][k] for k in metrics], 1.0, -1.0)
        deltas = sign * (m - d) / d * 100
        per_task[task] = deltas.sum() if reduce == "sum" else deltas.mean()
    return per_task, float(np.mean(list(per_task.values())))


@SETTINGS
@given(case=scored(), reduce=st.sampled_from(["sum", "mean"]))
def test_delta_t_equals_eq7_computed_with_numpy(case, reduce):
    results, dense, directions = case
    per_task, overall = delta_t(results, dense, directions, reduce=reduce)
    expected_tasks, expected = numpy_delta(results, dense, directions, reduce)
    assert per_task == pytest.approx(expected_tasks, rel=1e-9, abs=1e-9)
    assert overall == pytest.approx(expected, rel=1e-9, abs=1e-9)


@SETTINGS
@given(case=scored())
def test_the_reference_against_itself_scores_zero(case):
    _, dense, directions = case
    for reduce in ("sum", "mean"):
        per_task, overall = delta_t(dense, dense, directions, reduce=reduce)
        assert set(per_task.values()) == {0.0} and overall == 0.0


@SETTINGS
@given(case=scored())
def test_flipping_every_direction_flips_the_sign(case):
    results, dense, directions = case
    flipped = {t: {m: not up for m, up in d.items()} for t, d in directions.items()}
    per_task, overall = delta_t(results, dense, directions)
    per_flipped, overall_flipped = delta_t(results, dense, flipped)
    assert per_flipped == pytest.approx({t: -v for t, v in per_task.items()})
    assert overall_flipped == pytest.approx(-overall)


@SETTINGS
@given(case=scored())
def test_sum_form_is_the_mean_form_times_the_metric_count(case):
    results, dense, directions = case
    sums, overall_sum = delta_t(results, dense, directions, reduce="sum")
    means, overall_mean = delta_t(results, dense, directions, reduce="mean")
    for task, reference in dense.items():
        assert sums[task] == pytest.approx(means[task] * len(reference))
    if all(len(reference) == 1 for reference in dense.values()):
        assert overall_sum == pytest.approx(overall_mean)


@SETTINGS
@given(case=scored(), scale=st.floats(0.001, 1000.0))
def test_rescaling_a_metric_and_its_reference_alike_changes_nothing(case, scale):
    results, dense, directions = case
    task = next(iter(dense))
    metric = next(iter(dense[task]))
    scaled_results = {t: dict(m) for t, m in results.items()}
    scaled_dense = {t: dict(m) for t, m in dense.items()}
    scaled_results[task][metric] *= scale
    scaled_dense[task][metric] *= scale
    per_task, overall = delta_t(results, dense, directions)
    per_scaled, overall_scaled = delta_t(scaled_results, scaled_dense, directions)
    assert per_scaled == pytest.approx(per_task, rel=1e-9, abs=1e-9)
    assert overall_scaled == pytest.approx(overall, rel=1e-9, abs=1e-9)


@SETTINGS
@given(case=scored(max_tasks=1), better=st.floats(1.001, 2.0))
def test_single_task_overall_is_its_task_score_and_improving_raises_it(case, better):
    results, dense, directions = case
    (task,) = dense
    per_task, overall = delta_t(results, dense, directions)
    assert overall == per_task[task]
    metric = next(iter(dense[task]))
    improved = {task: dict(results[task])}
    up = directions[task][metric]
    improved[task][metric] *= better if up else 1 / better
    assert delta_t(improved, dense, directions)[1] > overall
