"""Landing on the target sparsity (``land_on_target`` and the controller's freeze) as properties
over random weight sets and thresholds: the exact pruned count, thresholds only going down by one
common factor, and the pruning order of |W| / alpha kept across groups. Expectations are
computed with NumPy from the weights and thresholds before landing."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adapmtl.sparsity import (
    TargetSparsityController,
    report,
    set_masks,
    sparse_layers,
    sparsify,
    thresholds,
)
from adapmtl.sparsity.controller import land_on_target
from sparsity_toys import LinearMTL, logit, sparsified_linear_mtls

SETTINGS = settings(max_examples=40, deadline=None)


def ratios_by_layer(model) -> dict[str, np.ndarray]:
    """|W| / alpha_g of every soft-thresholded weight (float64, from the stored weights)."""
    out = {}
    for path, module, p in sparse_layers(model):
        if p.masked or p.theta is None:
            continue
        w = module.parametrizations.weight.original.detach().double().numpy()
        out[path] = np.abs(w) / (1.0 / (1.0 + math.exp(-float(p.theta.detach()))))
    return out


def alphas(model) -> dict[str, float]:
    return {g: float(torch.sigmoid(t.detach().double())) for g, t in thresholds(model).items()}


def pruned_by_layer(model) -> dict[str, np.ndarray]:
    return {
        path: ~p.active(module.parametrizations.weight.original).numpy()
        for path, module, p in sparse_layers(model)
    }


@SETTINGS
@given(model=sparsified_linear_mtls(), fraction=st.floats(0.05, 0.95))
def test_landing_prunes_exactly_ceil_target_n_weights_of_the_smallest_ratio(model, fraction):
    start = report(model)
    if start.overall.total - start.overall.nonzero < 2:
        return  # nothing to land on: the thresholds prune (almost) nothing
    target = fraction * start.sparsity
    ratios = ratios_by_layer(model)
    before = alphas(model)
    land_on_target(model, target)

    n = start.overall.total
    after = report(model)
    assert after.overall.total == n
    assert n - after.overall.nonzero == math.ceil(target * n)
    # the pruned set is the ceil(target * n) weights of smallest |W| / alpha over all groups
    flat = np.concatenate([r.ravel() for r in ratios.values()])
    cut = np.sort(flat)[math.ceil(target * n) - 1]
    pruned = pruned_by_layer(model)
    for path, r in ratios.items():
        assert np.array_equal(pruned[path], r <= cut), path
    # thresholds only go down, all by one factor (the groups' relative order is kept)
    factors = [alphas(model)[g] / before[g] for g in before]
    assert all(f <= 1.0 for f in factors)
    assert max(factors) - min(factors) <= 1e-5 * max(factors)


@SETTINGS
@given(model=sparsified_linear_mtls(), excess=st.floats(0.01, 0.9))
def test_landing_above_the_current_sparsity_changes_nothing(model, excess):
    start = report(model).sparsity
    target = start + (1.0 - start) * excess
    before = {g: t.detach().clone() for g, t in thresholds(model).items()}
    land_on_target(model, target)
    for group, theta in thresholds(model).items():
        assert torch.equal(theta, before[group]), group


def test_landing_counts_only_soft_thresholded_layers():
    torch.manual_seed(3)
    model = sparsify(LinearMTL(8, 10, 3, 2), grouping="layer")
    with torch.no_grad():
        for theta in thresholds(model).values():
            theta.fill_(logit(0.3))
    # one layer switched to a fixed mask: land_on_target leaves it and its threshold alone
    path, module, p = sparse_layers(model)[0]
    mask = torch.rand_like(module.parametrizations.weight.original) < 0.5
    set_masks(model, {path: mask})
    masked_theta = p.theta.detach().clone()
    soft = [(q, m) for _, m, q in sparse_layers(model) if not q.masked]
    n = sum(m.parametrizations.weight.original.numel() for _, m in soft)
    land_on_target(model, 0.2)
    pruned = sum(int((~q.active(m.parametrizations.weight.original)).sum()) for q, m in soft)
    assert pruned == math.ceil(0.2 * n)
    assert torch.equal(p.mask, mask)
    assert torch.equal(p.theta.detach(), masked_theta)


@settings(max_examples=15, deadline=None)
@given(model=sparsified_linear_mtls(), fraction=st.floats(0.1, 0.9))
def test_controller_freezes_exactly_at_the_target_count(model, fraction):
    start = report(model)
    if start.overall.total - start.overall.nonzero < 2:
        return
    target = fraction * start.sparsity
    controller = TargetSparsityController(model, target)
    assert controller.step(0) is True
    frozen = report(model)
    pruned = frozen.overall.total - frozen.overall.nonzero
    assert pruned == math.ceil(target * frozen.overall.total)
    assert all(p.masked for _, _, p in sparse_layers(model))
    assert controller.last_sparsity == frozen.sparsity


def test_sparsity_exactly_at_the_target_freezes_without_moving():
    model = sparsify(LinearMTL(3, 2, 2, 1), grouping="global")  # 6 + 4 + 4 + 2 = 16 weights
    with torch.no_grad():
        thresholds(model)["all"].fill_(logit(0.25))
        for _, module, _ in sparse_layers(model):
            stored = module.parametrizations.weight.original.view(-1)
            stored.copy_(torch.tensor([0.1, -0.5] * 8)[: stored.numel()])  # half below 0.25
    assert report(model).sparsity == 0.5
    controller = TargetSparsityController(model, 0.5)
    assert controller.step(0) is True and controller.frozen_at == 0
    frozen = report(model)
    assert (frozen.overall.nonzero, frozen.overall.total) == (8, 16)
