"""The soft threshold S(W, a) = sign(W) relu(|W| - a), a = sigmoid(theta) (paper Eq. 2), and its
gradients: dL/dW = dL/dS * B (paper Eq. 4-5), dL/dtheta through the sigmoid (supplement Eq. 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from adapmtl.sparsity import soft_threshold, sparse_layers, sparsify, theta_from_alpha, thresholds
from sparsity_toys import LinearMTL, logit, single_thread

_single_thread = pytest.fixture(autouse=True)(single_thread)


def test_hand_values():
    weight = torch.tensor([[0.5, -0.3, 0.1], [-0.05, 0.0, 0.25]])
    theta = torch.tensor(logit(0.2))
    expected = torch.tensor([[0.3, -0.1, 0.0], [0.0, 0.0, 0.05]])
    torch.testing.assert_close(soft_threshold(weight, theta), expected)


def test_output_has_exact_zeros_below_threshold_and_shrunk_survivors():
    rng = np.random.default_rng(0)
    w = rng.normal(0.0, 0.1, size=(40, 30))
    alpha = 0.07
    out = soft_threshold(torch.from_numpy(w), torch.tensor(logit(alpha), dtype=torch.float64))
    expected = np.where(np.abs(w) > alpha, np.sign(w) * (np.abs(w) - alpha), 0.0)
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-15)
    assert int((out == 0).sum()) == int((np.abs(w) <= alpha).sum()) > 0


@pytest.mark.parametrize("alpha", [1e-4, 0.3, 0.9])
def test_theta_from_alpha_inverts_the_sigmoid(alpha):
    assert torch.sigmoid(torch.tensor(theta_from_alpha(alpha), dtype=torch.float64)).item() == (
        pytest.approx(alpha, rel=1e-12)
    )


def _away_from_kink(weight: torch.Tensor, alpha: float, margin: float) -> torch.Tensor:
    """Move entries with ||W| - alpha| < margin out of the kink, where S is not differentiable."""
    close = (weight.abs() - alpha).abs() < margin
    return torch.where(close, weight.sign() * (alpha + 2 * margin), weight)


def test_gradcheck_against_finite_differences():
    torch.manual_seed(0)
    alpha = 0.2
    weight = _away_from_kink(torch.randn(6, 5, dtype=torch.float64) * 0.3, alpha, 1e-3)
    weight.requires_grad_(True)
    theta = torch.tensor(logit(alpha), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(soft_threshold, (weight, theta), eps=1e-6, atol=1e-8)


def test_gradients_match_the_closed_form():
    torch.manual_seed(1)
    alpha = 0.25
    weight = torch.randn(7, 4, dtype=torch.float64).mul_(0.4).requires_grad_(True)
    theta = torch.tensor(logit(alpha), dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(7, 4, dtype=torch.float64)
    (soft_threshold(weight, theta) * upstream).sum().backward()

    w, g = weight.detach().numpy(), upstream.numpy()
    b = (np.abs(w) > alpha).astype(np.float64)
    assert 0 < b.sum() < b.size
    np.testing.assert_allclose(weight.grad.numpy(), g * b, rtol=0, atol=0)
    expected_theta = -np.sum(g * np.sign(w) * b) * alpha * (1 - alpha)
    assert theta.grad.item() == pytest.approx(expected_theta, rel=1e-12)


# ---- through a sparsified model (the parametrization, float64) ---------------------------------

ALPHAS = {"backbone": 0.15, "a": 0.2, "b": 0.1}
LAYERS = ("backbone.0", "backbone.2", "heads.a", "heads.b")
OWNER = {"backbone.0": "backbone", "backbone.2": "backbone", "heads.a": "a", "heads.b": "b"}


def _setup():
    torch.manual_seed(2)
    model = sparsify(LinearMTL(5, 6, 3, 2), grouping="component").double()
    for group, alpha in ALPHAS.items():
        with torch.no_grad():
            thresholds(model)[group].fill_(logit(alpha))
        for path in LAYERS:
            if OWNER[path] == group:
                stored = model.get_submodule(path).parametrizations.weight.original
                with torch.no_grad():
                    stored.copy_(_away_from_kink(stored, alpha, 1e-3))
    x = torch.randn(9, 5, dtype=torch.float64)
    targets = {
        "a": torch.randn(9, 3, dtype=torch.float64),
        "b": torch.randn(9, 2, dtype=torch.float64),
    }
    return model, x, targets


def _loss(outputs, targets):
    return sum(((outputs[t] - targets[t]) ** 2).mean() for t in targets)


def _plain_forward(model, weights, x):
    """The same network written with F.linear on the given weight tensors (no parametrization)."""
    m = model
    h = F.relu(F.linear(x, weights["backbone.0"], m.backbone[0].bias))
    h = F.relu(F.linear(h, weights["backbone.2"], m.backbone[2].bias))
    return {t: F.linear(h, weights[f"heads.{t}"], m.heads[t].bias) for t in ("a", "b")}


def test_model_gradients_match_the_closed_form():
    model, x, targets = _setup()
    _loss(model(x), targets).backward()

    stored = {p: model.get_submodule(p).parametrizations.weight.original.detach() for p in LAYERS}
    # dL/dS from a plain network fed with S(W, a) computed by hand in NumPy.
    effective = {}
    for path, w in stored.items():
        a = ALPHAS[OWNER[path]]
        s = np.sign(w.numpy()) * np.maximum(np.abs(w.numpy()) - a, 0.0)
        effective[path] = torch.from_numpy(s).requires_grad_(True)
    _loss(_plain_forward(model, effective, x), targets).backward()

    expected_theta = dict.fromkeys(ALPHAS, 0.0)
    for path in LAYERS:
        a = ALPHAS[OWNER[path]]
        w, g = stored[path].numpy(), effective[path].grad.numpy()
        b = (np.abs(w) > a).astype(np.float64)
        assert 0 < b.sum() < b.size, path  # both pruned and surviving weights are exercised
        grad_w = model.get_submodule(path).parametrizations.weight.original.grad.numpy()
        np.testing.assert_allclose(grad_w, g * b, rtol=1e-12, atol=1e-15)
        expected_theta[OWNER[path]] += -np.sum(g * np.sign(w) * b) * a * (1 - a)
    for group, value in expected_theta.items():
        assert thresholds(model)[group].grad.item() == pytest.approx(value, rel=1e-9), group


def test_model_gradients_match_central_differences():
    model, x, targets = _setup()
    _loss(model(x), targets).backward()
    h = 1e-6

    def loss_now() -> float:
        with torch.no_grad():
            return _loss(model(x), targets).item()

    for group, theta in thresholds(model).items():
        with torch.no_grad():
            theta += h
            up = loss_now()
            theta -= 2 * h
            down = loss_now()
            theta += h
        assert theta.grad.item() == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-9), group

    for path, _, _ in sparse_layers(model):
        stored = model.get_submodule(path).parametrizations.weight.original
        a = ALPHAS[OWNER[path]]
        pruned = (stored.abs() <= a).nonzero()[0].tolist()
        active = (stored.abs() > a).nonzero()[0].tolist()
        for index in (tuple(pruned), tuple(active)):
            with torch.no_grad():
                stored[index] += h
                up = loss_now()
                stored[index] -= 2 * h
                down = loss_now()
                stored[index] += h
            numeric = (up - down) / (2 * h)
            assert stored.grad[index].item() == pytest.approx(numeric, rel=1e-5, abs=1e-9)
        assert stored.grad[tuple(pruned)].item() == 0.0
