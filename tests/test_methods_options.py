"""Mask-method options at their edges: the inclusive ends of the accepted ranges, LTH's prune
iterations by hand, IMP's initial prune at t0 = 1, and the defaults docs/methods.md states."""

from __future__ import annotations

import pytest

from adapmtl.errors import UserError
from adapmtl.methods import build_method
from adapmtl.sparsity import report
from methods_harness import start


def test_documented_defaults():
    # docs/methods.md: SNIP scores over 1 batch, IMP prunes in 20 steps, DiSparse-static scores
    # over 50 batches and DiSparse-dynamic updates every 50 iterations
    assert build_method("snip", 0.9, {}).summary() == {"scoring_batches": 1}
    assert build_method("imp", 0.9, {}).options.steps == 20
    disparse = build_method("disparse", 0.9, {}).options
    assert (disparse.num_batches, disparse.update_every) == (50, 50)


def test_disparse_keep_ratio_one_is_accepted_and_zero_is_not():
    assert build_method("disparse", 0.9, {"keep_ratio": 1.0}).options.keep_ratio == 1.0
    with pytest.raises(UserError, match="keep_ratio"):
        build_method("disparse", 0.9, {"keep_ratio": 0.0})


def test_lth_prune_iterations_by_hand():
    # without a dense checkpoint: rounds at r * dense_fraction * iterations / rounds, r = 1..3
    lth = build_method("lth", 0.9, {"rounds": 3, "dense_fraction": 0.6})
    assert lth.prune_iterations(100) == [20, 40, 60]
    # from a dense checkpoint: the first round at 0, the others spread over dense_fraction
    from_dense = {"rounds": 3, "dense_fraction": 0.5, "dense_checkpoint": "dense.pt"}
    assert build_method("lth", 0.9, from_dense).prune_iterations(100) == [0, 25, 50]
    one_round = {"rounds": 1, "dense_fraction": 0.0, "dense_checkpoint": "dense.pt"}
    assert build_method("lth", 0.9, one_round).prune_iterations(100) == [0]


def test_lth_rewind_may_be_the_first_prune_but_not_after_it():
    at_prune = {"rounds": 1, "dense_fraction": 0.5, "rewind_iteration": 50}
    assert build_method("lth", 0.9, at_prune).prune_iterations(100) == [50]
    after = {"rounds": 1, "dense_fraction": 0.5, "rewind_iteration": 51}
    with pytest.raises(UserError, match="rewind_iteration 51 is after the first prune"):
        build_method("lth", 0.9, after).prune_iterations(100)


def test_imp_start_must_come_before_end():
    with pytest.raises(UserError, match="start_fraction"):
        build_method("imp", 0.9, {"start_fraction": 0.5, "end_fraction": 0.5})
    with pytest.raises(UserError, match="end_fraction < 1"):
        build_method("imp", 0.9, {"start_fraction": 0.5, "end_fraction": 1.0})
    build_method("imp", 0.9, {"start_fraction": 0.0, "end_fraction": 0.99})


def test_imp_prunes_to_the_initial_sparsity_at_t0_one():
    # 20 iterations, start 0.05: t0 = 1; the first scheduled step is at round(1 + 9 / 2) = 6
    options = {"start_fraction": 0.05, "end_fraction": 0.5, "steps": 2, "initial_sparsity": 0.3}
    run = start("imp", 0.8, options, iterations=20)
    run.begin()
    assert report(run.model).sparsity == 0.0
    run.step()
    counts = report(run.model).overall
    assert counts.total - counts.nonzero == counts.total - round(0.7 * counts.total)


def test_imp_initial_sparsity_may_equal_the_target_but_not_exceed_it():
    at_target = build_method("imp", 0.6, {"initial_sparsity": 0.6, "steps": 2})
    # every scheduled step then prunes to the target itself
    assert [s for _, s in at_target.schedule(100)] == [pytest.approx(0.6)] * 2
    with pytest.raises(UserError, match=r"initial_sparsity must be in \[0, target\], got 0.7"):
        build_method("imp", 0.6, {"initial_sparsity": 0.7})


def test_unknown_method_is_named_under_method_name():
    with pytest.raises(UserError, match=r"^method.name: unknown method 'snipp'.*valid: .*snip"):
        build_method("snipp", 0.9, {})


