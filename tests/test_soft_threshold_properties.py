"""The soft threshold S(W, a) = sign(W) relu(|W| - a) (paper Eq. 2) and its sub-gradients
(Eq. 4-5) as properties over random weights, thresholds and upstream gradients, boundary values
|W| = a included."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adapmtl.sparsity import soft_threshold

SETTINGS = settings(max_examples=80, deadline=None)


@st.composite
def cases(draw):
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    shape = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    theta = torch.tensor(draw(st.floats(-8.0, 2.0)), dtype=dtype)
    alpha = torch.sigmoid(theta)
    weight = torch.randn(shape, generator=g, dtype=dtype) * float(alpha) * 2
    flat = weight.view(-1)
    # some entries exactly on the threshold (either sign) and exactly zero
    picks = torch.randint(0, flat.numel(), (3,), generator=g)
    flat[picks[0]], flat[picks[1]], flat[picks[2]] = alpha, -alpha, 0.0
    return weight, theta


@SETTINGS
@given(case=cases())
def test_zero_exactly_where_magnitude_is_at_most_alpha_else_shrunk_by_alpha(case):
    weight, theta = case
    alpha = torch.sigmoid(theta)
    out = soft_threshold(weight, theta)
    inside = weight.abs() <= alpha
    assert out.dtype == weight.dtype and out.shape == weight.shape
    assert torch.all(out[inside] == 0)
    assert torch.all(out[~inside] != 0)
    assert torch.equal(out[~inside].sign(), weight[~inside].sign())  # sign kept
    # |S| = |W| - a, to the last bit of the weight's dtype
    assert torch.equal(out[~inside].abs(), weight[~inside].abs() - alpha)


@SETTINGS
@given(case=cases(), seed=st.integers(0, 2**16))
def test_sub_gradients_are_the_indicator_and_minus_its_signed_sum(case, seed):
    weight, theta = case
    weight = weight.clone().requires_grad_(True)
    theta = theta.clone().requires_grad_(True)
    upstream = torch.randn(weight.shape, generator=torch.Generator().manual_seed(seed))
    upstream = upstream.to(weight.dtype)
    soft_threshold(weight, theta).backward(upstream)
    alpha = torch.sigmoid(theta.detach())
    kept = (weight.detach().abs() > alpha).to(weight.dtype)
    # dS/dW = 1[|W| > a]; dS/da = -sign(W) 1[|W| > a]; da/dtheta = a (1 - a)
    assert torch.equal(weight.grad, upstream * kept)
    expected = -(upstream * weight.detach().sign() * kept).sum() * alpha * (1 - alpha)
    torch.testing.assert_close(theta.grad, expected)


@SETTINGS
@given(case=cases(), factor=st.floats(0.1, 10.0))
def test_larger_threshold_prunes_a_superset(case, factor):
    weight, theta = case
    lower = soft_threshold(weight, theta) != 0
    higher = soft_threshold(weight, theta + abs(factor)) != 0
    assert torch.all(higher <= lower)  # every weight kept at the higher threshold is kept below
