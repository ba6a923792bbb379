"""Surface-normal loss and metrics: hand-computed angles and an independent NumPy computation."""

import math

import numpy as np
import pytest
import torch

from adapmtl.tasks import NormalTask

HALF_BIN = 0.005  # the median's resolution at the default 0.01-degree histogram


def vectors(columns: list[list[float]]) -> torch.Tensor:
    """[1, 3, 1, W] from a list of W 3-vectors."""
    return torch.tensor(columns, dtype=torch.float32).T.reshape(1, 3, 1, len(columns))


C20, S20 = math.cos(math.radians(20)), math.sin(math.radians(20))
# Angles 0 (prediction not normalised), 20, 45, 90 degrees, plus one invalid (zero) target.
PRED = vectors([[2, 0, 0], [C20, S20, 0], [3, 3, 0], [0, 1, 0], [1, 0, 0]])
TARGET = vectors([[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 0]])


def test_hand_computed_angles():
    metric = NormalTask().new_metric()
    metric.update(PRED, TARGET)
    result = metric.compute()
    assert result["angle_mean"] == pytest.approx((0 + 20 + 45 + 90) / 4)
    assert result["angle_median"] == pytest.approx((20 + 45) / 2, abs=HALF_BIN)
    assert result["within_11.25"] == pytest.approx(25.0)
    assert result["within_22.5"] == pytest.approx(50.0)
    assert result["within_30"] == pytest.approx(50.0)


def test_loss_is_one_minus_mean_cosine_over_valid_pixels():
    cosines = [1.0, math.cos(math.radians(20)), math.cos(math.radians(45)), 0.0]
    expected = 1.0 - sum(cosines) / 4
    assert NormalTask().loss(PRED, TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_loss_without_valid_pixels_is_zero_with_grad():
    pred = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = NormalTask().loss(pred, torch.zeros(1, 3, 4, 4))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.count_nonzero(pred.grad) == 0


def numpy_angles(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    valid = np.any(target != 0, axis=1)
    p = pred / np.linalg.norm(pred, axis=1, keepdims=True)
    g = target / np.maximum(np.linalg.norm(target, axis=1, keepdims=True), 1e-300)
    cos = np.clip((p * g).sum(axis=1), -1.0, 1.0)
    return np.degrees(np.arccos(cos))[valid]


def test_against_numpy_with_upsampling_and_invalid_pixels():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(3, 3, 5, 6)) * 4.0  # not normalised, half resolution
    target = rng.normal(size=(3, 3, 10, 12))
    target /= np.linalg.norm(target, axis=1, keepdims=True)
    target *= rng.random((3, 1, 10, 12)) >= 0.2  # ~20 % invalid (zero) pixels
    target[0, :, 0, 0] = 0.0
    up = pred.repeat(2, axis=2).repeat(2, axis=3)  # nearest 2x upsampling
    angles = numpy_angles(up, target)

    metric = NormalTask().new_metric()
    metric.update(
        torch.tensor(pred, dtype=torch.float32), torch.tensor(target, dtype=torch.float32)
    )
    result = metric.compute()
    assert result["angle_mean"] == pytest.approx(angles.mean(), abs=1e-4)
    assert result["angle_median"] == pytest.approx(np.median(angles), abs=HALF_BIN + 1e-4)
    for key, limit in (("within_11.25", 11.25), ("within_22.5", 22.5), ("within_30", 30.0)):
        assert result[key] == pytest.approx(100 * np.mean(angles <= limit), abs=1e-9)


@pytest.mark.parametrize("count", [1, 2, 7, 8])
def test_histogram_median_odd_and_even_counts(count):
    rng = np.random.default_rng(count)
    degrees = np.sort(rng.uniform(0, 180, size=count))
    rad = np.radians(degrees)
    pred = torch.tensor(np.stack([np.cos(rad), np.sin(rad), np.zeros(count)]), dtype=torch.float64)
    target = torch.zeros(3, count, dtype=torch.float64)
    target[0] = 1.0
    metric = NormalTask().new_metric()
    metric.update(pred.reshape(1, 3, 1, count), target.reshape(1, 3, 1, count))
    assert metric.compute()["angle_median"] == pytest.approx(np.median(degrees), abs=HALF_BIN)


def test_coarser_histogram_keeps_its_stated_resolution():
    metric = NormalTask(median_bin=1.0).new_metric()
    metric.update(PRED, TARGET)
    assert metric.state()["histogram"].numel() == 180
    assert metric.compute()["angle_median"] == pytest.approx(32.5, abs=0.5)
