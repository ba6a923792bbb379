"""AdapMTL's recipes: ``paper`` is the paper's mechanics (soft thresholds, fixed threshold decay,
optimizer-learned thresholds), ``recommended`` the scheduled level; explicit options win."""

from __future__ import annotations

import pytest
import torch

from adapmtl.config import from_dict
from adapmtl.engine.trainer import Trainer
from adapmtl.methods.adapmtl import AdapMTL, resolve_recipe
from adapmtl.sparsity import report
from adapmtl.sparsity.pressure import thresholds_group


def resolved(**options):
    out = resolve_recipe(AdapMTL.Options(**options))
    return out.threshold, out.regrow, out.level, out.allocation


def test_the_paper_recipe_is_soft_thresholds_fixed_decay_and_learned_thresholds():
    assert resolved(recipe="paper") == ("soft", False, "none", "gradient")


def test_explicit_options_override_the_recipe():
    assert resolved(recipe="paper", level="pressure") == ("soft", False, "pressure", "gradient")
    threshold, regrow, level, _ = resolved(recipe="recommended", regrow=False)
    assert (threshold, regrow, level) == ("auto", False, "schedule")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"recipe": "papr"}, "recipe must be one of"),
        ({"threshold": "fuzzy"}, "threshold must be one of"),
    ],
)
def test_bad_recipes_and_choices_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        resolve_recipe(AdapMTL.Options(**options))


def test_allocations_other_than_the_optimizers_need_a_level():
    with pytest.raises(ValueError, match="allocation 'cost' needs level 'schedule'"):
        AdapMTL(0.5, AdapMTL.Options(recipe="paper", allocation="cost"))
    # the pressure acts through the thresholds' weight decay, which needs their gradients
    for level in ("none", "pressure"):
        with pytest.raises(ValueError, match="allocation 'none' needs level 'schedule'"):
            AdapMTL(0.5, AdapMTL.Options(recipe="paper", allocation="none", level=level))


def run(settings, tmp_path, options, iterations=8):
    settings["method"] = {"name": "adapmtl", "target": 0.5, "options": options}
    settings["train"] = {**settings["train"], "iterations": iterations}
    trainer = Trainer(from_dict(settings), tmp_path / "run", verbose=False)
    weight_decays = []
    original_step = trainer.method.after_backward

    def record(ctx, iteration):
        original_step(ctx, iteration)
        weight_decays.append(thresholds_group(ctx.optimizer)["weight_decay"])

    trainer.method.after_backward = record
    results = trainer.fit()
    return trainer, results, weight_decays


@pytest.mark.slow
def test_paper_recipe_keeps_the_threshold_decay_fixed_and_learns_soft_thresholds(
    tiny_settings, tmp_path
):
    trainer, _, weight_decays = run(tiny_settings, tmp_path, {"recipe": "paper", "init": -5.0})
    # the config's fixed decay on every step, as the reference code
    assert weight_decays == [tiny_settings["optim"]["threshold_weight_decay"]] * 8
    layers = report(trainer.model).layers
    frozen = trainer.method.controller.frozen
    assert {layer.mode for layer in layers} == ({"mask"} if frozen else {"soft"})
    thetas = [t.detach() for t in trainer.model.sparsity_thresholds.values()]
    assert all(float(theta) != -5.0 for theta in thetas)  # moved by the optimizer


@pytest.mark.slow
def test_recommended_recipe_is_soft_before_batchnorm_hard_elsewhere_and_lands_on_time(
    tiny_settings, tmp_path
):
    settings = dict(tiny_settings, train={**tiny_settings["train"], "iterations": 10})
    settings["method"] = {"name": "adapmtl", "target": 0.5, "options": {"init": -5.0}}
    trainer = Trainer(from_dict(settings), tmp_path / "run", verbose=False)
    modes = []
    original = trainer.method.after_backward

    def record(ctx, iteration):
        if iteration == 2:
            modes.extend((layer.path, layer.mode) for layer in report(ctx.model).layers)
        original(ctx, iteration)

    trainer.method.after_backward = record
    results = trainer.fit()
    # models/resnet.py: a BatchNorm after every backbone conv; models/aspp.py: none in the heads
    assert modes and all(
        mode == ("soft" if path.startswith("backbone.") else "hard") for path, mode in modes
    )
    # schedule_until 0.5 of 10 iterations: the target is reached at iteration 5
    assert results["method"]["frozen_at"] == 5
    assert results["sparsity"]["overall"]["sparsity"] == pytest.approx(0.5, abs=1e-4)
    assert not any(t.requires_grad for t in trainer.model.sparsity_thresholds.values())
    assert isinstance(trainer.model.sparsity_thresholds["backbone"], torch.nn.Parameter)


@pytest.mark.slow
def test_pressure_keeps_steering_in_official_mode_after_the_target_is_first_reached(
    tiny_settings, tmp_path
):
    options = {"recipe": "paper", "level": "pressure", "controller": "official", "init": -5.0}
    trainer, _, weight_decays = run(tiny_settings, tmp_path, options, iterations=12)
    first = trainer.method.controller.frozen_at
    assert first is not None and first < 11
    # official mode never fixes the mask: the decay is still steered after the first reach
    assert len(set(weight_decays[first + 1 :])) > 1


@pytest.mark.slow
def test_pressure_updates_only_on_the_controllers_checks(tiny_settings, tmp_path):
    options = {"recipe": "paper", "level": "pressure", "check_every": 3, "init": -9.0}
    _, _, weight_decays = run(tiny_settings, tmp_path, options, iterations=9)
    # the decay may change only after a check (iterations 0, 3, 6), never from a stale sparsity
    for iteration in range(1, 9):
        if iteration % 3:
            assert weight_decays[iteration] == weight_decays[iteration - 1], iteration
