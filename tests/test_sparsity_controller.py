"""TargetSparsityController: where it stops, what it freezes, and its bookkeeping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from adapmtl.sparsity import (
    TargetSparsityController,
    current_masks,
    overall_sparsity,
    param_groups,
    report,
    sparse_layers,
    sparsify,
    thresholds,
)
from sparsity_toys import LinearMTL, conv_mtl, single_thread

_single_thread = pytest.fixture(autouse=True)(single_thread)

TARGET = 0.5


class ToyRun:
    """A sparsified MLP fitting random targets; threshold weight decay drives sparsity up (init -3
    starts at 30 %, and the threshold learning rate keeps each step's change under 0.5 points)."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = sparsify(LinearMTL(16, 48, 4, 2), init=-3.0)
        self.x = torch.randn(32, 16)
        self.targets = {"a": torch.randn(32, 4), "b": torch.randn(32, 2)}
        self.optimizer = torch.optim.Adam(
            param_groups(
                self.model,
                lr=1e-3,
                threshold_lr=3e-3,
                threshold_weight_decay=1.0,
            )
        )

    def backward(self) -> None:
        out = self.model(self.x)
        loss = sum(((out[t] - y) ** 2).mean() for t, y in self.targets.items())
        self.optimizer.zero_grad()
        loss.backward()


def test_freeze_mask_lands_exactly_and_stays_there():
    run = ToyRun()
    controller = TargetSparsityController(run.model, TARGET)
    first_reached = None
    for it in range(400):
        run.backward()
        if first_reached is None and overall_sparsity(run.model) >= TARGET:
            first_reached = it
        controller.step(it)
        run.optimizer.step()
        if controller.frozen:
            break
    assert first_reached is not None, "the toy run never reached the target"
    assert controller.frozen_at == first_reached
    frozen = overall_sparsity(run.model)
    counts = report(run.model).overall
    # landing is exact: ceil(target * n) weights pruned, not one more
    assert counts.total - counts.nonzero == math.ceil(TARGET * counts.total)
    assert all(p.masked for _, _, p in sparse_layers(run.model))

    # Strong weight decay on the weights from now on: it would push survivors under alpha, but
    # the mask is fixed.
    run.optimizer.param_groups[0]["weight_decay"] = 0.1
    masks = current_masks(run.model)
    theta = {k: v.detach().clone() for k, v in thresholds(run.model).items()}
    weights_before = [
        m.parametrizations.weight.original.clone() for _, m, _ in sparse_layers(run.model)
    ]
    for it in range(first_reached + 1, first_reached + 150):
        run.backward()
        assert controller.step(it) is True
        run.optimizer.step()
        assert overall_sparsity(run.model) == frozen
    for path, mask in current_masks(run.model).items():
        assert torch.equal(mask, masks[path]), path
    for key, value in thresholds(run.model).items():
        assert torch.equal(value, theta[key]), key
    # Survivors kept training (the freeze is of the mask, not of the weights).
    weights_after = [m.parametrizations.weight.original for _, m, _ in sparse_layers(run.model)]
    assert any(not torch.equal(a, b) for a, b in zip(weights_before, weights_after, strict=True))
    assert controller.frozen_at == first_reached


def test_freeze_writes_the_soft_thresholded_weight():
    run = ToyRun()
    controller = TargetSparsityController(run.model, 0.25)  # already passed at init
    raw = {
        path: m.parametrizations.weight.original.detach().clone()
        for path, m, _ in sparse_layers(run.model)
    }
    run.backward()
    assert controller.step(0)
    for path, module, p in sparse_layers(run.model):
        # S(W, a) at the landed threshold a, computed by hand from the raw weight
        alpha = torch.sigmoid(p.theta.detach())
        expected = torch.sign(raw[path]) * torch.clamp(raw[path].abs() - alpha, min=0)
        torch.testing.assert_close(module.parametrizations.weight.original, expected)
        assert torch.equal(p.mask, expected != 0)
    assert all(
        theta.grad is None and not theta.requires_grad for theta in thresholds(run.model).values()
    )


def test_freeze_lands_exactly_on_the_target_by_scaling_all_thresholds_alike():
    run = ToyRun()
    before = {g: float(torch.sigmoid(t.detach())) for g, t in thresholds(run.model).items()}
    total = sum(m.weight.numel() for _, m, _ in sparse_layers(run.model))
    start = overall_sparsity(run.model)
    target = start / 2  # far below the current sparsity: the landing must bring it down
    controller = TargetSparsityController(run.model, target)
    run.backward()
    assert controller.step(0)
    landed = report(run.model).overall
    assert landed.total == total
    assert total - landed.nonzero == math.ceil(target * total)
    factors = [float(torch.sigmoid(t)) / before[g] for g, t in thresholds(run.model).items()]
    assert all(f < 1 for f in factors)
    assert max(factors) == pytest.approx(min(factors), rel=1e-4)


def test_official_mode_drops_threshold_gradients_at_or_above_target():
    run = ToyRun()
    controller = TargetSparsityController(run.model, TARGET, mode="official")
    states = []
    for it in range(120):
        run.backward()
        reached = overall_sparsity(run.model) >= TARGET
        assert controller.step(it) is reached
        dropped = [theta.grad is None for theta in thresholds(run.model).values()]
        assert dropped == [reached] * len(dropped)
        states.append(reached)
        run.optimizer.step()
    assert False in states and True in states
    assert controller.frozen_at == states.index(True)
    # Nothing but the thresholds is frozen: every layer is still soft-thresholded.
    assert not any(p.masked for _, _, p in sparse_layers(run.model))


@pytest.mark.parametrize("target", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_target_outside_open_unit_interval_is_an_error(target):
    with pytest.raises(ValueError, match="target"):
        TargetSparsityController(sparsify(conv_mtl()), target)


def test_bad_mode_check_every_and_unsparsified_model_are_errors():
    model = sparsify(conv_mtl())
    with pytest.raises(ValueError, match="mode"):
        TargetSparsityController(model, 0.5, mode="freeze")
    with pytest.raises(ValueError, match="check_every"):
        TargetSparsityController(model, 0.5, check_every=0)
    with pytest.raises(ValueError, match="sparsif"):
        TargetSparsityController(nn.Linear(3, 3), 0.5)


def test_check_every_skips_intermediate_iterations():
    run = ToyRun()  # 30 % sparse at init, above this target
    controller = TargetSparsityController(run.model, 0.2, check_every=5)
    run.backward()
    assert controller.step(3) is False
    assert not controller.frozen
    assert controller.last_sparsity is None
    assert controller.step(5) is True
    assert controller.frozen_at == 5


@pytest.mark.parametrize("mode", ["freeze_mask", "official"])
def test_state_dict_round_trip(mode):
    run = ToyRun()
    controller = TargetSparsityController(run.model, 0.2, mode=mode, check_every=2)
    run.backward()
    controller.step(4)
    state = controller.state_dict()
    assert state["frozen_at"] == 4
    assert state["last_sparsity"] == pytest.approx(overall_sparsity(run.model))

    fresh = ToyRun()
    restored = TargetSparsityController(fresh.model, 0.9)
    restored.load_state_dict(state)
    assert restored.state_dict() == state
    assert (restored.target, restored.mode, restored.check_every) == (0.2, mode, 2)
    frozen_thetas = mode == "freeze_mask"
    assert all(t.requires_grad != frozen_thetas for t in thresholds(fresh.model).values())
