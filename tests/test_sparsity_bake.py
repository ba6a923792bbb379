"""bake(), dense_state_dict() and load_dense_state_dict(): moving between sparsified and plain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

from adapmtl.sparsity import (
    bake,
    dense_state_dict,
    freeze_masks,
    is_sparsified,
    load_dense_state_dict,
    sparsify,
    thresholds,
)
from sparsity_toys import ConvMTL, conv_mtl, logit, single_thread

_single_thread = pytest.fixture(autouse=True)(single_thread)

ALPHAS = {"backbone": 0.1, "seg": 0.06, "depth": 0.2}
OWNER = {p: p.split(".")[1] if p.startswith("heads") else "backbone" for p in ConvMTL.PRUNABLE}


def _sparse_model(seed: int = 0) -> ConvMTL:
    model = sparsify(conv_mtl(seed))
    with torch.no_grad():
        for group, alpha in ALPHAS.items():
            thresholds(model)[group].fill_(logit(alpha))
    return model.eval()


def _outputs(model, x):
    with torch.no_grad():
        return model(x)


def test_bake_leaves_a_plain_model_with_the_soft_thresholded_weights():
    model = _sparse_model()
    x = torch.randn(2, 3, 8, 8)
    stored = {
        p: model.get_submodule(p).parametrizations.weight.original.detach().numpy().copy()
        for p in ConvMTL.PRUNABLE
    }
    before = _outputs(model, x)
    bake(model)

    assert not is_sparsified(model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert sorted(model.state_dict()) == sorted(ConvMTL().state_dict())
    assert len(thresholds(model)) == 0
    for path in ConvMTL.PRUNABLE:
        w, a = stored[path], ALPHAS[OWNER[path]]
        baked = model.get_submodule(path).weight.detach().numpy()
        survivors = np.abs(w) > a
        assert 0 < survivors.sum() < survivors.size, path
        assert np.all(baked[~survivors] == 0.0), path
        # Survivors are shrunk by alpha: sign(W)(|W| - a), which is not W * mask.
        np.testing.assert_allclose(
            baked[survivors], (np.sign(w) * (np.abs(w) - a))[survivors], rtol=1e-5, atol=1e-7
        )
        assert not np.allclose(baked[survivors], w[survivors])
    after = _outputs(model, x)
    for task in before:
        assert torch.equal(before[task], after[task]), task


def test_bake_of_a_frozen_model_keeps_the_mask():
    model = _sparse_model()
    effective = {p: model.get_submodule(p).weight.detach().clone() for p in ConvMTL.PRUNABLE}
    freeze_masks(model)
    bake(model)
    for path in ConvMTL.PRUNABLE:
        torch.testing.assert_close(model.get_submodule(path).weight, effective[path])


def test_a_baked_model_can_be_sparsified_again():
    model = bake(_sparse_model())
    with pytest.warns(UserWarning, match="already zero"):  # the baked zeros are counted
        sparsify(model)
    assert is_sparsified(model)


def test_dense_state_dict_loads_into_a_plain_model_and_leaves_the_model_as_it_was():
    model = _sparse_model()
    keys = sorted(model.state_dict())
    x = torch.randn(2, 3, 8, 8)
    plain = ConvMTL().eval()
    plain.load_state_dict(dense_state_dict(model))  # strict
    expected = _outputs(model, x)
    got = _outputs(plain, x)
    for task in expected:
        torch.testing.assert_close(got[task], expected[task], rtol=0, atol=0)
    assert sorted(model.state_dict()) == keys
    assert is_sparsified(model)


def test_load_dense_state_dict_from_a_plain_model():
    source = conv_mtl(seed=5).eval()
    model = _sparse_model(seed=0)
    theta = {k: v.detach().clone() for k, v in thresholds(model).items()}
    load_dense_state_dict(model, source.state_dict())
    for path in ConvMTL.PRUNABLE:
        w = source.get_submodule(path).weight
        stored = model.get_submodule(path).parametrizations.weight.original
        assert torch.equal(stored, w), path
        a = torch.sigmoid(thresholds(model)[OWNER[path]])
        expected = torch.sign(w) * torch.clamp(w.abs() - a, min=0)
        torch.testing.assert_close(model.get_submodule(path).weight, expected)
    assert torch.equal(model.backbone[1].running_var, source.backbone[1].running_var)
    assert torch.equal(model.heads.depth.bias, source.heads.depth.bias)
    for key, value in thresholds(model).items():
        assert torch.equal(value, theta[key])


def _unchanged(model, snapshot) -> bool:
    return all(torch.equal(v, snapshot[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda sd: sd.pop("heads.seg.3.weight"), r"missing \['heads\.seg\.3\.weight"),
        (lambda sd: sd.pop("backbone.1.running_mean"), r"missing \['backbone\.1\.running_mean"),
        (lambda sd: sd.update(extra=torch.zeros(1)), r"unexpected \['extra'\]"),
        (
            lambda sd: sd.update({"backbone.3.weight": torch.zeros(8, 8, 1, 1)}),
            r"entry backbone\.3\.weight has shape \(8, 8, 1, 1\).*\(8, 8, 3, 3\)",
        ),
        (
            lambda sd: sd.update({"heads.depth.bias": torch.zeros(2)}),
            r"heads\.depth\.bias.*\(2,\).*\(1,\)",
        ),
    ],
)
def test_load_dense_state_dict_mismatch_is_a_clear_error_and_loads_nothing(edit, message):
    state = conv_mtl(seed=5).state_dict()
    edit(state)
    model = _sparse_model()
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        load_dense_state_dict(model, state)
    assert _unchanged(model, snapshot)


def test_baking_a_deep_copy_leaves_the_original_working():
    import copy

    model = sparsify(conv_mtl(), init=-4.0)
    x = torch.randn(2, 3, 8, 8)
    before = {k: v.detach().clone() for k, v in model(x).items()}
    baked = bake(copy.deepcopy(model))
    after = model(x)
    for task, value in before.items():
        assert torch.equal(after[task], value)
        assert torch.equal(baked(x)[task], value)
    assert is_sparsified(model)


@pytest.mark.parametrize("count", [5, 6])
def test_a_long_list_of_keys_names_the_first_five_and_says_there_are_more(count):
    state = conv_mtl(seed=5).state_dict()
    dropped = sorted(state)[:count]
    for key in dropped:
        state.pop(key)
    with pytest.raises(ValueError) as info:
        load_dense_state_dict(_sparse_model(), state)
    more = " ..." if count > 5 else ""
    assert f"missing {dropped[:5]}{more}, unexpected []" in str(info.value)
    state = conv_mtl(seed=5).state_dict()
    extra = [f"extra{i}" for i in range(count)]
    state.update({key: torch.zeros(1) for key in extra})
    with pytest.raises(ValueError) as info:
        load_dense_state_dict(_sparse_model(), state)
    assert str(info.value).endswith(f"missing [], unexpected {extra[:5]}{more}")
