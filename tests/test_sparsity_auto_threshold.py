"""threshold 'auto': soft (paper Eq. 2) on the layers that feed only normalisation layers, hard on
the others; checked against the two formulas by hand, and the fallback when tracing fails."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from adapmtl.methods.adapmtl import AdapMTL
from adapmtl.sparsity import is_sparsified, sparse_layers, sparsify, thresholds
from adapmtl.sparsity.structure import UntraceableModelError
from sparsity_toys import ConvMTL

NORMALISED = {"backbone.0", "heads.seg.0"}  # ConvMTL: -> BatchNorm2d, -> GroupNorm


def effective_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {path: module.weight.detach() for path, module, _ in sparse_layers(model)}


def original_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        path: module.parametrizations.weight.original.detach()
        for path, module, _ in sparse_layers(model)
    }


def test_auto_applies_eq2_on_normalised_layers_and_a_hard_mask_elsewhere() -> None:
    torch.manual_seed(0)
    model = sparsify(ConvMTL(), grouping="global", init=-3.0, mode="auto", regrow=True)
    alpha = torch.sigmoid(thresholds(model)["all"]).detach()
    originals, effective = original_weights(model), effective_weights(model)
    assert set(effective) == set(ConvMTL.PRUNABLE)
    for path, w in originals.items():
        if path in NORMALISED:
            expected = torch.sign(w) * torch.clamp(w.abs() - alpha, min=0.0)
        else:
            expected = w * (w.abs() > alpha)
        torch.testing.assert_close(effective[path], expected, msg=path)
        assert (effective[path] == 0).any(), f"{path}: alpha {alpha} prunes nothing"
    regrowing = {path for path, _, p in sparse_layers(model) if p.regrow}
    assert regrowing == set(ConvMTL.PRUNABLE) - NORMALISED


class ValueDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
        self.heads = nn.ModuleDict({"a": nn.Conv2d(2, 1, 1)})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        if features.mean() > 0:  # control flow on a value: not traceable
            features = features * 2
        return {"a": self.heads["a"](features)}


def test_auto_on_an_untraceable_model_raises_and_leaves_it_untouched() -> None:
    model = ValueDependent()
    with pytest.raises(UntraceableModelError, match=r"ValueDependent.*use mode 'soft' or 'hard'"):
        sparsify(model, mode="auto")
    assert not is_sparsified(model)
    assert not hasattr(model, "sparsity_thresholds")


def test_the_method_says_when_it_falls_back_to_hard_and_reports_the_split() -> None:
    method = AdapMTL(0.5, AdapMTL.Options(threshold="auto"))
    with pytest.warns(UserWarning, match=r"ValueDependent.*every layer gets the hard threshold"):
        model = method.prepare(ValueDependent())
    assert all(p.hard for _, _, p in sparse_layers(model))
    assert method.summary()["threshold_layers"] == {"soft": 0, "hard": 2}

    traced = AdapMTL(0.5, AdapMTL.Options(threshold="auto"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        traced.prepare(ConvMTL())
    assert traced.summary()["threshold_layers"] == {"soft": 2, "hard": 3}
