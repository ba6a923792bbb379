"""The fused CPU paths of the parametrization (one-pass ``softshrink`` / ``hardshrink`` forward,
blockwise backward, uint8-read masks) against the plain formulas, on weights that span several
blocks of the blockwise passes, so every block boundary and the short last block are exercised."""

from __future__ import annotations

import copy

import pytest
import torch

from adapmtl.engine.syncs import SyncCounter
from adapmtl.sparsity import parametrization as param
from adapmtl.sparsity import recycle, soft_threshold, sparse_layers, sparsify
from adapmtl.sparsity.masks import freeze_masks
from adapmtl.sparsity.parametrization import hard_threshold
from sparsity_toys import ConvMTL, logit, single_thread

_single_thread = pytest.fixture(autouse=True)(single_thread)

ALPHA = 0.05
# three full blocks and a partial one
SHAPE = (3 * param._CPU_CHUNK // 64 + 5, 64)


def _case(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(SHAPE, generator=gen, dtype=dtype) * 0.08
    # keep clear of the kink |W| = alpha, where the plain formula's autograd picks a side
    close = (weight.abs() - ALPHA).abs() < 1e-4
    weight = torch.where(close, weight.sign() * 2 * ALPHA, weight)
    upstream = torch.randn(SHAPE, generator=gen, dtype=dtype)
    return weight, torch.tensor(logit(ALPHA), dtype=dtype), upstream


def _plain_soft(weight: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    return torch.sign(weight) * torch.relu(weight.abs() - torch.sigmoid(theta))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_soft_forward_and_gradients_match_autograd_through_the_plain_formula(dtype):
    weight, theta, upstream = _case(dtype)
    w1, t1 = weight.clone().requires_grad_(True), theta.clone().requires_grad_(True)
    out = soft_threshold(w1, t1)
    out.backward(upstream)
    w2, t2 = weight.clone().requires_grad_(True), theta.clone().requires_grad_(True)
    expected = _plain_soft(w2, t2)
    expected.backward(upstream)
    assert torch.equal(out, expected)
    assert torch.equal(w1.grad, w2.grad)
    # the blockwise sum of dL/da runs in another order than autograd's single reduction
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(t1.grad, t2.grad, rtol=rtol, atol=0)


@pytest.mark.parametrize("hard", [False, True])
def test_the_accelerator_forward_matches_the_cpu_forward_bit_for_bit(hard):
    """The tensor-level path (used off the CPU, where reading a would synchronise the device)
    against the CPU's one-pass shrink, run here on the CPU; weights exactly at +-a included."""
    weight, theta, _ = _case(torch.float32, seed=2)
    alpha = torch.sigmoid(theta)
    weight[0, :2] = torch.stack([alpha, -alpha])
    result = torch.empty(weight.numel())
    param._shrink_by_tensor(weight.reshape(-1), alpha, hard, result)
    expected = param.threshold_forward(weight, alpha, hard, None)
    assert torch.equal(result.view_as(weight), expected)
    assert torch.equal(expected[0, :2], torch.zeros(2))
    with param.threshold_levels_as_tensors(), SyncCounter() as syncs:
        as_on_accelerator = param.threshold_forward(weight, alpha, hard, None)
    assert syncs.total == 0
    assert torch.equal(as_on_accelerator, expected)
    with SyncCounter() as syncs:
        param.threshold_forward(weight, alpha, hard, None)
    assert syncs.total == 1  # the CPU path reads a


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("regrow", [False, True])
def test_threshold_gradients_match_the_closed_form(hard, regrow):
    weight, theta, upstream = _case(torch.float64, seed=1)
    function = hard_threshold if hard else soft_threshold
    w, t = weight.clone().requires_grad_(True), theta.clone().requires_grad_(True)
    out = function(w, t, regrow=regrow)
    out.backward(upstream)
    alpha = torch.sigmoid(theta)  # ALPHA up to the rounding of logit and sigmoid
    kept = weight.abs() > alpha
    assert 0 < int(kept.sum()) < kept.numel()
    value = weight if hard else weight.sign() * (weight.abs() - alpha)
    assert torch.equal(out, torch.where(kept, value, torch.zeros_like(weight)))
    assert torch.equal(w.grad, upstream if regrow else upstream * kept)
    # Eq. 5 through the sigmoid: dL/dtheta = -sum(g sign(W) B) a (1 - a)
    expected_theta = -(upstream * weight.sign() * kept).sum() * alpha * (1 - alpha)
    torch.testing.assert_close(t.grad, expected_theta, rtol=1e-10, atol=0)


@pytest.mark.parametrize("hard", [False, True])
def test_only_the_requested_gradient_is_computed(hard):
    weight, theta, upstream = _case(torch.float32, seed=2)
    function = hard_threshold if hard else soft_threshold
    frozen_theta = weight.clone().requires_grad_(True)
    function(frozen_theta, theta).backward(upstream)
    assert torch.equal(frozen_theta.grad, upstream * (weight.abs() > ALPHA))
    t = theta.clone().requires_grad_(True)
    function(weight, t).backward(upstream)
    expected = -(upstream.double() * weight.sign() * (weight.abs() > ALPHA)).sum()
    torch.testing.assert_close(t.grad.double(), expected * ALPHA * (1 - ALPHA), rtol=1e-5, atol=0)


def test_non_contiguous_weight_and_upstream_gradient():
    weight, theta, upstream = _case(torch.float32, seed=3)
    w = weight.t().clone().requires_grad_(True)  # contiguous leaf, used through a transpose
    t = theta.clone().requires_grad_(True)
    soft_threshold(w.t(), t).backward(upstream)
    w2 = weight.clone().requires_grad_(True)
    t2 = theta.clone().requires_grad_(True)
    _plain_soft(w2, t2).backward(upstream)
    assert torch.equal(w.grad.t(), w2.grad)
    torch.testing.assert_close(t.grad, t2.grad, rtol=1e-5, atol=0)


@pytest.mark.parametrize("contiguous", [True, False])
def test_mask_forward_and_gradient_match_a_float_mask_product(contiguous):
    weight, _, upstream = _case(torch.float32, seed=4)
    mask = torch.rand(SHAPE, generator=torch.Generator().manual_seed(5)) > 0.3
    if not contiguous:
        weight, mask, upstream = weight.t(), mask.t(), upstream.t()
    w1 = weight.clone().requires_grad_(True)
    out = param._Mask.apply(w1, mask, None)
    out.backward(upstream)
    w2 = weight.clone().requires_grad_(True)
    expected = w2 * mask.to(weight.dtype)
    expected.backward(upstream)
    assert torch.equal(out, expected)
    assert torch.equal(w1.grad, w2.grad)


def test_frozen_model_matches_the_plain_masked_network():
    torch.manual_seed(6)
    dense = ConvMTL()
    model = sparsify(copy.deepcopy(dense), mode="hard", regrow=True, init=-3.0)
    freeze_masks(model)
    plain = copy.deepcopy(dense)
    layers = sparse_layers(model)
    for path, module, p in layers:
        with torch.no_grad():
            plain.get_submodule(path).weight.copy_(module.parametrizations.weight.original * p.mask)
    assert any(not bool(p.mask.all()) for _, _, p in layers)
    x = torch.randn(2, 3, 8, 8)
    got, expected = model(x), plain(x)
    for task in expected:
        torch.testing.assert_close(got[task], expected[task], rtol=1e-6, atol=1e-7)
    sum(o.square().mean() for o in got.values()).backward()
    sum(o.square().mean() for o in expected.values()).backward()
    for path, module, p in layers:
        torch.testing.assert_close(
            module.parametrizations.weight.original.grad,
            plain.get_submodule(path).weight.grad * p.mask,
            rtol=1e-6,
            atol=1e-8,
        )


# ---- dL/dW written over the effective weight once only the graph holds it ---------------------


@pytest.mark.parametrize("hard", [False, True])
def test_weight_gradient_reuses_the_dead_effective_weight(hard):
    weight, theta, upstream = _case(torch.float32, seed=7)
    function = hard_threshold if hard else soft_threshold
    w, t = weight.clone().requires_grad_(True), theta.clone().requires_grad_(True)
    out = function(w, t)
    address = out.data_ptr()
    loss = (out * upstream).sum()  # the product saves upstream and out; out is freed below
    del out
    loss.backward()
    assert w.grad.data_ptr() == address
    assert torch.equal(w.grad, upstream * (weight.abs() > torch.sigmoid(theta)))


@pytest.mark.parametrize("hard", [False, True])
def test_an_effective_weight_held_outside_the_graph_is_left_intact(hard):
    weight, theta, _ = _case(torch.float32, seed=8)
    function = hard_threshold if hard else soft_threshold
    w, t = weight.clone().requires_grad_(True), theta.clone().requires_grad_(True)
    out = function(w, t)
    before = out.detach().clone()
    (out * 2.0).sum().backward()  # the scalar product saves nothing
    assert torch.equal(out, before)
    assert torch.equal(w.grad, 2.0 * (weight.abs() > torch.sigmoid(theta)).float())


@pytest.mark.parametrize("hard", [False, True])
def test_retain_graph_backward_twice_accumulates_the_same_gradient(hard):
    weight, theta, _ = _case(torch.float32, seed=9)
    function = hard_threshold if hard else soft_threshold
    w, t = weight.clone().requires_grad_(True), theta.clone().requires_grad_(True)
    loss = (function(w, t) * 3.0).sum()
    loss.backward(retain_graph=True)
    first_w, first_t = w.grad.clone(), t.grad.clone()
    loss.backward()
    assert torch.equal(w.grad, 2 * first_w)
    torch.testing.assert_close(t.grad, 2 * first_t, rtol=1e-6, atol=0)
    assert torch.equal(first_w, 3.0 * (weight.abs() > torch.sigmoid(theta)).float())


# ---- buffers recycled from step to step (adapmtl.sparsity.recycle) ----------------------------


@pytest.fixture
def recycle_small(monkeypatch):
    """Recycle the toy model's weights too (only weights of 32 MB or more are, by default)."""
    monkeypatch.setattr(recycle, "RECYCLE_BYTES", 0)


class _Reference(torch.nn.Module):
    """The effective weight by plain autograd: Eq. 2's soft threshold as written, the hard
    threshold as W * B with the surrogate gradients added as zero-valued terms, or W * M."""

    def __init__(self, sparse: param.SparseWeight) -> None:
        super().__init__()
        object.__setattr__(self, "sparse", sparse)  # not a submodule: same parameter names

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        p = self.sparse
        if p.masked:
            return weight * p.mask
        alpha = torch.sigmoid(p.theta)
        kept = (weight.abs() > alpha).to(weight.dtype)
        if not p.hard and not p.regrow:
            return _plain_soft(weight, p.theta)
        value = weight * kept if p.hard else weight.sign() * torch.relu(weight.abs() - alpha)
        through = weight if p.regrow else weight * kept  # carries dL/dW
        # zero-valued, carries dL/da = -sign(W) B (Eq. 5)
        surrogate = -(weight.sign() * kept).detach() * (alpha - alpha.detach())
        return through + (value - through).detach() + surrogate


def _train(model: torch.nn.Module, steps: int, seed: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    states = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        out = model(torch.randn(2, 3, 8, 8, generator=gen))
        sum(o.square().mean() for o in out.values()).backward()
        optimizer.step()
        states.append({k: v.detach().clone() for k, v in model.named_parameters()})
    return states


@pytest.mark.parametrize(
    ("mode", "regrow", "frozen"),
    [("soft", False, False), ("soft", True, False), ("hard", True, False), ("hard", True, True)],
)
def test_training_with_recycled_buffers_matches_plain_autograd(mode, regrow, frozen, recycle_small):
    torch.manual_seed(10)
    model = sparsify(ConvMTL(), mode=mode, regrow=regrow, init=-3.5)
    if frozen:
        freeze_masks(model)
    reference = copy.deepcopy(model)
    for _, module, p in sparse_layers(reference):
        module.parametrizations.weight[0] = _Reference(p)
    got, expected = _train(model, 4, seed=11), _train(reference, 4, seed=11)
    for step, (g, e) in enumerate(zip(got, expected, strict=True)):
        for key in e:
            torch.testing.assert_close(g[key], e[key], rtol=1e-5, atol=1e-6, msg=f"{step} {key}")
    # the recycling did happen: each layer kept its gradient's storage for the next step
    for _, module, p in sparse_layers(model):
        assert p.recycler.buffer is not None
        assert p.recycler.holds(module.parametrizations.weight.original.grad)


def test_a_kept_gradient_or_effective_weight_is_never_overwritten(recycle_small):
    torch.manual_seed(12)
    model = sparsify(ConvMTL(), init=-3.5)
    x = torch.randn(2, 3, 8, 8)
    sum(o.sum() for o in model(x).values()).backward()
    layer = model.get_submodule("backbone.0")
    grad = layer.parametrizations.weight.original.grad
    kept = grad.clone()
    held = layer.weight  # an effective weight the user holds (grad mode: recycled if it could)
    held_value = held.detach().clone()
    sum(o.sum() for o in model(x).values()).backward()  # accumulates: grad is still referenced
    assert torch.equal(held, held_value)
    torch.testing.assert_close(layer.parametrizations.weight.original.grad, 2 * kept)


def test_evaluation_releases_the_buffers_and_copies_start_empty(recycle_small):
    torch.manual_seed(13)
    model = sparsify(ConvMTL(), init=-3.5)
    sum(o.sum() for o in model(torch.randn(2, 3, 8, 8)).values()).backward()
    layers = sparse_layers(model)
    assert all(p.recycler.buffer is not None for _, _, p in layers)
    assert all(p.recycler.buffer is None for _, _, p in sparse_layers(copy.deepcopy(model)))
    assert not any("recycler" in key for key in model.state_dict())
    with torch.no_grad():
        model(torch.randn(1, 3, 8, 8))
    assert all(p.recycler.buffer is None for _, _, p in layers)


def test_small_weights_carry_no_buffer_between_steps():
    model = sparsify(ConvMTL(), init=-3.5)
    sum(o.sum() for o in model(torch.randn(2, 3, 8, 8)).values()).backward()
    assert all(p.recycler.buffer is None for _, _, p in sparse_layers(model))
