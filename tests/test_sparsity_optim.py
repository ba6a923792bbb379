"""param_groups(): weights and thresholds in separate optimizer groups, and threshold weight decay
as the sparsity driver, as in the references."""

from __future__ import annotations

import math

import pytest
import torch

from adapmtl.sparsity import overall_sparsity, param_groups, sparsify, thresholds
from sparsity_toys import conv_mtl, single_thread, total_loss

_single_thread = pytest.fixture(autouse=True)(single_thread)


def test_weights_and_thresholds_are_separate_groups_with_their_own_settings():
    model = sparsify(conv_mtl())
    groups = param_groups(
        model, lr=1e-3, weight_decay=5e-4, threshold_lr=2e-2, threshold_weight_decay=0.5
    )
    assert [g["name"] for g in groups] == ["weights", "thresholds"]
    weights, thetas = groups
    assert (weights["lr"], weights["weight_decay"]) == (1e-3, 5e-4)
    assert (thetas["lr"], thetas["weight_decay"]) == (2e-2, 0.5)
    assert {id(p) for p in thetas["params"]} == {id(p) for p in thresholds(model).values()}
    everything = {id(p) for p in model.parameters()}
    assert {id(p) for p in weights["params"]} == everything - {id(p) for p in thetas["params"]}
    assert len(weights["params"]) + len(thetas["params"]) == len(everything)
    # The optimizer accepts the groups as they are.
    optimizer = torch.optim.Adam(groups)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 2e-2]


def test_threshold_lr_defaults_to_the_weight_lr():
    groups = param_groups(sparsify(conv_mtl()), lr=3e-4)
    assert groups[1]["lr"] == 3e-4
    assert groups[1]["weight_decay"] == 0.0


def test_mask_only_model_has_only_the_weight_group():
    model = sparsify(conv_mtl(), mode="mask")
    groups = param_groups(model, lr=1e-3)
    assert [g["name"] for g in groups] == ["weights"]
    assert len(groups[0]["params"]) == len(list(model.parameters()))


def _run_adam(threshold_weight_decay: float, steps: int, lr: float):
    torch.manual_seed(0)
    model = sparsify(conv_mtl(), init=-6.0)
    x = torch.randn(2, 3, 6, 6)
    optimizer = torch.optim.Adam(
        param_groups(model, lr=0.0, threshold_lr=lr, threshold_weight_decay=threshold_weight_decay)
    )
    history = []
    for _ in range(steps):
        optimizer.zero_grad()
        # A loss that gives every parameter a zero gradient: only weight decay acts.
        (0.0 * total_loss(model(x))).backward()
        optimizer.step()
        history.append({k: v.item() for k, v in thresholds(model).items()})
    return model, history


def _adam_with_l2_only(theta: float, wd: float, lr: float, steps: int) -> list[float]:
    """Adam (Kingma & Ba, default betas) on a scalar whose only gradient is the L2 term wd*theta."""
    m = v = 0.0
    values = []
    for t in range(1, steps + 1):
        g = wd * theta
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        theta -= lr * (m / (1 - 0.9**t)) / (math.sqrt(v / (1 - 0.999**t)) + 1e-8)
        values.append(theta)
    return values


def test_threshold_weight_decay_with_adam_raises_alpha_every_step():
    lr, steps, wd = 0.05, 20, 1e-2
    model, history = _run_adam(threshold_weight_decay=wd, steps=steps, lr=lr)
    expected = _adam_with_l2_only(-6.0, wd, lr, steps)
    assert all(b > a for a, b in zip([-6.0, *expected], expected, strict=False))
    for group in history[0]:
        values = [h[group] for h in history]
        assert values == pytest.approx(expected, rel=1e-5), group
    assert overall_sparsity(model) > overall_sparsity(sparsify(conv_mtl(), init=-6.0))


def test_without_threshold_weight_decay_zero_gradients_leave_alpha_alone():
    _, history = _run_adam(threshold_weight_decay=0.0, steps=5, lr=0.05)
    assert history[-1] == dict.fromkeys(history[-1], -6.0)
