"""Final masks kept in the weights (``keep_masks_in_weights``, ``train.masks_in_weights``):
training goes on value for value as with ``W * M`` in every forward, the forward no longer makes
a weight-sized copy, and any new mask or loaded state returns a layer to ``W * M``. The
expectation is always the ``W * M`` path run beside it on a copy of the same state."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from adapmtl.sparsity import (
    freeze_masks,
    keep_masks_in_weights,
    param_groups,
    set_masks,
    sparse_layers,
    sparsify,
)
from adapmtl.sparsity.recycle import RECYCLE_BYTES
from conftest import fit_tiny
from sparsity_toys import conv_mtl, logit, total_loss


def batches(count: int, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, 8, 8, generator=g) for _ in range(count)]


def adam_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = total_loss(model(x))
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def frozen_after_training(steps: int = 4) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A hard-threshold model with regrowth (pruned weights get gradients, so Adam's moments
    are nonzero under the mask) trained a few steps and then frozen, with its optimizer."""
    torch.manual_seed(0)
    model = sparsify(conv_mtl(), mode="hard", regrow=True, init=logit(0.05))
    optimizer = torch.optim.Adam(param_groups(model, lr=1e-2), weight_decay=1e-3)
    for x in batches(steps, seed=2):
        adam_step(model, optimizer, x)
    freeze_masks(model)
    return model, optimizer


