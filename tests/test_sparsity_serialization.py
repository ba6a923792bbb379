"""A sparsified model survives deepcopy, state_dict round trips, safetensors and torch.load with
weights_only=True."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file, save_file

from adapmtl.sparsity import (
    TargetSparsityController,
    current_masks,
    freeze_masks,
    param_groups,
    report,
    sparse_layers,
    sparsify,
    thresholds,
)
from sparsity_toys import ConvMTL, conv_mtl, logit, single_thread, total_loss

_single_thread = pytest.fixture(autouse=True)(single_thread)

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _sparse_model(seed: int = 0) -> ConvMTL:
    model = sparsify(conv_mtl(seed), init=-3.0)  # about 20 % sparse: thresholds matter
    return model.eval()


def _same_outputs(a, b) -> bool:
    with torch.no_grad():
        out_a, out_b = a(X), b(X)
    return all(torch.equal(out_a[t], out_b[t]) for t in out_a)


def test_deepcopy_gets_its_own_thresholds_used_by_its_own_layers():
    model = _sparse_model()
    clone = copy.deepcopy(model)
    assert _same_outputs(model, clone)
    for key in thresholds(model):
        assert thresholds(clone)[key] is not thresholds(model)[key]
    for (_, _, p_copy), (_, _, p) in zip(sparse_layers(clone), sparse_layers(model), strict=True):
        assert p_copy.thresholds is thresholds(clone)
        assert p.thresholds is thresholds(model)

    with torch.no_grad():
        thresholds(clone)["backbone"].fill_(logit(0.1))
    assert not _same_outputs(model, clone)
    assert thresholds(model)["backbone"].item() == -3.0
    reference = _sparse_model()
    assert _same_outputs(model, reference)


def test_deepcopy_gradients_reach_the_copy_only():
    model = _sparse_model()
    clone = copy.deepcopy(model)
    total_loss(clone(X)).backward()
    assert all(t.grad is not None for t in thresholds(clone).values())
    assert all(t.grad is None for t in thresholds(model).values())


def test_state_dict_holds_each_threshold_once_and_round_trips():
    model = _sparse_model()
    with torch.no_grad():
        thresholds(model)["seg"].fill_(-2.5)
    state = model.state_dict()
    assert sorted(k for k in state if "sparsity_thresholds" in k) == [
        "sparsity_thresholds.backbone",
        "sparsity_thresholds.depth",
        "sparsity_thresholds.seg",
    ]
    fresh = _sparse_model(seed=1)
    assert not _same_outputs(model, fresh)
    fresh.load_state_dict(state)  # strict
    assert _same_outputs(model, fresh)
    assert thresholds(fresh)["seg"].item() == -2.5


def test_frozen_state_dict_loads_into_a_fresh_unfrozen_model():
    model = _sparse_model()
    with torch.no_grad():
        thresholds(model)["backbone"].fill_(-2.0)
    freeze_masks(model)
    fresh = _sparse_model(seed=1)
    fresh.load_state_dict(model.state_dict())
    assert all(p.masked for _, _, p in sparse_layers(fresh))
    assert _same_outputs(model, fresh)
    assert report(fresh).to_dict() == report(model).to_dict()
    masks = current_masks(model)
    for path, mask in current_masks(fresh).items():
        assert torch.equal(mask, masks[path])


def test_unfrozen_state_dict_loads_into_a_frozen_model():
    source = _sparse_model(seed=1)
    model = _sparse_model()
    freeze_masks(model)
    model.load_state_dict(source.state_dict())
    assert not any(p.masked for _, _, p in sparse_layers(model))
    assert _same_outputs(model, source)


@pytest.mark.parametrize("frozen", [False, True])
def test_safetensors_round_trip(tmp_path, frozen):
    model = _sparse_model()
    if frozen:
        freeze_masks(model)
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    fresh = _sparse_model(seed=1)
    fresh.load_state_dict(load_file(str(path)))
    assert _same_outputs(model, fresh)
    assert report(fresh).to_dict() == report(model).to_dict()


def _train_steps(model, optimizer, controller, start: int, steps: int) -> None:
    model.train()
    for it in range(start, start + steps):
        optimizer.zero_grad()
        total_loss(model(X)).backward()
        controller.step(it)
        optimizer.step()
    model.eval()


def _make_run(seed: int):
    model = _sparse_model(seed)
    optimizer = torch.optim.Adam(
        param_groups(model, lr=1e-2, threshold_lr=0.2, threshold_weight_decay=1.0)
    )
    controller = TargetSparsityController(model, 0.45)
    return model, optimizer, controller


def test_checkpoint_loads_with_weights_only_and_resumes_identically(tmp_path):
    model, optimizer, controller = _make_run(seed=0)
    _train_steps(model, optimizer, controller, 0, 12)
    assert controller.frozen, "the run should freeze before the checkpoint"
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "controller": controller.state_dict(),
        "iteration": 12,
    }
    path = tmp_path / "last.pt"
    torch.save(checkpoint, path)
    loaded = torch.load(path, weights_only=True)

    model2, optimizer2, controller2 = _make_run(seed=1)
    model2.load_state_dict(loaded["model"])
    optimizer2.load_state_dict(loaded["optimizer"])
    controller2.load_state_dict(loaded["controller"])
    assert controller2.frozen_at == controller.frozen_at

    _train_steps(model, optimizer, controller, 12, 5)
    _train_steps(model2, optimizer2, controller2, loaded["iteration"], 5)
    for (k, a), (k2, b) in zip(
        model.state_dict().items(), model2.state_dict().items(), strict=True
    ):
        assert k == k2
        assert torch.equal(a, b), k
    assert report(model2).sparsity == report(model).sparsity


def test_non_strict_load_without_the_masks_reports_them_missing():
    model = _sparse_model()
    freeze_masks(model)
    masks = {k for k in model.state_dict() if k.endswith(".mask")}
    state = {k: v for k, v in model.state_dict().items() if k not in masks}
    result = _sparse_model(seed=1).load_state_dict(state, strict=False)
    assert masks and set(result.missing_keys) == masks
    assert result.unexpected_keys == []
