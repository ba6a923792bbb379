"""Mask mode (W * M): set_masks, current_masks and the gradient of a masked weight."""

from __future__ import annotations

import pytest
import torch

from adapmtl.sparsity import current_masks, freeze_masks, report, set_masks, sparsify, thresholds
from sparsity_toys import ConvMTL, conv_mtl, single_thread, total_loss

_single_thread = pytest.fixture(autouse=True)(single_thread)


def _random_masks(model, keep: float, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        p: torch.rand(model.get_submodule(p).weight.shape, generator=g) < keep
        for p in ConvMTL.PRUNABLE
    }


def test_set_masks_gives_w_times_m_and_is_counted_by_report():
    model = sparsify(conv_mtl(), mode="mask")
    stored = {p: model.get_submodule(p).weight.detach().clone() for p in ConvMTL.PRUNABLE}
    masks = _random_masks(model, keep=0.3)
    set_masks(model, masks)
    for path, mask in masks.items():
        assert torch.equal(model.get_submodule(path).weight, stored[path] * mask)
        assert torch.equal(current_masks(model)[path], mask)
    r = report(model)
    assert r.overall.nonzero == sum(int(m.sum()) for m in masks.values())
    assert r.overall.total == sum(m.numel() for m in masks.values())
    assert {x.mode for x in r.layers} == {"mask"}


def test_zero_pruned_clears_the_stored_weights_under_the_mask():
    model = sparsify(conv_mtl(), mode="mask")
    masks = _random_masks(model, keep=0.5)
    set_masks(model, masks, zero_pruned=True)
    for path, mask in masks.items():
        stored = model.get_submodule(path).parametrizations.weight.original
        assert torch.all(stored[~mask] == 0)
    kept = sparsify(conv_mtl(), mode="mask")
    set_masks(kept, masks, zero_pruned=False)
    stored = kept.heads.depth.parametrizations.weight.original
    assert torch.all(stored != 0)


def test_masked_weight_gradient_is_the_loss_gradient_times_the_mask():
    torch.manual_seed(0)
    model = sparsify(conv_mtl(), mode="mask").double()
    masks = _random_masks(model, keep=0.5)
    set_masks(model, masks)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    total_loss(model(x)).backward()
    # Reference: the same network with the effective weights as plain leaf tensors.
    reference = conv_mtl().double()
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if ".parametrizations." not in name:
                reference.state_dict()[name].copy_(value)
        for path in ConvMTL.PRUNABLE:
            reference.get_submodule(path).weight.copy_(model.get_submodule(path).weight)
    total_loss(reference(x)).backward()
    for path, mask in masks.items():
        grad = model.get_submodule(path).parametrizations.weight.original.grad
        expected = reference.get_submodule(path).weight.grad * mask
        torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-15)
        assert torch.all(grad[~mask] == 0)


def test_set_masks_rejects_unknown_layers_and_wrong_shapes():
    model = sparsify(conv_mtl(), mode="mask")
    with pytest.raises(KeyError, match=r"heads\.normal"):
        set_masks(model, {"heads.normal": torch.ones(1, 8, 1, 1, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"heads\.depth.*\(1, 8\).*\(1, 8, 1, 1\)"):
        set_masks(model, {"heads.depth": torch.ones(1, 8, dtype=torch.bool)})


def test_freeze_masks_twice_changes_nothing():
    model = sparsify(conv_mtl(), init=-3.0)
    freeze_masks(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    freeze_masks(model)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_freeze_leaves_only_the_weights_trainable():
    # The docstring's contract: after the freeze the thresholds stop receiving gradients, so an
    # optimizer (or DDP, which rejects trainable parameters that get no gradient) sees only the
    # weights and biases.
    model = sparsify(conv_mtl(), init=-3.0)
    threshold_ids = {id(t) for t in thresholds(model).values()}
    assert threshold_ids and all(t.requires_grad for t in model.parameters())
    freeze_masks(model)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.parameters()} - threshold_ids


def test_current_masks_are_the_nonzeros_of_the_effective_weights():
    # soft thresholds: |W| > alpha; mask mode: the mask, less any stored zero under it
    model = sparsify(conv_mtl(), init=-3.0)
    for path, mask in current_masks(model).items():
        assert torch.equal(mask, model.get_submodule(path).weight != 0), path
    masked = sparsify(conv_mtl(), mode="mask")
    set_masks(masked, _random_masks(masked, keep=0.6))
    with torch.no_grad():
        masked.heads.depth.parametrizations.weight.original.zero_()
    for path, mask in current_masks(masked).items():
        assert torch.equal(mask, masked.get_submodule(path).weight != 0), path
    assert not current_masks(masked)["heads.depth"].any()
