"""DiSparse: per-task scores, backbone union, own-head choice, the solved keep ratio, ERK, the
dynamic schedule, and that every method lands on its target; expectations computed
independently (NumPy, torch.autograd on a plain copy, the formulas of
docs/reference_implementations.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adapmtl.methods.disparse import erk_densities, regrow
from adapmtl.sparsity import report
from methods_harness import (
    TASKS,
    TinyMultiTask,
    grad_scores,
    make_batches,
    masks_np,
    plain_weights,
    prunable,
    start,
)


def stored_np(model) -> dict[str, np.ndarray]:
    """The stored (unmasked) weight of every prunable layer."""
    return {
        path: m.parametrizations.weight.original.detach().numpy().copy()
        for path, m in model.named_modules()
        if hasattr(m, "parametrizations")
    }


def owner(path: str) -> str:
    return "backbone" if path.startswith("backbone") else path.split(".")[1]


def per_task_choice(scores: dict[str, np.ndarray], task: str, keep: float) -> dict[str, np.ndarray]:
    """Task ``task`` keeps the top floor(keep * N_t) of its scores over backbone + own head."""
    layers = [p for p in scores if owner(p) in ("backbone", task)]
    flat = np.concatenate([scores[p].ravel() for p in layers])
    count = math.floor(keep * flat.size + 1e-9)
    chosen = np.zeros(flat.size, dtype=bool)
    chosen[np.argsort(-flat, kind="stable")[:count]] = True
    out, at = {}, 0
    for p in layers:
        out[p] = chosen[at : at + scores[p].size].reshape(scores[p].shape)
        at += scores[p].size
    return out


def union_rule(per_task: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Backbone: kept if any task keeps it; head t: task t's choice."""
    expected: dict[str, np.ndarray] = {}
    for task, choice in per_task.items():
        for path, mask in choice.items():
            if owner(path) == "backbone":
                expected[path] = expected.get(path, np.zeros_like(mask)) | mask
            elif owner(path) == task:
                expected[path] = mask
    return expected


def kept(masks: dict[str, np.ndarray]) -> int:
    return sum(int(m.sum()) for m in masks.values())


def test_static_backbone_is_the_union_of_task_choices_and_heads_keep_their_own():
    scoring = make_batches(3, seed=7)
    target = 0.7
    run = start("disparse", target, {"num_batches": 3}, scoring=scoring)
    torch.manual_seed(0)
    init = TinyMultiTask().state_dict()
    run.begin()
    keep = run.method.summary()["keep_ratio"]
    scores = {t: grad_scores(init, scoring, (t,)) for t in TASKS}  # each task's own loss only
    expected = union_rule({t: per_task_choice(scores[t], t, keep) for t in TASKS})
    got = masks_np(run.model)
    assert got.keys() == expected.keys()
    for path in got:
        assert np.array_equal(got[path], expected[path]), path
    # the solved ratio is the smallest reaching the target's count: a slightly smaller one misses
    total = sum(m.size for m in got.values())
    target_count = round((1 - target) * total)
    assert kept(got) >= target_count
    smaller = union_rule({t: per_task_choice(scores[t], t, keep - 1e-6) for t in TASKS})
    assert kept(smaller) < target_count
    assert abs(report(run.model).sparsity - target) < 0.005
    # the backbone keeps weights a single task would have dropped (the union is not one task's)
    a_only = per_task_choice(scores["a"], "a", keep)
    assert kept({p: got[p] for p in got if owner(p) == "backbone"}) > kept(
        {p: m for p, m in a_only.items() if owner(p) == "backbone"}
    )


