"""The one weight parametrization every pruning method uses.

A prunable weight ``W`` is replaced, through ``torch.nn.utils.parametrize``, by an effective weight
computed in one of three modes:

* **soft threshold** (paper Eq. 2): ``S(W, a) = sign(W) * relu(|W| - a)``, ``a = sigmoid(theta)``,
  where ``theta`` is the learnable threshold of the weight's group; with ``regrow`` (not in the
  paper) every weight gets the straight-through gradient instead of Eq. 4's, as below;
* **hard threshold**: ``H(W, a) = W * 1[|W| > a]`` with the same learnable ``a``: the survivors keep
  their full value (no shrinkage by ``a``); theta's gradient is the soft threshold's (Eq. 4-5), used
  as a surrogate. The weights' gradient is the soft threshold's too (pruned weights get none) or,
  with ``regrow``, the straight-through gradient of the pruned model for every weight, so a pruned
  weight keeps learning and comes back when it grows above the threshold (dynamic pruning with
  feedback, Lin et al., 2020);
* **mask**: ``W * M`` for a fixed boolean mask ``M`` (SNIP, LTH, IMP, DiSparse, and AdapMTL once the
  target-sparsity controller has frozen the mask).

The mask is empty (zero elements) while the soft threshold is in use, so a soft-threshold model
costs no extra memory; ``state_dict`` always carries the mask buffer, and loading adopts whatever
shape the saved mask has, so a frozen checkpoint loads into a freshly sparsified model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class _SoftThreshold(torch.autograd.Function):
    """S(W, a) with the paper's sub-gradients (Eq. 4-5, supplement Eq. 1).

    With the indicator ``B = |W| > a``: dS/dW = B and dS/da = -sign(W) * B. Forward uses the
    identity S(W, a) = W - clamp(W, -a, a); backward uses B = (S != 0) and sign(W) * B = sign(S).
    Each direction allocates one weight-sized buffer (the minimum: S, and the gradient of W). Only
    S is saved, and the convolution keeps it for its own backward anyway, so training memory is the
    dense level plus the effective weights.
    """

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        # One new buffer: for large weights, allocating (page-faulting) it costs more than the
        # arithmetic, so the subtraction is done in place.
        clamped = weight.clamp(-alpha, alpha)
        out = torch.sub(weight, clamped, out=clamped)
        ctx.save_for_backward(out)
        ctx.alpha_shape = alpha.shape
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        (out,) = ctx.saved_tensors
        signs = out.sign()
        grad_alpha = _alpha_gradient(ctx, grad_out, signs)
        # in place: the weight gradient reuses the sign buffer (one allocation per direction)
        return signs.abs_().mul_(grad_out), grad_alpha


def _alpha_gradient(ctx: Any, grad_out: torch.Tensor, signs: torch.Tensor) -> torch.Tensor | None:
    """dL/da = -sum(grad * sign(W) * B) (Eq. 5), with ``signs`` = sign(W) * B = sign of the
    effective weight; None when the threshold needs no gradient."""
    if not ctx.needs_input_grad[1]:
        return None
    return -torch.dot(grad_out.reshape(-1), signs.reshape(-1)).reshape(ctx.alpha_shape)


class _SoftThresholdRegrow(_SoftThreshold):
    """S(W, a) with the straight-through weight gradient dS/dW = 1 (pruned weights included);
    theta's gradient stays Eq. 5's."""

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        (out,) = ctx.saved_tensors
        return grad_out, _alpha_gradient(ctx, grad_out, out.sign())


class _HardThreshold(torch.autograd.Function):
    """H(W, a) = W * 1[|W| > a], with the soft threshold's sub-gradients as a surrogate.

    dH/dW = B and dH/da = -sign(W) * B with ``B = |W| > a`` (Eq. 4-5 applied unchanged): the
    threshold sees the same signal as in soft mode, while the forward pass keeps the survivors
    whole.
    """

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        out = weight * (weight.abs() > alpha)
        ctx.save_for_backward(out)
        ctx.alpha_shape = alpha.shape
        return out

    backward = _SoftThreshold.backward


class _HardThresholdRegrow(_HardThreshold):
    """H(W, a) with the straight-through weight gradient dH/dW = 1 (pruned weights included)."""

    backward = _SoftThresholdRegrow.backward


def soft_threshold(
    weight: torch.Tensor, theta: torch.Tensor, *, regrow: bool = False
) -> torch.Tensor:
    """Paper Eq. 2: ``sign(W) * relu(|W| - sigmoid(theta))``, differentiable in W and theta; with
    ``regrow`` the weights get the straight-through gradient instead of Eq. 4's."""
    function = _SoftThresholdRegrow if regrow else _SoftThreshold
    return function.apply(weight, torch.sigmoid(theta))