def test_a_plain_method_trains_every_parameter_at_the_given_rate_and_decay():
    import torch

    from methods_harness import TinyMultiTask

    model = TinyMultiTask()
    groups = build_method("dense", None, {}).param_groups(
        model, lr=0.1, weight_decay=0.01, threshold_lr=5.0, threshold_weight_decay=5.0
    )
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    torch.optim.SGD(groups, lr=1.0, weight_decay=0.0).step()  # the groups' values win
    for old, p in zip(before, model.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), old - 0.1 * (1.0 + 0.01 * old))


@pytest.mark.parametrize("name", ["lth", "imp"])
def test_lth_and_imp_leave_the_excluded_layers_dense(name):
    from adapmtl.sparsity import sparse_layers
    from methods_harness import TinyMultiTask

    model = build_method(name, 0.9, {"exclude": ["heads.a"]}).prepare(TinyMultiTask())
    paths = {path for path, _, _ in sparse_layers(model)}
    assert paths and not any(path.startswith("heads.a") for path in paths)
    assert any(path.startswith("heads.b") for path in paths)


def test_pressure_level_steers_the_threshold_decay_by_the_cubic_schedule():
    # level: pressure, growth 2: at every check the thresholds' weight decay doubles while the
    # sparsity lags s*(t) = 0.5 (1 - (1 - t / until)^3), until = round(0.5 * 8) = 4, and halves
    # otherwise; the check at iteration t sees the sparsity left by the step before, and once
    # it reaches the target the masks are frozen and the decay stays.
    from adapmtl.sparsity import overall_sparsity

    options = {"level": "pressure", "allocation": "gradient", "pressure_growth": 2.0, "init": -3}
    run = start("adapmtl", 0.5, options, iterations=8)
    run.begin()
    seen = [overall_sparsity(run.model)]
    run.before_after_step.append(lambda _: seen.append(overall_sparsity(run.model)))
    decays = []
    for _ in range(6):
        run.step()
        group = next(g for g in run.ctx.optimizer.param_groups if g.get("name") == "thresholds")
        decays.append(group["weight_decay"])
    expected, decay = [], 1.0  # the harness's threshold weight decay
    for t in range(6):
        schedule = 0.5 * (1 - (1 - min(t / 4, 1.0)) ** 3)
        if max(seen[: t + 1]) < 0.5:
            decay = decay * 2.0 if seen[t] < schedule else decay / 2.0
        expected.append(decay)
    assert decays == pytest.approx(expected)
    assert 2.0 in [b / a for a, b in zip([1.0, *decays], decays, strict=False)]  # it did lag


def test_imp_prunes_to_the_initial_sparsity_at_the_start_when_t0_is_zero():
    options = {"start_fraction": 0.0, "end_fraction": 0.5, "steps": 2, "initial_sparsity": 0.3}
    run = start("imp", 0.8, options, iterations=20)
    run.begin()
    counts = report(run.model).overall
    assert counts.nonzero == round(0.7 * counts.total)
    with pytest.raises(UserError, match=r"options.steps must be >= 1, got 0"):
        build_method("imp", 0.8, {"steps": 0})


def test_adapmtl_thresholds_get_no_weight_decay_unless_asked():
    from methods_harness import TinyMultiTask

    method = build_method("adapmtl", 0.5, {})
    model = method.prepare(TinyMultiTask())
    groups = method.param_groups(model, lr=0.1, weight_decay=0.01)
    decay = {group.get("name"): group["weight_decay"] for group in groups}
    assert decay["thresholds"] == 0.0
    assert 0.01 in decay.values()


def test_adapmtl_needs_a_target_and_dense_keeps_the_weights_after_the_given_step():
    with pytest.raises(UserError, match=r"adapmtl needs a target sparsity \(method.target\)"):
        build_method("adapmtl", None, {})
    from methods_harness import plain_weights

    run = start("dense", None, {"keep_weights_at": 2}, iterations=4)
    after = {}
    run.before_after_step.append(lambda it: after.__setitem__(it, plain_weights(run.model)))
    run.fit()
    kept = run.method.state_dict()["kept_weights"]
    assert kept["iteration"] == 2
    for path, w in after[1].items():  # the weights after 2 steps (iterations 0 and 1)
        assert (kept["state"][f"{path}.weight"].numpy() == w).all(), path


def test_lth_names_the_last_prune_that_leaves_no_retraining():
    lth = build_method("lth", 0.9, {"rounds": 3, "dense_fraction": 0.999})
    with pytest.raises(UserError, match=r"the last prune at iteration 100 leaves no retraining"):
        lth.prune_iterations(100)
