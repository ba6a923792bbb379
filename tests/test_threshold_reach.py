"""The config-time check that the soft thresholds can travel far enough to reach the target."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from adapmtl.build import build_run_method
from adapmtl.build import build_run_model as build_model
from adapmtl.build import build_run_tasks as build_tasks
from adapmtl.config import from_dict, load_config
from adapmtl.engine.reach import (
    ThresholdReachWarning,
    check_threshold_reach,
    schedule_travel,
    threshold_reach,
)
from adapmtl.engine.trainer import Trainer
from adapmtl.errors import UserError


def _model(config):
    torch.manual_seed(0)
    model = build_model(config, build_tasks(config))
    build_run_method(config).prepare(model)
    return model


def test_schedule_travel_is_the_sum_of_the_step_schedule():
    assert schedule_travel(1e-3, 0.5, 4000, 0, 20000) == pytest.approx(7.75)
    brute = sum(1e-4 * 0.3 ** (t // 12000) for t in range(100000))
    assert schedule_travel(1e-4, 0.3, 12000, 0, 100000) == pytest.approx(brute, rel=1e-9)
    # a resumed run only has the rest of the schedule
    assert schedule_travel(1e-3, 0.5, 4000, 18000, 20000) == pytest.approx(2000 * 1e-3 / 16)


def _tiny(tiny_settings, init, threshold_lr):
    settings = dict(tiny_settings)
    # the paper recipe: its level depends on how far the thresholds travel
    settings["method"] = {**settings["method"], "options": {"recipe": "paper", "init": init}}
    settings["optim"] = {**settings["optim"], "threshold_lr": threshold_lr}
    return from_dict(settings)


def test_reach_compares_the_reachable_alpha_with_the_weights_target_quantile(tiny_settings):
    config = _tiny(tiny_settings, -12.0, 1e-4)
    model = _model(config)
    reach = threshold_reach(config, model)
    assert (config.optim.lr_step, config.optim.lr_gamma, config.train.iterations) == (10, 0.5, 12)
    travel = 10 * 1e-4 + 2 * 1e-4 * 0.5
    assert reach.theta == -12.0 and reach.travel == pytest.approx(travel)
    weights = torch.cat(
        [p.detach().abs().flatten() for n, p in model.named_parameters() if "original" in n]
    )
    assert reach.needed_alpha == pytest.approx(torch.quantile(weights, 0.5).item(), rel=1e-3)
    alpha = 1 / (1 + math.exp(12.0 - travel))
    assert reach.shortfall == pytest.approx(reach.needed_alpha / alpha)


def test_a_run_that_cannot_reach_its_target_is_refused_with_the_numbers(tiny_settings, tmp_path):
    config = _tiny(tiny_settings, -12.0, 1e-4)
    with pytest.raises(UserError) as caught:
        Trainer(config, tmp_path / "run", verbose=False)
    message = str(caught.value)
    assert "method.target 0.5: cannot be reached" in message
    assert "optim.threshold_lr 0.0001" in message and "theta -12.00" in message
    assert not (tmp_path / "run").exists()


def test_the_scheduled_level_is_not_checked_for_travel(tiny_settings, tmp_path):
    config = _tiny(tiny_settings, -12.0, 1e-4)
    config.method.options["recipe"] = "recommended"  # lands by the common rescale
    with warnings.catch_warnings():
        warnings.simplefilter("error", ThresholdReachWarning)
        Trainer(config, tmp_path / "run", verbose=False)


def test_an_unlikely_target_warns_and_a_reachable_one_is_silent(tiny_settings):
    # alpha reachable ~ 3e-5 against a median |W| of a few 1e-3: between 100x and 1000x
    config = _tiny(tiny_settings, -10.5, 1e-4)
    with pytest.warns(ThresholdReachWarning, match="unlikely to be reached"):
        check_threshold_reach(config, _model(config))
    config = _tiny(tiny_settings, -5.0, 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_threshold_reach(config, _model(config)).shortfall < 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "path",
    [
        "configs/nyuv2/resnet34_adapmtl.yaml",
        "configs/nyuv2/mobilenetv2_adapmtl.yaml",
        "configs/taskonomy/resnet34_adapmtl.yaml",
        "configs/taskonomy/mobilenetv2_adapmtl.yaml",
    ],
)
def test_the_full_scale_presets_can_reach_their_targets(path):
    config = load_config(path, [])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reach = check_threshold_reach(config, _model(config))
    assert reach.shortfall < 30  # the NYUv2 ResNet34 recipe's margin is 22x