def copy_with_optimizer(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    twin = copy.deepcopy(model)
    twin_optimizer = torch.optim.Adam(param_groups(twin, lr=1e-2), weight_decay=1e-3)
    # a deep copy: Adam's load_state_dict keeps the very 'step' tensors it is given
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    return twin, twin_optimizer


def effective_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {path: module.weight.detach().clone() for path, module, _ in sparse_layers(model)}


def test_training_goes_on_value_for_value():
    computed, computed_opt = frozen_after_training()
    kept, kept_opt = copy_with_optimizer(computed, computed_opt)
    assert keep_masks_in_weights(kept, kept_opt) == len(sparse_layers(kept))
    pruned = sum(int((~p.mask).sum()) for _, _, p in sparse_layers(kept))
    assert pruned > 0
    for x in batches(6):
        assert adam_step(kept, kept_opt, x) == adam_step(computed, computed_opt, x)
    for path, weight in effective_weights(computed).items():
        assert torch.equal(effective_weights(kept)[path], weight), path
    for _, module, p in sparse_layers(kept):
        original = module.parametrizations.weight.original
        assert torch.count_nonzero(original[~p.mask]) == 0
    # on the computed path the stored pruned weights drift (Adam's moments move them), hidden
    # by the mask: the reason their optimizer state must be zeroed too
    drifted = sum(
        int(torch.count_nonzero(m.parametrizations.weight.original[~p.mask]))
        for _, m, p in sparse_layers(computed)
    )
    assert drifted > 0


def test_without_the_optimizer_state_pruned_weights_regrow():
    """The negative control: zeroing weights and gradients alone is not enough while Adam still
    holds moments for the pruned entries."""
    computed, computed_opt = frozen_after_training()
    kept, kept_opt = copy_with_optimizer(computed, computed_opt)
    keep_masks_in_weights(kept)  # optimizer not given: its moments stay
    for x in batches(3):
        adam_step(kept, kept_opt, x)
        adam_step(computed, computed_opt, x)
    regrown = sum(
        int(torch.count_nonzero(m.weight.detach()[~p.mask])) for _, m, p in sparse_layers(kept)
    )
    assert regrown > 0


def test_forward_uses_the_stored_weight_itself():
    model, optimizer = frozen_after_training()
    keep_masks_in_weights(model, optimizer)
    for _, module, _ in sparse_layers(model):
        original = module.parametrizations.weight.original
        assert module.weight.data_ptr() == original.data_ptr()
        with torch.no_grad():
            assert module.weight is original


def test_gradient_is_masked():
    model, optimizer = frozen_after_training()
    keep_masks_in_weights(model, optimizer)
    optimizer.zero_grad(set_to_none=True)
    total_loss(model(batches(1)[0])).backward()
    for path, module, p in sparse_layers(model):
        grad = module.parametrizations.weight.original.grad
        assert torch.count_nonzero(grad[~p.mask]) == 0, path
        assert torch.count_nonzero(grad[p.mask]) > 0, path


def test_new_mask_or_loaded_state_returns_to_the_masked_forward():
    model, optimizer = frozen_after_training()
    reference = copy.deepcopy(model)
    keep_masks_in_weights(model, optimizer)
    layers = sparse_layers(model)
    path, _, p = layers[0]
    set_masks(model, {path: torch.ones_like(p.mask)}, zero_pruned=False)
    assert not p.in_place and all(q.in_place for _, _, q in layers[1:])
    # a loaded state may hold values under the masks: W * M again, and the values say so
    model.load_state_dict(reference.state_dict())
    assert not any(q.in_place for _, _, q in sparse_layers(model))
    for name, weight in effective_weights(reference).items():
        assert torch.equal(effective_weights(model)[name], weight), name


def test_already_kept_layers_are_left_alone():
    model, optimizer = frozen_after_training()
    assert keep_masks_in_weights(model, optimizer) == len(sparse_layers(model))
    assert keep_masks_in_weights(model, optimizer) == 0


def test_soft_threshold_layers_are_not_masks():
    torch.manual_seed(0)
    model = sparsify(conv_mtl(), init=logit(0.05))
    assert keep_masks_in_weights(model) == 0
    assert not any(p.in_place for _, _, p in sparse_layers(model))


def test_optimizer_state_that_cannot_be_masked_is_refused():
    model, optimizer = frozen_after_training()
    path, module, _ = sparse_layers(model)[0]
    optimizer.state[module.parametrizations.weight.original]["row_factor"] = torch.ones(3)
    with pytest.raises(ValueError, match=rf"{path}: optimizer state 'row_factor' has shape \(3,\)"):
        keep_masks_in_weights(model, optimizer)


def run_snip(tiny: dict[str, Any], tmp_path, in_weights: bool) -> Any:
    snip = {"name": "snip", "target": 0.7, "options": {"batches": 1}}
    run = tmp_path / f"run_{in_weights}"
    return fit_tiny(tiny, run, snip, iterations=6, masks_in_weights=in_weights)


def test_trainer_keeps_final_masks_in_weights_with_the_same_results(tiny_settings, tmp_path):
    kept = run_snip(tiny_settings, tmp_path, in_weights=True)
    computed = run_snip(tiny_settings, tmp_path, in_weights=False)
    assert all(p.in_place for _, _, p in sparse_layers(kept.model))
    assert not any(p.in_place for _, _, p in sparse_layers(computed.model))
    for path, weight in effective_weights(computed.model).items():
        assert torch.equal(effective_weights(kept.model)[path], weight), path


def test_adapmtl_keeps_its_frozen_mask_in_weights_with_the_same_results(tiny_settings, tmp_path):
    runs = {
        in_weights: fit_tiny(
            tiny_settings,
            tmp_path / f"run_{in_weights}",
            iterations=16,
            masks_in_weights=in_weights,
        )
        for in_weights in (True, False)
    }
    frozen_at = runs[True].method.controller.frozen_at
    assert frozen_at is not None and frozen_at < 15  # steps after the freeze ran in place
    assert all(p.in_place for _, _, p in sparse_layers(runs[True].model))
    assert not any(p.in_place for _, _, p in sparse_layers(runs[False].model))
    for path, weight in effective_weights(runs[False].model).items():
        assert torch.equal(effective_weights(runs[True].model)[path], weight), path


def test_weights_whose_buffers_are_recycled_keep_the_masked_forward():
    """A weight of RECYCLE_BYTES or more reuses its buffers between steps on W * M; kept in the
    weights, its masked gradient would be a fresh weight-sized allocation every step."""
    torch.manual_seed(0)
    columns = RECYCLE_BYTES // 4 // 64
    model = torch.nn.Sequential(torch.nn.Linear(columns, 64), torch.nn.Linear(64, 2))
    sparsify(model, grouping="global", mode="mask")
    weights = {path: m.parametrizations.weight.original for path, m, _ in sparse_layers(model)}
    set_masks(model, {path: torch.rand(w.shape) > 0.5 for path, w in weights.items()})
    assert keep_masks_in_weights(model) == 1
    in_place = {path: p.in_place for path, _, p in sparse_layers(model)}
    assert in_place == {"0": False, "1": True}