def test_static_faithful_keep_ratio_and_xavier_scoring_copy():
    scoring = make_batches(2, seed=8)
    run = start(
        "disparse",
        0.9,
        {"num_batches": 2, "keep_ratio": 0.3, "score_on": "xavier"},
        scoring=scoring,
    )
    torch.manual_seed(0)
    init = TinyMultiTask().state_dict()
    run_rng = torch.get_rng_state()  # the random state on_start draws the xavier copy from
    run.begin()
    got = masks_np(run.model)
    # the model keeps its own initial weights under the masks
    for path, w in plain_weights(run.model).items():
        assert np.array_equal(w, np.where(got[path], init[f"{path}.weight"].numpy(), 0))
    # the masks are those of scores taken on a xavier-normal copy, drawn in layer order from the
    # same random state, each task keeping floor(0.3 N_t) of its own scores
    xavier = TinyMultiTask()
    xavier.load_state_dict(init)
    torch.set_rng_state(run_rng)
    with torch.no_grad():
        for layer in prunable(xavier).values():
            torch.nn.init.xavier_normal_(layer.weight)
    scores = {t: grad_scores(xavier.state_dict(), scoring, (t,)) for t in TASKS}
    expected = union_rule({t: per_task_choice(scores[t], t, 0.3) for t in TASKS})
    for path in got:
        assert np.array_equal(got[path], expected[path]), path
    # and differ from the masks the model's own initial weights would give
    own = {t: grad_scores(init, scoring, (t,)) for t in TASKS}
    own_masks = union_rule({t: per_task_choice(own[t], t, 0.3) for t in TASKS})
    assert any(not np.array_equal(got[p], own_masks[p]) for p in got)
    assert run.method.summary()["keep_ratio"] == 0.3


def test_erk_densities_meet_the_density_and_scale_with_the_layer_shape():
    shapes = {
        "stem": torch.Size([4, 3, 1, 1]),  # tiny layer with a high raw score: becomes dense
        "conv": torch.Size([64, 64, 3, 3]),
        "fc": torch.Size([32, 256]),
    }
    density = 0.1
    d = erk_densities(shapes, density, power=0.9)
    sizes = {k: math.prod(v) for k, v in shapes.items()}
    assert d["stem"] == 1.0
    assert sum(d[k] * sizes[k] for k in shapes) == pytest.approx(density * sum(sizes.values()))
    raw = {k: (sum(v) / sizes[k]) ** 0.9 for k, v in shapes.items()}
    assert d["conv"] / d["fc"] == pytest.approx(raw["conv"] / raw["fc"])


def test_regrowth_backbone_takes_the_union_and_each_head_only_its_own_task():
    g = torch.Generator().manual_seed(0)
    pruned = {
        "backbone.0": torch.rand(40, generator=g) < 0.3,
        "heads.a.0": torch.rand(20, generator=g) < 0.3,
        "heads.b.0": torch.rand(20, generator=g) < 0.3,
    }
    owners = {"backbone.0": "backbone", "heads.a.0": "a", "heads.b.0": "b"}
    gradients = {t: {p: torch.rand(m.shape, generator=g) for p, m in pruned.items()} for t in TASKS}
    counts = {"backbone.0": 5, "heads.a.0": 3, "heads.b.0": 4}
    grown = regrow(pruned, gradients, owners, counts)

    def pick(task: str, path: str) -> set[int]:
        scores = gradients[task][path].numpy().copy()
        scores[pruned[path].numpy()] = -np.inf
        return set(np.argsort(-scores)[: counts[path]].tolist())

    assert set(np.flatnonzero(grown["backbone.0"].numpy())) == pick("a", "backbone.0") | pick(
        "b", "backbone.0"
    )
    assert set(np.flatnonzero(grown["heads.a.0"].numpy())) == pick("a", "heads.a.0")
    assert set(np.flatnonzero(grown["heads.b.0"].numpy())) == pick("b", "heads.b.0")
    for path, mask in grown.items():
        assert not torch.any(mask & pruned[path])  # only inactive weights grow


