"""ThresholdPressure: the cubic schedule and the closed loop on the thresholds' weight decay."""

import pytest
import torch

from adapmtl.sparsity import (
    TargetSparsityController,
    ThresholdPressure,
    overall_sparsity,
    param_groups,
    sparsify,
)
from sparsity_toys import LinearMTL


def test_cubic_schedule_by_hand():
    pressure = ThresholdPressure(0.8, until=10)
    assert pressure.schedule(0) == 0.0
    assert pressure.schedule(5) == pytest.approx(0.8 * (1 - 0.5**3))
    assert pressure.schedule(10) == pytest.approx(0.8)
    assert pressure.schedule(25) == pytest.approx(0.8)


def test_decay_grows_when_lagging_and_shrinks_when_ahead():
    model = sparsify(LinearMTL(4, 8, 2, 2), init=-6.0)
    optimizer = torch.optim.Adam(param_groups(model, lr=1e-3, threshold_weight_decay=0.5))
    pressure = ThresholdPressure(0.5, until=4, growth=2.0)
    assert pressure.update(optimizer, 2, sparsity=0.1) == pytest.approx(1.0)  # behind 0.4375
    assert pressure.update(optimizer, 2, sparsity=0.45) == pytest.approx(0.5)  # ahead


def test_needs_the_thresholds_group():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    message = r"^the optimizer has no parameter group named 'thresholds': build it with param_"
    with pytest.raises(ValueError, match=message):
        ThresholdPressure(0.5, until=3).update(optimizer, 0, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"target": 1.0}, r"^target sparsity must be in \(0, 1\), got 1.0"),
        ({"until": 0}, r"^until must be >= 1, got 0"),
        ({"growth": 1.0}, r"^growth must be > 1, got 1.0"),
    ],
)
def test_bad_arguments(kwargs, word):
    args = {"target": 0.5, "until": 3, **kwargs}
    with pytest.raises(ValueError, match=word):
        ThresholdPressure(**args)


def test_a_schedule_may_reach_the_target_after_one_iteration():
    pressure = ThresholdPressure(0.5, until=1)
    assert (pressure.schedule(0), pressure.schedule(1)) == (0.0, 0.5)


def test_reaches_a_target_that_fixed_decay_never_reaches():
    def run(steer: bool) -> float:
        torch.manual_seed(0)
        model = sparsify(LinearMTL(16, 48, 4, 2), init=-7.0)
        x, ya, yb = torch.randn(64, 16), torch.randn(64, 4), torch.randn(64, 2)
        optimizer = torch.optim.Adam(
            param_groups(model, lr=1e-3, threshold_lr=2e-2, threshold_weight_decay=1e-6)
        )
        controller = TargetSparsityController(model, 0.8)
        pressure = ThresholdPressure(0.8, until=150, growth=1.1)
        for it in range(300):
            out = model(x)
            loss = ((out["a"] - ya) ** 2).mean() + ((out["b"] - yb) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            controller.step(it)
            if steer and not controller.frozen:
                pressure.update(optimizer, it, controller.last_sparsity)
            optimizer.step()
        return overall_sparsity(model)

    assert run(steer=False) < 0.5
    assert run(steer=True) == pytest.approx(0.8, abs=0.005)
