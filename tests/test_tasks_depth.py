"""Depth loss and metrics: hand-computed cases and an independent NumPy computation."""

import numpy as np
import pytest
import torch

from adapmtl.tasks import DepthTask


def column(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, len(values))


# Ratios max(p/g, g/p): 4/3 (within 1.25^2 only), 1.1 (within all), invalid pixel, negative p.
PRED = column([1.5, 1.1, 5.0, -1.0])
TARGET = column([2.0, 1.0, 0.0, 4.0])


def test_hand_computed_metrics_clamp_negative_predictions():
    metric = DepthTask().new_metric()
    metric.update(PRED, TARGET)
    result = metric.compute()
    assert result["abs_err"] == pytest.approx((0.5 + 0.1 + 5.0) / 3, rel=1e-6)
    assert result["rel_err"] == pytest.approx((0.25 + 0.1 + 1.25) / 3, rel=1e-6)
    assert result["delta1"] == pytest.approx(100 / 3)
    assert result["delta2"] == pytest.approx(200 / 3)
    assert result["delta3"] == pytest.approx(200 / 3)


def test_faithful_counts_negative_prediction_as_within():
    metric = DepthTask(faithful=True).new_metric()
    metric.update(PRED, TARGET)
    result = metric.compute()
    assert result["delta1"] == pytest.approx(200 / 3)
    assert result["delta2"] == pytest.approx(100.0)
    assert result["abs_err"] == pytest.approx((0.5 + 0.1 + 5.0) / 3, rel=1e-6)


def test_valid_threshold():
    pred, target = column([1.0, 1.0]), column([2e-5, 1.0])
    lenient = DepthTask().new_metric()
    lenient.update(pred, target)
    strict = DepthTask(valid_threshold=3e-5).new_metric()
    strict.update(pred, target)
    assert lenient.state()["count"].item() == 2
    assert strict.state()["count"].item() == 1
    assert strict.compute()["abs_err"] == 0.0


def test_batch_average_weights_batch_means_by_batch_size():
    # Batch 1 (B=1): errors [1, 3] -> mean 2. Batch 2 (B=2): one valid pixel, error 5.
    # Pooled: 9 / 3 = 3. Per-batch: (2 * 1 + 5 * 2) / 3 = 4.
    first = (column([2.0, 4.0]), column([1.0, 1.0]))
    second = (
        torch.tensor([[[[6.0, 0.0]]], [[[9.0, 9.0]]]]),
        torch.tensor([[[[1.0, 0.0]]], [[[0.0, 0.0]]]]),
    )
    results = {}
    for mode in ("pooled", "batch"):
        metric = DepthTask(average=mode).new_metric()
        metric.update(*first)
        metric.update(*second)
        results[mode] = metric.compute()["abs_err"]
    assert results["pooled"] == pytest.approx(3.0)
    assert results["batch"] == pytest.approx(4.0)


def test_loss_is_masked_l1_at_prediction_resolution():
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    target = torch.zeros(1, 1, 4, 4)
    target[0, 0, 0, 0], target[0, 0, 0, 2], target[0, 0, 2, 2] = 2.0, 2.5, 1.0  # (2, 0) invalid
    target[0, 0, 1, 1] = 100.0  # not picked by nearest downsampling
    expected = (abs(1 - 2.0) + abs(2 - 2.5) + abs(4 - 1.0)) / 3
    assert DepthTask().loss(pred, target).item() == pytest.approx(expected)


def test_loss_without_valid_pixels_is_zero_with_grad():
    pred = torch.randn(2, 1, 3, 3, requires_grad=True)
    loss = DepthTask().loss(pred, torch.zeros(2, 1, 3, 3))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.count_nonzero(pred.grad) == 0


def test_against_numpy_with_upsampling():
    rng = np.random.default_rng(3)
    pred = rng.uniform(-0.2, 5.0, size=(2, 1, 4, 5))
    target = rng.uniform(0.5, 5.0, size=(2, 1, 12, 15)) * (rng.random((2, 1, 12, 15)) > 0.3)
    up = pred.repeat(3, axis=2).repeat(3, axis=3)
    valid = target > 0
    p, g = up[valid], target[valid]
    ratio = np.maximum(np.maximum(p, 1e-6) / g, g / np.maximum(p, 1e-6))
    metric = DepthTask().new_metric()
    metric.update(
        torch.tensor(pred, dtype=torch.float64), torch.tensor(target, dtype=torch.float64)
    )
    result = metric.compute()
    assert result["abs_err"] == pytest.approx(np.abs(p - g).mean(), rel=1e-12)
    assert result["rel_err"] == pytest.approx((np.abs(p - g) / g).mean(), rel=1e-12)
    for k in (1, 2, 3):
        assert result[f"delta{k}"] == pytest.approx(100 * np.mean(ratio <= 1.25**k), abs=1e-9)


def test_loss_pools_valid_pixels_over_the_batch():
    # Image 1: one valid pixel, error 4. Image 2: three valid pixels, error 0 each.
    # Pooled over the batch: 4 / 4 = 1 (a mean of per-image means would give 2).
    pred = torch.tensor([[[[4.0, 0.0, 0.0, 0.0]]], [[[1.0, 1.0, 1.0, 0.0]]]])
    target = torch.tensor([[[[8.0, 0.0, 0.0, 0.0]]], [[[1.0, 1.0, 1.0, 0.0]]]])
    assert DepthTask().loss(pred, target).item() == pytest.approx(1.0)


def test_ratio_on_the_threshold_counts_as_within():
    # max(p/g, g/p) = 1.25 and 1.5625 exactly (binary fractions): "<=" as the references count.
    metric = DepthTask().new_metric()
    metric.update(column([1.25, 1.5625]), column([1.0, 1.0]))
    result = metric.compute()
    assert (result["delta1"], result["delta2"]) == (50.0, 100.0)


def test_an_unknown_average_is_named_with_its_choices():
    with pytest.raises(ValueError, match=r"'depth': average must be one of \[.*'pooled'.*got 'x'"):
        DepthTask(average="x")


def test_eps_must_be_positive():
    with pytest.raises(ValueError, match="eps"):
        DepthTask(eps=0.0)
    DepthTask(eps=1e-9)