def test_dynamic_schedule_updates_until_end_then_trims_to_erk_and_fixes_the_masks():
    target, iterations, every = 0.8, 40, 4
    run = start(
        "disparse",
        target,
        {"mode": "dynamic", "update_every": every, "end_fraction": 0.75},
        iterations=iterations,
    )
    run.begin()
    densities = run.method.densities
    masks = masks_np(run.model)
    first = next(iter(masks))
    assert masks[first].all()  # the stem starts dense
    for path, mask in masks.items():
        if path != first:
            assert mask.sum() == round(densities[path] * mask.size)
    end = 30
    history = []
    magnitudes: dict[str, np.ndarray] = {}

    def record_magnitudes(_: int) -> None:  # the weights the update sees, after the optimizer
        magnitudes.clear()
        magnitudes.update({p: np.abs(w) for p, w in stored_np(run.model).items()})

    run.before_after_step.append(record_magnitudes)
    for it in range(iterations):
        before = masks_np(run.model)
        run.step()
        after = masks_np(run.model)
        history.append(after)
        rate = 0.25 * (1 + math.cos(math.pi * it / end))
        if it + 1 < end and it % every == 0:
            dropped = 0
            for path in after:
                n = after[path].size
                # the drop keeps the round(d_l (1 - r_t) N_l) largest active weights (NumPy sort)
                keep = min(round(densities[path] * (1 - rate) * n), int(before[path].sum()))
                active = np.where(before[path], magnitudes[path], -np.inf).ravel()
                survivors = np.zeros(n, dtype=bool)
                survivors[np.argsort(-active, kind="stable")[:keep]] = True
                assert np.all(after[path].ravel()[survivors]), (it, path)
                # regrowth restores the ERK density d_l: each task grows round(d_l N_l) - keep;
                # the backbone grows the union of the two tasks' picks
                grow = round(densities[path] * n) - keep
                if owner(path) == "backbone":
                    assert keep + grow <= after[path].sum() <= keep + 2 * grow, (it, path)
                else:
                    assert after[path].sum() == keep + grow, (it, path)
                dropped += int((before[path] & ~after[path]).sum())
            assert dropped > 0, f"update at iteration {it} changed no mask"
        elif it + 1 < end:
            assert all(np.array_equal(after[p], before[p]) for p in after)
    at_end = history[end - 1]
    for path, mask in at_end.items():
        assert mask.sum() == round(densities[path] * mask.size)
    for later in history[end:]:
        assert all(np.array_equal(later[p], at_end[p]) for p in later)
    assert run.method.at_target() and run.method.summary()["fixed_at"] == end
    assert abs(report(run.model).sparsity - target) < 0.005


def test_dynamic_run_resumed_from_its_state_equals_an_uninterrupted_run():
    options = {"mode": "dynamic", "update_every": 3, "end_fraction": 0.75}
    whole = start("disparse", 0.8, options, iterations=24)
    whole.fit()
    part = start("disparse", 0.8, options, iterations=24)
    part.fit(until=10)
    rng = torch.get_rng_state()
    saved = (
        part.model.state_dict(),
        part.method.state_dict(),
        part.ctx.optimizer.state_dict(),
        part.ctx.scheduler.state_dict(),
    )
    resumed = start("disparse", 0.8, options, iterations=24, seed=5)
    resumed.model.load_state_dict(saved[0])
    resumed.method.load_state_dict(saved[1])
    resumed.ctx.optimizer.load_state_dict(saved[2])
    resumed.ctx.scheduler.load_state_dict(saved[3])
    resumed.started, resumed.iteration = True, 10
    torch.set_rng_state(rng)
    resumed.fit()
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("snip", {}),
        ("lth", {"dense_fraction": 0.4}),
        ("imp", {"steps": 4}),
        ("disparse", {"num_batches": 2}),
        ("disparse", {"mode": "dynamic", "update_every": 3}),
        ("adapmtl", {"init": -3.0}),
    ],
)
@pytest.mark.parametrize("target", [0.6, 0.9])
def test_every_method_ends_within_half_a_point_of_the_target(name, options, target):
    run = start(name, target, options, iterations=30)
    run.fit()
    sparsity = report(run.model).sparsity
    assert abs(sparsity - target) <= 0.005, sparsity
    assert run.method.at_target()


@pytest.mark.parametrize("power", [0.5, 1.0])
def test_dynamic_masks_start_at_the_erk_densities_of_the_chosen_power(power):
    options = {"mode": "dynamic", "update_every": 4, "erk_power": power}
    run = start("disparse", 0.8, options, iterations=20)
    run.begin()
    masks = masks_np(run.model)
    shapes = {path: torch.Size(mask.shape) for path, mask in masks.items()}
    expected = erk_densities(shapes, 0.2, power)
    first = next(iter(masks))  # the stem starts dense
    for path, mask in masks.items():
        if path != first:
            assert mask.sum() == round(expected[path] * mask.size), path