def hard_threshold(
    weight: torch.Tensor, theta: torch.Tensor, *, regrow: bool = False
) -> torch.Tensor:
    """``W * 1[|W| > sigmoid(theta)]``, with the soft threshold's sub-gradients (a surrogate);
    with ``regrow`` the weights get the straight-through gradient instead."""
    function = _HardThresholdRegrow if regrow else _HardThreshold
    return function.apply(weight, torch.sigmoid(theta))


_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps")


class SparseWeight(nn.Module):
    """Parametrization producing the effective (sparse) weight of one layer.

    ``thresholds`` is the model's threshold dictionary; it is held as a plain attribute, not a
    submodule, so each threshold appears once in ``state_dict`` (under the model), safetensors can
    save the model, and ``copy.deepcopy`` re-points the reference to the copied dictionary.
    ``group`` is the key of this layer's threshold, or ``None`` for a mask-only layer; ``hard``
    applies the threshold as a hard mask (:func:`hard_threshold`) instead of Eq. 2, and
    ``regrow`` gives the pruned weights of either threshold the straight-through gradient.
    """

    mask: torch.Tensor

    def __init__(
        self,
        thresholds: nn.ParameterDict | None,
        group: str | None,
        *,
        hard: bool = False,
        regrow: bool = False,
    ) -> None:
        super().__init__()
        if (thresholds is None) != (group is None):
            raise ValueError("thresholds and group must be given together")
        object.__setattr__(self, "thresholds", thresholds)
        self.group = group
        self.hard = hard
        self.regrow = regrow
        self.register_buffer("mask", torch.ones(0, dtype=torch.bool, device="cpu"))

    @property
    def masked(self) -> bool:
        """True when the effective weight is ``W * mask`` (mask-based, or frozen soft threshold)."""
        return self.mask.numel() > 0

    @property
    def theta(self) -> torch.Tensor | None:
        return None if self.group is None else self.thresholds[self.group]

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.masked:
            return weight * self.mask
        if self.group is None:
            return weight
        if weight.device.type in _AUTOCAST_DEVICES and torch.is_autocast_enabled(
            weight.device.type
        ):
            # under mixed precision the threshold is still applied in the weight's own precision
            # (float32); the layer's own operation casts the effective weight afterwards
            with torch.autocast(weight.device.type, enabled=False):
                return self._threshold(weight)
        return self._threshold(weight)

    def _threshold(self, weight: torch.Tensor) -> torch.Tensor:
        theta = self.thresholds[self.group]
        if self.hard:
            return hard_threshold(weight, theta, regrow=self.regrow)
        return soft_threshold(weight, theta, regrow=self.regrow)

    def active(self, weight: torch.Tensor) -> torch.Tensor:
        """Boolean map of the weights that are nonzero in the effective weight (no autograd)."""
        with torch.no_grad():
            if self.masked:
                return self.mask & (weight != 0)
            if self.group is None:
                return weight != 0
            return weight.abs() > torch.sigmoid(self.thresholds[self.group])

    def set_mask(self, mask: torch.Tensor) -> None:
        """Switch to mask mode with ``mask`` (same shape as the weight)."""
        self.mask = mask.detach().to(dtype=torch.bool, device=self.mask.device).clone()

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        key = prefix + "mask"
        if key in state_dict and state_dict[key].shape != self.mask.shape:
            self.mask = torch.empty_like(state_dict[key], dtype=torch.bool, device=self.mask.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        mode = "mask" if self.masked else "dense"
        if not self.masked and self.group is not None:
            mode = "hard-threshold" if self.hard else "soft-threshold"
        return f"mode={mode}, group={self.group!r}"
