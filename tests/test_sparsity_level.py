"""The scheduled level (one common rescale of the thresholds), the hard threshold and the
cost allocation, against hand-computed values and the schedule's formula."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from adapmtl.sparsity import (
    TargetSparsityController,
    overall_sparsity,
    param_groups,
    report,
    sparsify,
    theta_from_alpha,
    thresholds,
)
from adapmtl.sparsity.allocation import CostAllocation
from adapmtl.sparsity.level import CubicSchedule, ScheduledLevel, rescale_thresholds
from adapmtl.sparsity.parametrization import hard_threshold, soft_threshold


class TwoParts(nn.Module):
    """A backbone and one head, one Linear layer each, with weights set by the test."""

    def __init__(self, backbone: list[float], head: list[float]) -> None:
        super().__init__()
        self.backbone = nn.Linear(len(backbone), 1, bias=False)
        self.heads = nn.ModuleDict({"a": nn.Linear(len(head), 1, bias=False)})
        with torch.no_grad():
            self.backbone.weight.copy_(torch.tensor([backbone]))
            self.heads["a"].weight.copy_(torch.tensor([head]))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"a": self.heads["a"](self.backbone(x).expand(-1, self.heads["a"].in_features))}


def two_groups(alpha_backbone: float, alpha_head: float) -> TwoParts:
    model = TwoParts([0.01, 0.02, 0.03, 0.04], [-0.1, 0.2, -0.3, 0.4])
    sparsify(
        model,
        init={"backbone": theta_from_alpha(alpha_backbone), "a": theta_from_alpha(alpha_head)},
    )
    return model


def alphas(model: nn.Module) -> dict[str, float]:
    return {g: float(torch.sigmoid(t.detach())) for g, t in thresholds(model).items()}


def test_cubic_schedule_follows_its_formula():
    schedule = CubicSchedule(0.9, start=10, end=50)
    assert schedule(0) == 0.0 and schedule(10) == 0.0
    assert schedule(30) == pytest.approx(0.9 * (1 - 0.5**3))
    assert schedule(50) == pytest.approx(0.9) and schedule(500) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="start < end"):
        CubicSchedule(0.9, start=5, end=5)


@pytest.mark.parametrize(
    ("sparsity", "pruned_backbone", "pruned_head"),
    [(0.5, 2, 2), (0.25, 1, 1), (0.75, 3, 3), (0.0, 0, 0)],
)
def test_rescale_prunes_the_requested_count_keeping_the_ratio_of_thresholds(
    sparsity, pruned_backbone, pruned_head
):
    # |W| / alpha is 2, 4, 6, 8 in both groups (alpha 0.005 and 0.05), so a common factor prunes
    # the same number of weights in each, and the alphas keep their ratio of 10
    model = two_groups(0.005, 0.05)
    rescale_thresholds(model, sparsity)
    rep = report(model)
    assert rep.components["backbone"].total - rep.components["backbone"].nonzero == pruned_backbone
    assert rep.components["a"].total - rep.components["a"].nonzero == pruned_head
    after = alphas(model)
    assert after["a"] / after["backbone"] == pytest.approx(10.0, rel=1e-4)


def test_rescale_moves_thresholds_up_and_down_but_only_down_when_asked():
    model = two_groups(0.005, 0.05)  # nothing pruned: every ratio is >= 2
    rescale_thresholds(model, 0.5)
    # halfway between the 4th and 5th smallest ratio (4 and 6): alpha * 5
    assert alphas(model)["backbone"] == pytest.approx(0.025, rel=1e-4)
    rescale_thresholds(model, 0.25)  # between ratios 2 and 4 (of the original alphas): * 3
    assert alphas(model)["backbone"] == pytest.approx(0.015, rel=1e-4)
    before = alphas(model)
    assert rescale_thresholds(model, 0.75, only_down=True) is None
    assert alphas(model) == before


def test_rescale_keeps_thresholds_finite_when_a_weight_is_exactly_zero():
    # sparsity 0 asks for alpha below the smallest |W|, here 0: alpha stays at a tiny positive
    # value instead of 0 (theta = logit(0) = -inf, and every later ratio |W| / alpha NaN)
    model = TwoParts([0.0, 0.02, 0.03, 0.04], [-0.1, 0.2, -0.3, 0.4])
    sparsify(model, init=theta_from_alpha(0.005))
    rescale_thresholds(model, 0.0)
    assert all(math.isfinite(float(t)) for t in thresholds(model).values())
    rescale_thresholds(model, 0.5)
    assert report(model).overall.nonzero == 4


def test_hard_threshold_keeps_survivors_whole_with_the_soft_sub_gradients():
    weight = torch.tensor([-0.5, -0.05, 0.02, 0.3], requires_grad=True)
    theta = torch.tensor(theta_from_alpha(0.1), requires_grad=True)
    out = hard_threshold(weight, theta)
    assert out.tolist() == pytest.approx([-0.5, 0.0, 0.0, 0.3])
    upstream = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out.backward(upstream)
    # dH/dW = 1[|W| > alpha]; dH/dalpha = -sign(W) 1[|W| > alpha], times dalpha/dtheta
    assert weight.grad.tolist() == [1.0, 0.0, 0.0, 4.0]
    alpha = 0.1
    expected_theta = -(-1.0 * 1.0 + 1.0 * 4.0) * alpha * (1 - alpha)
    assert float(theta.grad) == pytest.approx(expected_theta, rel=1e-5)
    # same theta gradient as the soft threshold's
    theta_soft = theta.detach().clone().requires_grad_(True)
    soft_threshold(weight.detach(), theta_soft).backward(upstream)
    assert float(theta_soft.grad) == pytest.approx(float(theta.grad), rel=1e-6)


@pytest.mark.parametrize("function", [soft_threshold, hard_threshold])
def test_regrow_gives_every_weight_the_straight_through_gradient(function):
    weight = torch.tensor([-0.5, -0.05, 0.02, 0.3], requires_grad=True)
    theta = torch.tensor(theta_from_alpha(0.1), requires_grad=True)
    plain = function(weight.detach(), theta.detach())
    out = function(weight, theta, regrow=True)
    assert out.tolist() == pytest.approx(plain.tolist())  # the forward pass is unchanged
    upstream = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out.backward(upstream)
    assert weight.grad.tolist() == upstream.tolist()  # pruned weights (|W| <= 0.1) included
    alpha = 0.1
    assert float(theta.grad) == pytest.approx(
        -(-1.0 * 1.0 + 1.0 * 4.0) * alpha * (1 - alpha), rel=1e-5
    )


def test_regrow_needs_a_threshold():
    with pytest.raises(ValueError, match="regrow needs a threshold mode"):
        sparsify(nn.Linear(2, 2), grouping="global", mode="mask", regrow=True)


class Small(nn.Module):
    """A backbone of 2 conv layers and two heads of very different sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()
        )
        self.heads = nn.ModuleDict(
            {"big": nn.Conv2d(16, 64, 3, padding=1), "small": nn.Conv2d(16, 1, 1)}
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        return {name: head(features) for name, head in self.heads.items()}


def train_with_level(
    target: float, *, mode: str, threshold_lr: float, init: float, iterations: int = 60
) -> tuple[nn.Module, TargetSparsityController, list[tuple[float, float]]]:
    torch.manual_seed(0)
    model = Small()
    sparsify(model, mode=mode, init=init)
    optimizer = torch.optim.Adam(
        param_groups(model, lr=1e-2, threshold_lr=threshold_lr, threshold_weight_decay=0.1)
    )
    schedule = CubicSchedule(target, start=5, end=iterations // 2)
    level = ScheduledLevel(model, schedule)
    level.begin()
    controller = TargetSparsityController(model, target)
    tracked = []
    x, y = torch.randn(4, 3, 8, 8), torch.randn(4, 64, 8, 8)
    for iteration in range(iterations):
        if not controller.frozen:
            tracked.append((overall_sparsity(model), schedule(iteration)))
        out = model(x)
        loss = (out["big"] - y).square().mean() + out["small"].square().mean()
        optimizer.zero_grad()
        loss.backward()
        controller.step(iteration)
        optimizer.step()
        if not controller.frozen:
            level.step(iteration)
    return model, controller, tracked


@pytest.mark.parametrize("target", [0.5, 0.9, 0.98])
@pytest.mark.parametrize("threshold_lr", [1e-3, 1e-1])
@pytest.mark.parametrize("init", [-12.0, -3.0])
def test_scheduled_level_lands_on_any_target_whatever_the_threshold_settings(
    target, threshold_lr, init
):
    model, controller, tracked = train_with_level(
        target, mode="hard", threshold_lr=threshold_lr, init=init
    )
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    # every step follows the schedule to within one weight (ceil rounding)
    for measured, scheduled in tracked:
        assert measured == pytest.approx(math.ceil(scheduled * n) / n, abs=1.5 / n)
    # frozen at the first iteration whose scheduled count of pruned weights is the target's
    # (the schedule's end, 30, or one step before when ceil rounds the last step up)
    schedule = CubicSchedule(target, start=5, end=30)
    first = next(t for t in range(61) if math.ceil(schedule(t) * n) >= math.ceil(target * n))
    assert controller.frozen_at == first
    assert overall_sparsity(model) == pytest.approx(target, abs=1.0 / n)


def test_scheduled_level_works_with_soft_thresholds_too():
    model, controller, _ = train_with_level(0.8, mode="soft", threshold_lr=1e-2, init=-6.0)
    assert controller.frozen_at in (29, 30)
    assert abs(overall_sparsity(model) - 0.8) < 1e-3


def test_cost_allocation_moves_each_threshold_by_its_centred_log_cost():
    model = two_groups(0.005, 0.05)
    # gradients chosen so the band above each threshold (alpha < |W| <= 1.25 alpha) holds one
    # weight per group, after the thresholds are raised to 0.0095 and 0.095
    with torch.no_grad():
        thresholds(model)["backbone"].fill_(theta_from_alpha(0.0095))
        thresholds(model)["a"].fill_(theta_from_alpha(0.095))
    model.backbone.parametrizations.weight.original.grad = torch.tensor([[0.0, 3.0, 5.0, 7.0]])
    model.heads["a"].parametrizations.weight.original.grad = torch.tensor([[0.0, 0.1, 9.0, 9.0]])
    allocation = CostAllocation(model, rate=0.5)  # the default band, 0.25
    costs = {g: float(c) for g, (c, _) in allocation.marginal_costs().items()}
    # band of the backbone: |W| = 0.01 (grad 0); of the head: |W| = 0.1 (grad 0): both zero, so
    # move the thresholds onto the second weights instead
    assert costs == {"backbone": 0.0, "a": 0.0}
    with torch.no_grad():
        thresholds(model)["backbone"].fill_(theta_from_alpha(0.019))
        thresholds(model)["a"].fill_(theta_from_alpha(0.19))
    costs = {g: float(c) for g, (c, _) in allocation.marginal_costs().items()}
    assert costs["backbone"] == pytest.approx((0.02 * 3.0) ** 2)
    assert costs["a"] == pytest.approx((0.2 * 0.1) ** 2)
    before = alphas(model)
    allocation.observe()
    allocation.step()
    after = alphas(model)
    mean_log = (math.log(costs["backbone"]) + math.log(costs["a"])) / 2
    for group in ("backbone", "a"):
        expected = before[group] * math.exp(-0.5 * (math.log(costs[group]) - mean_log))
        assert after[group] == pytest.approx(expected, rel=1e-4)
    # the head's next weights are cheaper to remove: its threshold went up, the backbone's down
    assert after["a"] > before["a"] and after["backbone"] < before["backbone"]


def test_cost_allocation_state_round_trip():
    model = two_groups(0.019, 0.19)
    model.backbone.parametrizations.weight.original.grad = torch.ones(1, 4)
    model.heads["a"].parametrizations.weight.original.grad = torch.ones(1, 4)
    allocation = CostAllocation(model)
    allocation.observe()
    restored = CostAllocation(model)
    restored.load_state_dict(allocation.state_dict())
    assert {g: float(v) for g, v in restored.cost.items()} == {
        g: float(v) for g, v in allocation.cost.items()
    }


def test_cost_allocation_rejects_bad_settings_by_name():
    model = two_groups(0.019, 0.19)
    for kwargs, message in [
        ({"rate": 0.0}, r"rate must be > 0, got 0.0"),
        ({"band": -0.1}, r"band must be > 0, got -0.1"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\), got 1.0"),
        ({"momentum": -0.5}, r"momentum must be in \[0, 1\), got -0.5"),
    ]:
        with pytest.raises(ValueError, match=message):
            CostAllocation(model, **kwargs)
    CostAllocation(model, momentum=0.0)  # the boundary is allowed


def test_cost_allocation_keeps_the_average_of_a_group_whose_band_is_empty():
    model = two_groups(0.019, 0.19)  # bands hold |W| = 0.02 and 0.2
    model.backbone.parametrizations.weight.original.grad = torch.full((1, 4), 2.0)
    model.heads["a"].parametrizations.weight.original.grad = torch.full((1, 4), 3.0)
    allocation = CostAllocation(model, momentum=0.5)
    allocation.observe()
    head = float(allocation.cost["a"])
    assert head == pytest.approx((0.2 * 3.0) ** 2)
    with torch.no_grad():
        thresholds(model)["a"].fill_(theta_from_alpha(0.5))  # (0.5, 0.625]: no head weight
    model.backbone.parametrizations.weight.original.grad = torch.full((1, 4), 4.0)
    allocation.observe()
    assert float(allocation.cost["a"]) == head
    expected = 0.5 * (0.02 * 2.0) ** 2 + 0.5 * (0.02 * 4.0) ** 2
    assert float(allocation.cost["backbone"]) == pytest.approx(expected)
