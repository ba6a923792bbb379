"""The small layers' thresholds in one autograd node (``batched_thresholds``,
``train.batched_thresholds``). The expectation is always the per-layer path (each layer's own
autograd function, tested against the paper's Eq. 2, 4-5 elsewhere) run beside it on a copy."""

from __future__ import annotations

import copy

import pytest
import torch

from adapmtl.sparsity import batched_thresholds, freeze_masks, recycle, sparse_layers, sparsify
from adapmtl.sparsity.parametrization import threshold_levels_as_tensors
from conftest import fit_tiny
from sparsity_toys import ConvMTL, conv_mtl, logit, total_loss

SETTINGS = {
    "soft": {"mode": "soft"},
    "hard_regrow": {"mode": "hard", "regrow": True},
    "auto_regrow": {"mode": "auto", "regrow": True},  # soft before the batch norm, hard elsewhere
    "soft_per_layer_theta": {"mode": "soft", "grouping": "layer"},
}


def model_pair(**options) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A sparsified toy model whose thresholds prune part of each layer, and a copy."""
    model = sparsify(conv_mtl(), init=logit(0.03), **options)
    return model, copy.deepcopy(model)


def batch(seed: int = 1) -> torch.Tensor:
    return torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {name: p.grad for name, p in model.named_parameters()}


def node_names(outputs: dict[str, torch.Tensor]) -> list[str]:
    """The names of every node of the autograd graph behind ``outputs``, once each."""
    seen, names, stack = set(), [], [o.grad_fn for o in outputs.values()]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("name", SETTINGS)
def test_the_batched_node_gives_the_per_layer_values_and_gradients(name):
    per_layer, batched = model_pair(**SETTINGS[name])
    x = batch()
    expected = per_layer(x)
    total_loss(expected).backward()
    with batched_thresholds(batched) as count:
        outputs = batched(x)
    total_loss(outputs).backward()
    assert count == len(ConvMTL.PRUNABLE)
    for task, value in expected.items():
        assert torch.equal(outputs[task], value), task
    reference = gradients(per_layer)
    for param_name, grad in gradients(batched).items():
        assert grad is not None and reference[param_name] is not None, param_name
        if "sparsity_thresholds" in param_name:  # sums over layers, in another order
            assert reference[param_name].abs().item() > 0, param_name
            torch.testing.assert_close(grad, reference[param_name], rtol=1e-5, atol=0)
        else:
            assert torch.equal(grad, reference[param_name]), param_name


def test_weights_that_recycle_their_buffers_keep_their_own_calls(monkeypatch):
    """A CPU weight of RECYCLE_BYTES or more writes its effective weight into last step's
    gradient (recycle); the batched node would hold that output to the end of backward."""
    monkeypatch.setattr(recycle, "RECYCLE_BYTES", 576 * 4)  # backbone.3 and heads.seg.0 carry one
    model = sparsify(conv_mtl(), init=logit(0.03))
    with batched_thresholds(model) as count:
        names = node_names(model(batch()))
    assert count == 3
    assert names.count("_BatchedThresholdBackward") == 1
    assert names.count("_SoftThresholdBackward") == 2


def test_a_layer_left_out_of_the_forward_gets_no_gradient_as_on_its_own():
    """With component thresholds the depth head is its own group: neither its weight nor its
    threshold gets a gradient when only the segmentation head runs."""
    model = sparsify(conv_mtl(), init=logit(0.03))
    with batched_thresholds(model) as count:
        seg = model.heads["seg"](model.backbone(batch()))
    (seg**2).mean().backward()
    assert count == len(ConvMTL.PRUNABLE)
    assert model.heads["depth"].parametrizations.weight.original.grad is None
    assert model.sparsity_thresholds["depth"].grad is None
    assert model.sparsity_thresholds["seg"].grad is not None


def test_the_prepared_weights_go_when_the_block_ends_even_on_an_error():
    model = sparsify(conv_mtl(), init=logit(0.03))
    with pytest.raises(RuntimeError, match="stop"), batched_thresholds(model):
        model(batch())
        raise RuntimeError("stop")
    assert all(p.prepared is None for _, _, p in sparse_layers(model))
    conv = model.heads["depth"]
    with torch.no_grad():
        conv.parametrizations.weight.original.fill_(1.0)
    assert torch.all(conv.weight == 1.0 - 0.03)  # computed from the current weight: S(1, 0.03)


def test_nothing_is_batched_without_gradients_or_once_masks_are_fixed():
    model = sparsify(conv_mtl(), init=logit(0.03))
    with torch.no_grad(), batched_thresholds(model) as count:
        model(batch())
    assert count == 0
    freeze_masks(model)
    with batched_thresholds(model) as count:
        names = node_names(model(batch()))
    assert count == 0 and "_BatchedThresholdBackward" not in names


def test_levels_kept_as_tensors_give_the_same_values_and_gradients():
    """The accelerator's path (the level never read on the host) against the CPU's."""
    read, kept = model_pair(mode="auto", regrow=True)
    x = batch()
    with batched_thresholds(read):
        expected = read(x)
    total_loss(expected).backward()
    with threshold_levels_as_tensors(), batched_thresholds(kept):
        outputs = kept(x)
    total_loss(outputs).backward()
    for task, value in expected.items():
        assert torch.equal(outputs[task], value), task
    reference = gradients(read)
    for param_name, grad in gradients(kept).items():
        torch.testing.assert_close(grad, reference[param_name], rtol=1e-6, atol=0)


def test_a_training_run_batched_matches_the_per_layer_run(tiny_settings, tmp_path):
    runs = {
        flag: fit_tiny(
            tiny_settings, tmp_path / f"run_{flag}", iterations=6, batched_thresholds=flag
        )
        for flag in (True, False)
    }
    per_layer = dict(runs[False].model.named_parameters())
    for name, value in runs[True].model.named_parameters():
        torch.testing.assert_close(value, per_layer[name], rtol=1e-4, atol=1e-6)
