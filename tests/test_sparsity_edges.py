"""Sparsity core at its edges: a one-weight masked layer, freezing a model without soft
thresholds, the documented default threshold, the init warning's caller, and the threshold
pressure at its boundaries."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from adapmtl.sparsity import (
    CubicSchedule,
    ScheduledLevel,
    TargetSparsityController,
    ThresholdPressure,
    bake,
    freeze_masks,
    layer_components,
    report,
    set_masks,
    sparse_layers,
    sparsify,
    thresholds,
)
from adapmtl.sparsity.parametrization import SparseWeight
from sparsity_toys import LinearMTL, conv_mtl


def test_a_one_weight_layer_can_be_masked_off():
    model = sparsify(LinearMTL(2, 1, 1, 1), mode="mask")  # heads.a and heads.b hold one weight
    set_masks(model, {"heads.a": torch.zeros(1, 1, dtype=torch.bool)}, zero_pruned=False)
    layer = model.get_submodule("heads.a")
    assert layer.parametrizations.weight.original.item() != 0  # stored weight kept
    assert layer.weight.item() == 0  # effective weight masked
    counts = {x.path: (x.mode, x.nonzero, x.total) for x in report(model).layers}
    assert counts["heads.a"] == ("mask", 0, 1)
    assert counts["heads.b"] == ("dense", 1, 1)


def test_freezing_leaves_layers_without_soft_thresholds_alone():
    model = sparsify(conv_mtl(), mode="mask")
    with torch.no_grad():  # exact zeros in a dense layer must not turn into a mask
        model.get_submodule("backbone.0").parametrizations.weight.original[0] = 0.0
    freeze_masks(model)
    assert all(not p.masked for _, _, p in sparse_layers(model))
    assert {x.mode for x in report(model).layers} == {"dense"}


def test_default_threshold_is_theta_minus_six():
    # docs: the default init -6 gives alpha = sigmoid(-6) = 2.47e-3
    model = sparsify(conv_mtl())
    for theta in thresholds(model).values():
        assert theta.item() == -6.0
    alpha = 1 / (1 + math.exp(6))
    assert report(model).thresholds["backbone"]["alpha"] == pytest.approx(alpha, rel=1e-6)


def test_init_warning_points_at_the_caller_of_sparsify():
    with pytest.warns(UserWarning, match="already zero") as record:
        sparsify(conv_mtl(), init=-1.0)
    assert record[0].filename == __file__


def pressure_optimizer(decay: float) -> torch.optim.Optimizer:
    theta = nn.Parameter(torch.zeros(()))
    return torch.optim.SGD([{"params": [theta], "name": "thresholds", "weight_decay": decay}])


@pytest.mark.parametrize("target", [0.0, 1.0])
def test_pressure_target_must_be_strictly_inside_the_unit_interval(target):
    with pytest.raises(ValueError, match="target"):
        ThresholdPressure(target, 10)


def test_pressure_on_schedule_counts_as_ahead():
    # at iteration 10 of 10 the schedule is the target; being exactly there relaxes the decay
    pressure = ThresholdPressure(0.5, 10, growth=2.0)
    optimizer = pressure_optimizer(1.0)
    assert pressure.schedule(10) == 0.5
    assert pressure.update(optimizer, 10, 0.5) == 0.5
    assert pressure.update(optimizer, 10, 0.25) == 1.0  # behind: grows again


def test_hard_mode_keeps_survivors_whole_where_soft_mode_shrinks_them():
    alpha = 0.3
    effective = {}
    for mode in ("soft", "hard"):
        model = sparsify(LinearMTL(3, 2, 2, 1), mode=mode)
        layer = model.heads["a"]
        with torch.no_grad():
            layer.parametrizations.weight.original.copy_(torch.tensor([[0.5, -0.2], [-0.9, 0.25]]))
            thresholds(model)["a"].fill_(math.log(alpha / (1 - alpha)))
        effective[mode] = layer.weight.detach()
        assert f"mode={mode}-threshold, group='a'" in repr(layer.parametrizations.weight[0])
    expected_hard = torch.tensor([[0.5, 0.0], [-0.9, 0.0]])
    torch.testing.assert_close(effective["hard"], expected_hard)
    torch.testing.assert_close(effective["soft"], torch.tensor([[0.2, 0.0], [-0.6, 0.0]]))


def test_a_mask_layer_before_its_first_mask_reads_as_dense():
    model = sparsify(LinearMTL(3, 2, 2, 1), mode="mask")
    assert "mode=dense, group=None" in repr(model.heads["a"].parametrizations.weight[0])


def test_the_mask_buffer_is_boolean_before_and_after_the_freeze():
    model = sparsify(conv_mtl(), init=-3.0)
    masks = [v for k, v in model.state_dict().items() if k.endswith(".mask")]
    assert masks and all(m.dtype == torch.bool and m.numel() == 0 for m in masks)
    freeze_masks(model)
    masks = [v for k, v in model.state_dict().items() if k.endswith(".mask")]
    assert all(m.dtype == torch.bool and m.numel() > 0 for m in masks)


def test_what_cannot_be_sparsified_is_named():
    with pytest.raises(ValueError, match=r"^model has no prunable Conv/Linear weights outside"):
        sparsify(LinearMTL(3, 2, 2, 1), exclude=["backbone", "heads"])
    with pytest.raises(ValueError, match=r"^cannot find the model's components: give components="):
        sparsify(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match=r"^the model is not sparsified: call sparsify\(model\)"):
        TargetSparsityController(LinearMTL(3, 2, 2, 1), 0.5)


def test_a_cubic_schedule_may_target_zero_sparsity():
    schedule = CubicSchedule(0.0, 0, 10)
    assert [schedule(t) for t in (0, 5, 10)] == [0.0, 0.0, 0.0]


def test_unsparsified_models_and_half_given_thresholds_are_named():
    with pytest.raises(ValueError, match=r"^the model is not sparsified: call sparsify\(model\)"):
        ScheduledLevel(LinearMTL(3, 2, 2, 1), CubicSchedule(0.5, 0, 10))
    with pytest.raises(ValueError, match=r"^thresholds and group must be given together$"):
        SparseWeight(None, "backbone")


def test_a_hard_threshold_with_regrow_lets_pruned_weights_learn():
    grads = {}
    for regrow in (False, True):
        model = sparsify(LinearMTL(2, 2, 1, 1), mode="hard", regrow=regrow)
        layer = model.heads["a"]
        with torch.no_grad():
            for _, module, _ in sparse_layers(model):  # positive features: ReLU passes them
                module.parametrizations.weight.original.abs_().add_(0.1)
                module.bias.abs_()
            layer.parametrizations.weight.original.copy_(torch.tensor([[0.5, 0.01]]))
            thresholds(model)["a"].fill_(math.log(0.1 / 0.9))  # alpha 0.1: 0.01 is pruned
        out = model(torch.ones(1, 2))
        (out["a"].sum() + out["b"].sum()).backward()
        grads[regrow] = layer.parametrizations.weight.original.grad[0, 1].item()
    assert grads[False] == 0.0 and grads[True] != 0.0


def test_bake_leaves_a_plain_model_without_components():
    model = sparsify(LinearMTL(3, 2, 2, 1))
    assert layer_components(model)
    bake(model)
    assert layer_components(model) == {}


def test_more_refusals_are_named():
    model = sparsify(LinearMTL(3, 2, 2, 1))
    with pytest.raises(ValueError, match=r"^model is already sparsified; bake\(model\) first"):
        sparsify(model)
    with pytest.raises(ValueError, match=r"^grouping 'backbone_heads' needs a component named 'b"):
        sparsify(LinearMTL(3, 2, 2, 1), grouping="backbone_heads", components={"x": ["heads"]})


def test_the_init_warning_says_how_much_is_already_zero():
    model = LinearMTL(2, 2, 1, 1)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.01)
        model.heads["b"].weight.fill_(1.0)  # 2 of 12 weights survive alpha = 0.5
    with pytest.warns(UserWarning, match=r"already zero 83\.3% of the weights: theta init is"):
        sparsify(model, init=0.0)
