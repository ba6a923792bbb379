"""Surface normals at the edges: pixels just either side of the within-threshold angles, and the
loss, which ignores the length of both vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adapmtl.tasks import NormalTask
from adapmtl.tasks.normal import WITHIN_DEGREES, angle_degrees


def vectors(columns) -> torch.Tensor:
    """[1, 3, 1, W] float32 from a list of W 3-vectors."""
    return torch.tensor(columns, dtype=torch.float32).T.reshape(1, 3, 1, len(columns))


def around(degrees: float, offset: float) -> list[float]:
    """A unit vector at ``degrees + offset`` degrees from (0, 0, 1)."""
    angle = math.radians(degrees + offset)
    return [math.sin(angle), 0.0, math.cos(angle)]


@pytest.mark.parametrize("offset", [1e-7, 1e-9])
def test_within_thresholds_split_pixels_just_either_side_of_each_angle(offset):
    # No float64 cosine maps to exactly 11.25, 22.5 or 30 degrees through arccos (the nearest
    # are 2-4 ulps away), so inclusive and exclusive counting cannot be told apart; what the
    # metric must get right is which side of each threshold a pixel falls on.
    preds = [around(d, sign * offset) for d in WITHIN_DEGREES for sign in (-1, 1)]
    pred = torch.tensor(preds, dtype=torch.float64).T.reshape(1, 3, 1, len(preds))
    target = torch.zeros_like(pred)
    target[:, 2] = 1.0
    angles = angle_degrees(pred, target).flatten().tolist()
    expected = [d + sign * offset for d in WITHIN_DEGREES for sign in (-1, 1)]
    assert angles == pytest.approx(expected, abs=offset / 10)
    metric = NormalTask().new_metric()
    metric.update(pred, target)
    result = metric.compute()
    # six pixels: just under 11.25 only counts for 11.25; just over 30 counts for none
    assert result["within_11.25"] == pytest.approx(100 / 6)
    assert result["within_22.5"] == pytest.approx(300 / 6)
    assert result["within_30"] == pytest.approx(500 / 6)


def test_loss_ignores_the_length_of_targets_and_predictions():
    # cosines by hand: (1,0,0) vs (0,2,0): 0; (3,0,0) vs (5,5,0): 1/sqrt(2); (0,0,-4) vs (0,0,7):
    # -1; a zero target is invalid and left out
    pred = vectors([[1, 0, 0], [3, 0, 0], [0, 0, -4], [1, 1, 1]])
    target = vectors([[0, 2, 0], [5, 5, 0], [0, 0, 7], [0, 0, 0]])
    expected = 1.0 - (0.0 + 1 / math.sqrt(2) - 1.0) / 3
    assert NormalTask().loss(pred, target).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_loss_is_unchanged_when_vectors_are_rescaled(seed):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(2, 3, 4, 4, generator=g)
    target = torch.randn(2, 3, 4, 4, generator=g)
    scale_pred = torch.rand(2, 1, 4, 4, generator=g) * 10 + 0.1
    scale_target = torch.rand(2, 1, 4, 4, generator=g) * 10 + 0.1
    task = NormalTask()
    p, t = pred.double().numpy(), target.double().numpy()
    cos = (p * t).sum(1) / np.linalg.norm(p, axis=1) / np.linalg.norm(t, axis=1)
    expected = 1.0 - cos.mean()
    assert task.loss(pred, target).item() == pytest.approx(expected, rel=1e-5)
    rescaled = task.loss(pred * scale_pred, target * scale_target).item()
    assert rescaled == pytest.approx(expected, rel=1e-5)


def test_median_stays_exact_past_float32_counts():
    # A whole NYUv2 validation set has about 2e8 valid pixels, past float32's exact integers
    # (2^24). n = 2^25 + 1 angles, the first 2^24 + 1 in bin 0 and the rest in bin 1: the
    # middle order statistic (index 2^24, 0-based) is the last one of bin 0.
    task = NormalTask()
    metric = task.new_metric()
    state = metric.state()
    n, first = 2**25 + 1, 2**24 + 1
    state["histogram"][0], state["histogram"][1] = first, n - first
    state["count"] = torch.tensor(n)
    metric.load_state(state)
    assert metric.compute()["angle_median"] == pytest.approx(0.5 * task.median_bin)


def test_opposite_vectors_are_180_degrees_apart_when_rounding_puts_cos_below_minus_one():
    v = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    p, g = torch.nn.functional.normalize(v, dim=1), torch.nn.functional.normalize(-v, dim=1)
    assert bool(((p * g).sum(dim=1) < -1).any())  # the case the clamp exists for
    angles = angle_degrees(v, -v)  # cos = -1 up to an ulp: within 1e-5 degree of 180
    torch.testing.assert_close(angles, torch.full_like(angles, 180.0), rtol=0.0, atol=1e-5)
    metric = NormalTask().new_metric()
    metric.update(v.float(), -v.float())
    assert metric.compute()["angle_mean"] == pytest.approx(180.0)


def test_identical_vectors_are_0_degrees_apart_when_rounding_puts_cos_above_one():
    v = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    p = torch.nn.functional.normalize(v, dim=1)
    assert bool(((p * p).sum(dim=1) > 1).any())  # the case the clamp exists for
    angles = angle_degrees(v, v)
    torch.testing.assert_close(angles, torch.zeros_like(angles), rtol=0.0, atol=1e-5)
