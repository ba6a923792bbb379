"""The warning when the initial thresholds already zero more than half the weights."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

from adapmtl.sparsity import overall_sparsity, sparsify
from sparsity_toys import ConvMTL, conv_mtl, logit, single_thread

_single_thread = pytest.fixture(autouse=True)(single_thread)


def _fraction_at_or_below(model: ConvMTL, alpha: float) -> float:
    weights = np.concatenate(
        [model.get_submodule(p).weight.detach().numpy().ravel() for p in ConvMTL.PRUNABLE]
    )
    return float(np.mean(np.abs(weights) <= alpha))


def test_warns_when_init_zeroes_most_weights():
    model = conv_mtl()
    alpha = 0.27  # theta = -1: above almost every default-initialised weight of this model
    percent = f"{100 * _fraction_at_or_below(model, alpha):.1f}%"
    assert float(percent[:-1]) > 50
    with pytest.warns(
        UserWarning, match=f"already zero {re.escape(percent)} of the weights"
    ) as record:
        sparsify(model, init=logit(alpha))
    assert record[0].filename == __file__  # points at the caller, not at the library


def test_warning_threshold_is_one_half_of_all_weights():
    # Pick alpha between the sorted magnitudes so that just under / just over half are zeroed.
    model = conv_mtl()
    magnitudes = np.sort(
        np.concatenate(
            [
                np.abs(model.get_submodule(p).weight.detach().numpy().ravel())
                for p in ConvMTL.PRUNABLE
            ]
        )
    )
    half = len(magnitudes) // 2
    below = float((magnitudes[half - 2] + magnitudes[half - 1]) / 2)  # zeroes half - 1 weights
    above = float((magnitudes[half] + magnitudes[half + 1]) / 2)  # zeroes half + 1 weights
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = sparsify(conv_mtl(), init=logit(below))
    assert overall_sparsity(quiet) < 0.5
    with pytest.warns(UserWarning, match="theta init is too high"):
        loud = sparsify(conv_mtl(), init=logit(above))
    assert overall_sparsity(loud) > 0.5


def test_no_warning_at_the_default_init_or_in_mask_mode():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sparsify(conv_mtl())
        sparsify(conv_mtl(), mode="mask")


def test_zero_stored_weights_count_as_zeroed():
    model = conv_mtl()
    with torch.no_grad():
        for path in ConvMTL.PRUNABLE:
            model.get_submodule(path).weight[
                : model.get_submodule(path).weight.shape[0] // 2 + 1
            ] = 0
    with pytest.warns(UserWarning, match="already zero"):
        sparsify(model)
