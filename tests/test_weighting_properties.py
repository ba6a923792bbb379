"""Adaptive weighting (paper Eq. 6) as properties: the formula against NumPy on random loss
histories, its invariants, the warm-up boundary of both modes, and resuming mid-run in every
mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from adapmtl.weighting import AdaptiveWeighting

SETTINGS = settings(max_examples=60, deadline=None)

histories = st.integers(2, 4).flatmap(
    lambda tasks: st.lists(
        st.lists(st.floats(0.05, 20.0), min_size=tasks, max_size=tasks), min_size=2, max_size=12
    )
)


def outputs(weighting: AdaptiveWeighting, rows) -> list[list[float]]:
    return [weighting.update(torch.tensor(row, dtype=torch.float64)).tolist() for row in rows]


def eq6_numpy(rows: np.ndarray, window: int, lam: float, ratio: float) -> np.ndarray:
    """beta_t = (r_t / mean_k r_k)^-1 * lam * ratio, r_t = mean |L - mean L| over the window /
    the current loss."""
    recent = rows[-window:]
    r = np.abs(recent - recent.mean(axis=0)).mean(axis=0) / rows[-1]
    return r.mean() / r * lam * ratio


def every_loss_moves(rows, window: int) -> bool:
    """True when every task's losses vary within every window prefix: a constant loss has r = 0
    only up to rounding, and whether rounding leaves it at exactly 0 is not a property of Eq. 6."""
    losses = np.array(rows)
    for i in range(2, len(rows) + 1):
        recent = losses[:i][-window:]
        spread = np.abs(recent - recent.mean(axis=0)).mean(axis=0) / losses[i - 1]
        if np.any(spread < 1e-6):
            return False
    return True


def tasks_for(rows) -> list[str]:
    return [f"t{i}" for i in range(len(rows[0]))]


@SETTINGS
@given(rows=histories, window=st.integers(2, 6), lam=st.floats(0.1, 5.0))
def test_paper_weights_equal_eq6_computed_with_numpy(rows, window, lam):
    assume(every_loss_moves(rows, window))
    ratio = 0.4
    weighting = AdaptiveWeighting(
        tasks_for(rows), window=window, warmup=0, lam=lam, param_ratio=ratio
    )
    got = outputs(weighting, rows)
    assert got[0] == [1.0] * len(rows[0])  # the first update sees one row: no deviation yet
    for i in range(1, len(rows)):
        beta = eq6_numpy(np.array(rows[: i + 1]), window, lam, ratio)
        np.testing.assert_allclose(got[i], beta, rtol=1e-5)
    # the inverse weights average to 1 / (lam * ratio): beta is the inverse of r over its mean
    if not np.allclose(got[-1], 1.0):
        assert np.mean(1.0 / np.array(got[-1])) == pytest.approx(1.0 / (lam * ratio), rel=1e-5)


@SETTINGS
@given(rows=histories, scale=st.floats(0.01, 100.0), data=st.data())
def test_weights_ignore_loss_scale_and_follow_task_order(rows, scale, data):
    assume(every_loss_moves(rows, 4))
    tasks = tasks_for(rows)
    base = outputs(AdaptiveWeighting(tasks, window=4, warmup=0, param_ratio=None), rows)[-1]
    scaled_rows = [[scale * v for v in row] for row in rows]
    scaled = outputs(AdaptiveWeighting(tasks, window=4, warmup=0, param_ratio=None), scaled_rows)
    np.testing.assert_allclose(scaled[-1], base, rtol=1e-4)
    order = data.draw(st.permutations(range(len(tasks))))
    permuted_rows = [[row[k] for k in order] for row in rows]
    permuted = outputs(
        AdaptiveWeighting(tasks, window=4, warmup=0, param_ratio=None), permuted_rows
    )
    np.testing.assert_allclose(permuted[-1], [base[k] for k in order], rtol=1e-5)


@SETTINGS
@given(rows=histories, window=st.integers(2, 6))
def test_official_weights_are_direct_and_sum_to_the_task_count(rows, window):
    tasks = tasks_for(rows)
    got = outputs(AdaptiveWeighting(tasks, mode="official", window=window, warmup=0), rows)
    losses = np.array(rows)
    d = np.abs(losses[:-1] - losses[1:]) / losses[1:]  # d_t^i = |L^{i-1} - L^i| / L^i
    for i in range(1, len(rows)):
        recent = d[:i][-window:]
        if recent.sum() > 0:
            mean = recent.mean(axis=0)
            np.testing.assert_allclose(got[i], len(tasks) * mean / mean.sum(), rtol=1e-5)
            assert sum(got[i]) == pytest.approx(len(tasks), rel=1e-5)


@pytest.mark.parametrize("mode", ["paper", "official"])
@pytest.mark.parametrize("warmup", [1, 3, 5])
def test_warmup_lasts_exactly_warmup_updates(mode, warmup):
    rng = np.random.default_rng(warmup)
    rows = rng.uniform(0.5, 2.0, size=(warmup + 3, 2)).tolist()
    w = AdaptiveWeighting(["a", "b"], mode=mode, window=8, warmup=warmup, param_ratio=None)
    got = outputs(w, rows)
    assert all(beta == [1.0, 1.0] for beta in got[:warmup])
    assert got[warmup] != [1.0, 1.0]


def test_official_first_weights_after_warmup_use_only_the_change_after_it():
    # warm-up of 3: updates 0-2 give 1, 1; update 3 records d = |L2 - L3| / L3 as the window's
    # only entry: a: |2 - 1| / 1 = 1, b: |3 - 6| / 6 = 1/2 -> beta = 2 d / sum d = 4/3, 2/3. A
    # warm-up ending one update early would also count |L1 - L2| / L2 = (1/2, 1/3).
    w = AdaptiveWeighting(["a", "b"], mode="official", window=10, warmup=3)
    got = outputs(w, [[4.0, 4.0], [1.0, 2.0], [2.0, 3.0], [1.0, 6.0]])
    assert got[:3] == [[1.0, 1.0]] * 3
    assert got[3] == pytest.approx([4 / 3, 2 / 3])


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "paper", "deviation": "window"},
        {"mode": "paper", "deviation": "adjacent"},
        {"mode": "official"},
    ],
    ids=["paper-window", "paper-adjacent", "official"],
)
@pytest.mark.parametrize("cut", [2, 3, 6])
def test_resumed_weighting_gives_every_later_output_of_the_uninterrupted_one(options, cut):
    rows = [[1.0 + 0.1 * i + 0.2 * (i % 2), 2.0 + 0.3 * (i % 3)] for i in range(10)]

    def fresh() -> AdaptiveWeighting:
        return AdaptiveWeighting(["a", "b"], window=4, warmup=2, param_ratio=0.5, **options)

    expected = outputs(fresh(), rows)
    first = fresh()
    outputs(first, rows[:cut])
    state = first.state_dict()
    second = fresh()
    second.load_state_dict(state)
    assert outputs(second, rows[cut:]) == expected[cut:]


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_a_rejected_update_names_the_task_and_changes_nothing(bad):
    w = AdaptiveWeighting(["a", "b"], window=4, warmup=0)
    outputs(w, [[1.0, 2.0], [2.0, 1.0]])
    before = w.state_dict()
    with pytest.raises(ValueError, match=r"finite, positive task losses.*b="):
        w.update(torch.tensor([1.0, bad]))
    after = w.state_dict()
    assert after["step"] == before["step"]
    assert torch.equal(after["history"], before["history"])
    assert torch.equal(after["previous"], before["previous"])


def test_a_state_for_other_tasks_or_another_mode_is_refused():
    state = AdaptiveWeighting(["a", "b"], window=4).state_dict()
    with pytest.raises(ValueError, match=r"for tasks \['a', 'b'\]"):
        AdaptiveWeighting(["a", "c"], window=4).load_state_dict(state)
    with pytest.raises(ValueError, match="in mode 'paper'"):
        AdaptiveWeighting(["a", "b"], mode="official", window=4).load_state_dict(state)
