"""report() and overall_sparsity() counts on random models: every count equals the number of
nonzeros of the effective weight the forward pass uses, whatever the mix of soft-threshold,
frozen and mask layers."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adapmtl.sparsity import (
    freeze_masks,
    overall_sparsity,
    report,
    set_masks,
    sparse_layers,
)
from sparsity_toys import sparsified_linear_mtls

SETTINGS = settings(max_examples=50, deadline=None)


@st.composite
def models(draw):
    model = draw(
        sparsified_linear_mtls(sizes=(1, 10), groupings=("component", "layer", "global"),
                               alphas=(0.001, 0.9))
    )  # fmt: skip
    with torch.no_grad():
        # some stored weights exactly on their threshold, either sign: S(W, a) is 0 there
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
        for _, module, p in sparse_layers(model):
            flat = module.parametrizations.weight.original.view(-1)
            picks = torch.randint(0, flat.numel(), (2,), generator=g)
            alpha = torch.sigmoid(p.theta)
            flat[picks[0]], flat[picks[1]] = alpha, -alpha
    if draw(st.booleans()):
        freeze_masks(model)
    layers = sparse_layers(model)
    chosen = draw(st.lists(st.sampled_from([path for path, _, _ in layers]), unique=True))
    set_masks(
        model,
        {
            path: torch.rand(m.parametrizations.weight.original.shape, generator=g) < 0.5
            for path, m, _ in layers
            if path in chosen
        },
        zero_pruned=draw(st.booleans()),
    )
    return model


@SETTINGS
@given(model=models())
def test_every_count_is_the_nonzeros_of_the_effective_weight(model):
    r = report(model)
    by_layer = {}
    with torch.no_grad():
        for path, module, _ in sparse_layers(model):
            effective = module.weight  # what the forward pass multiplies with
            by_layer[path] = (int(torch.count_nonzero(effective)), effective.numel())
    assert {x.path: (x.nonzero, x.total) for x in r.layers} == by_layer
    for component, counts in r.components.items():
        members = [x for x in r.layers if x.component == component]
        assert counts.nonzero == sum(x.nonzero for x in members)
        assert counts.total == sum(x.total for x in members)
    assert r.overall.nonzero == sum(n for n, _ in by_layer.values())
    assert r.overall.total == sum(t for _, t in by_layer.values())
    expected = 1.0 - r.overall.nonzero / r.overall.total
    assert r.sparsity == expected
    assert overall_sparsity(model) == expected
    assert r.to_dict()["overall"] == {
        "nonzero": r.overall.nonzero,
        "total": r.overall.total,
        "sparsity": expected,
    }
