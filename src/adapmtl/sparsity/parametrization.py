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
  target-sparsity controller has frozen the mask). Once a mask is final,
  :func:`~adapmtl.sparsity.masks.keep_masks_in_weights` keeps the pruned stored weights at zero
  instead (``in_place``): the forward uses ``W`` itself, with no pass over the weights and no
  weight-sized buffer, and only the gradient is masked.

The mask is empty (zero elements) while the soft threshold is in use, so a soft-threshold model
costs no extra memory; ``state_dict`` always carries the mask buffer, and loading adopts whatever
shape the saved mask has, so a frozen checkpoint loads into a freshly sparsified model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from adapmtl.sparsity.blocks import block_magnitude, block_threshold, check_block, is_blocked
from adapmtl.sparsity.recycle import Recycler, baselines, carries_buffer, graph_only

# Elements per chunk of the chunked CPU passes: 1 MB in float32, so the several passes over a
# chunk run in cache and a weight-sized array is streamed from memory once, in few Python steps.
_CPU_CHUNK = 1 << 18


def _chunks(*flats: torch.Tensor) -> Iterator[tuple[torch.Tensor, ...]]:
    """The same chunk of each flat tensor in turn: one chunk off the CPU, where a kernel launch
    per chunk would cost more than the temporaries it saves, and for tensors of one chunk (no
    slicing: most layers, whose Python overhead per call matters as much as their arithmetic)."""
    n = flats[0].numel()
    if flats[0].device.type != "cpu" or n <= _CPU_CHUNK:
        yield flats
        return
    for start in range(0, n, _CPU_CHUNK):
        yield tuple(f[start : start + _CPU_CHUNK] for f in flats)


def threshold_forward(
    weight: torch.Tensor, alpha: torch.Tensor | float, hard: bool, out: torch.Tensor | None
) -> torch.Tensor:
    """S(W, a) = W - clamp(W, -a, a) or H(W, a) = W * 1[|W| > a], into ``out`` or a new buffer.

    On the CPU, where reading ``a`` costs nothing, ``softshrink``/``hardshrink`` compute S or H in
    one pass (the same values bit for bit: both compare |W| with a strictly and S subtracts a
    from the survivors): the weight is read once and the result written once. On an accelerator
    ``a`` stays a tensor (:func:`_shrink_by_tensor`), as reading it would synchronise the device.
    ``alpha`` may also be given as the number already read (:func:`threshold_level`).
    """
    flat = weight.reshape(-1)
    result = torch.empty_like(flat) if out is None else out.view(-1)
    level = threshold_level(alpha) if isinstance(alpha, torch.Tensor) else alpha
    if isinstance(level, float):
        shrink = torch.ops.aten.hardshrink.out if hard else torch.ops.aten.softshrink.out
        shrink(flat, level, out=result)
    else:
        _shrink_by_tensor(flat, level, hard, result)
    return result.view_as(weight)


def threshold_level(alpha: torch.Tensor) -> torch.Tensor | float:
    """The level ``a`` as the thresholds apply it: a number where reading it is free (the CPU),
    else the 0-d tensor itself."""
    return alpha.item() if _reads_for_free(alpha) else alpha


_levels_as_tensors = False


@contextlib.contextmanager
def threshold_levels_as_tensors() -> Iterator[None]:
    """Apply every threshold as on an accelerator, its level kept as a tensor, on the CPU too.

    The CPU path reads the level ``a`` as a number (free there); within this context a CPU-only
    run makes the host reads a GPU step would, so that they can be counted
    (:class:`~adapmtl.engine.syncs.SyncCounter`). The values are the same either way."""
    global _levels_as_tensors
    previous, _levels_as_tensors = _levels_as_tensors, True
    try:
        yield
    finally:
        _levels_as_tensors = previous


def _reads_for_free(tensor: torch.Tensor) -> bool:
    """True where reading a tensor's value costs no device synchronisation (the CPU), unless
    :func:`threshold_levels_as_tensors` asks for the accelerator's path."""
    return tensor.device.type == "cpu" and not _levels_as_tensors


def _shrink_by_tensor(
    flat: torch.Tensor, alpha: torch.Tensor, hard: bool, result: torch.Tensor
) -> None:
    """S or H into ``result`` with ``a`` as a 0-d tensor: S = W - min(max(W, -a), a)
    (``minimum``/``maximum`` with a 0-d tensor run vectorized where ``clamp`` with tensor bounds
    does not); H keeps W where S != 0, i.e. where |W| > a."""
    torch.maximum(torch.minimum(flat, alpha, out=result), -alpha, out=result)
    torch.sub(flat, result, out=result)
    if hard:  # hardshrink's gradient with lambda 0: W where S is nonzero
        torch.ops.aten.hardshrink_backward.grad_input(flat, result, 0.0, grad_input=result)


def _recycled(
    weight: torch.Tensor, recycler: Recycler | None
) -> tuple[Recycler | None, torch.Tensor | None]:
    """The recycler for a leaf weight on CPU (the gradient it keeps becomes ``weight.grad``),
    and the dead buffer it hands back for this forward's output, if any."""
    if weight.device.type != "cpu" or not weight.is_leaf:
        recycler = None
    return recycler, recycler.take(weight) if recycler is not None else None


def _save(ctx: Any, weight: torch.Tensor, out: torch.Tensor, recycler: Recycler | None) -> None:
    ctx.save_for_backward(out)
    ctx.recycler = recycler
    ctx.weight = weight if recycler is not None else None  # a leaf: no reference cycle


def _finish(ctx: Any, weight_grad: torch.Tensor | None) -> torch.Tensor | None:
    if ctx.recycler is not None:
        ctx.recycler.keep(weight_grad, ctx.weight)
    return weight_grad


def _threshold_apply(
    ctx: Any, weight: torch.Tensor, alpha: torch.Tensor, recycler: Recycler | None, hard: bool
) -> torch.Tensor:
    """The forward of either threshold: S or H into a recycled buffer or a new one, saved for
    :func:`_threshold_backward`."""
    recycler, buffer = _recycled(weight, recycler)
    out = threshold_forward(weight, alpha, hard=hard, out=buffer)
    _save(ctx, weight, out, recycler)
    ctx.alpha_shape = alpha.shape
    return out


def _overwritable(out: torch.Tensor, grad_out: torch.Tensor, recycler: Recycler | None) -> bool:
    return (
        out.is_contiguous()
        and grad_out.dtype == out.dtype
        and grad_out.device == out.device
        and graph_only(out, recycler)
    )


def threshold_gradients(
    grad_out: torch.Tensor,
    out: torch.Tensor,
    *,
    need_weight: bool,
    need_alpha: bool,
    straight_through: bool,
    recycler: Recycler | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """dL/dW and dL/da of either threshold from its output ``out`` (S or H) and dL/dout.

    With ``B = |W| > a = (out != 0)`` and ``sign(W) * B = sign(out)`` (both thresholds):
    dL/dW = dL/dout * B (Eq. 4), or dL/dout itself when ``straight_through``; dL/da =
    -sum(dL/dout * sign(out)) (Eq. 5), a 0-d tensor. On CPU the work runs chunk by chunk, so no
    weight-sized temporary is made, and dL/dW is written over ``out`` when that is dead
    (:mod:`adapmtl.sparsity.recycle`); ``out`` must not be used afterwards.
    """
    masked_grad = need_weight and not straight_through
    in_place = masked_grad and _overwritable(out, grad_out, recycler)
    g, s = grad_out.reshape(-1), out.reshape(-1)
    grad_weight = (s if in_place else torch.empty_like(g)) if masked_grad else None
    partial: list[torch.Tensor] = []
    for g_chunk, s_chunk, w_chunk in _chunks(g, s, s if grad_weight is None else grad_weight):
        if need_alpha:  # before s_chunk is overwritten
            partial.append(torch.dot(g_chunk, torch.sign(s_chunk)))
        if grad_weight is not None:
            # hardshrink's gradient with lambda 0 is dL/dout * (out != 0), in one pass
            torch.ops.aten.hardshrink_backward.grad_input(g_chunk, s_chunk, 0.0, grad_input=w_chunk)
    if grad_weight is not None:
        weight_grad: torch.Tensor | None = grad_weight.view_as(grad_out)
    else:
        weight_grad = grad_out if need_weight else None
    return weight_grad, -sum(partial) if need_alpha else None


def _threshold_backward(
    ctx: Any, grad_out: torch.Tensor, straight_through: bool
) -> tuple[torch.Tensor | None, ...]:
    """The backward of either threshold's autograd function (:func:`threshold_gradients`)."""
    (out,) = ctx.saved_tensors
    need_weight, need_alpha = ctx.needs_input_grad[:2]
    weight_grad, alpha_grad = threshold_gradients(
        grad_out,
        out,
        need_weight=need_weight,
        need_alpha=need_alpha,
        straight_through=straight_through,
        recycler=ctx.recycler,
    )
    if alpha_grad is not None:
        alpha_grad = alpha_grad.reshape(ctx.alpha_shape)
    return _finish(ctx, weight_grad), alpha_grad, None


class _SoftThreshold(torch.autograd.Function):
    """S(W, a) with the paper's sub-gradients (Eq. 4-5, supplement Eq. 1).

    With the indicator ``B = |W| > a``: dS/dW = B and dS/da = -sign(W) * B. Only S is saved (the
    convolution keeps it for its own backward anyway), so training memory is the dense level plus
    the effective weights. With a :class:`~adapmtl.sparsity.recycle.Recycler` (CPU), S is
    written into the layer's previous weight gradient once that is dropped, and the new
    gradient over S.
    """

    @staticmethod
    def forward(
        ctx: Any, weight: torch.Tensor, alpha: torch.Tensor, recycler: Recycler | None
    ) -> torch.Tensor:
        return _threshold_apply(ctx, weight, alpha, recycler, hard=False)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return _threshold_backward(ctx, grad_out, straight_through=False)


class _SoftThresholdRegrow(_SoftThreshold):
    """S(W, a) with the straight-through weight gradient dS/dW = 1 (pruned weights included);
    theta's gradient stays Eq. 5's."""

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return _threshold_backward(ctx, grad_out, straight_through=True)


class _HardThreshold(torch.autograd.Function):
    """H(W, a) = W * 1[|W| > a], with the soft threshold's sub-gradients as a surrogate.

    dH/dW = B and dH/da = -sign(W) * B with ``B = |W| > a`` (Eq. 4-5 applied unchanged): the
    threshold sees the same signal as in soft mode, while the forward pass keeps the survivors
    whole.
    """

    @staticmethod
    def forward(
        ctx: Any, weight: torch.Tensor, alpha: torch.Tensor, recycler: Recycler | None
    ) -> torch.Tensor:
        return _threshold_apply(ctx, weight, alpha, recycler, hard=True)

    backward = _SoftThreshold.backward


class _HardThresholdRegrow(_HardThreshold):
    """H(W, a) with the straight-through weight gradient dH/dW = 1 (pruned weights included)."""

    backward = _SoftThresholdRegrow.backward


def _masked(x: torch.Tensor, mask: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """``x * mask`` for a boolean ``mask`` of x's shape, into ``out`` (contiguous, x's shape;
    it may be the buffer x's values came from) or a new buffer.

    The mask is read as uint8, chunk by chunk into a small float buffer: CPU converts uint8 to
    float with vector instructions but bool one element at a time, and ``x * mask`` (or
    ``where``, ``masked_fill``, both scalar loops) would cost several times the multiplication.
    """
    flat, bits = x.reshape(-1), mask.reshape(-1).view(torch.uint8)
    result = torch.empty_like(flat) if out is None else out.view(-1)
    for x_chunk, bit_chunk, r_chunk in _chunks(flat, bits, result):
        torch.mul(x_chunk, bit_chunk.to(x_chunk.dtype), out=r_chunk)
    return result.view_as(x)


class _Mask(torch.autograd.Function):
    """W * M for a fixed boolean mask M; dL/dW = dL/d(W * M) * M. Buffers are recycled as in
    :class:`_SoftThreshold`."""

    @staticmethod
    def forward(
        ctx: Any, weight: torch.Tensor, mask: torch.Tensor, recycler: Recycler | None
    ) -> torch.Tensor:
        recycler, buffer = _recycled(weight, recycler)
        out = _masked(weight, mask, buffer)
        _save(ctx, weight, out, recycler)
        ctx.mask = mask  # the module's buffer, fixed while the graph lives
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        (out,) = ctx.saved_tensors
        target = out if _overwritable(out, grad_out, ctx.recycler) else None
        return _finish(ctx, _masked(grad_out, ctx.mask, target)), None, None


class _MaskGradient(torch.autograd.Function):
    """The identity on a weight whose pruned entries are kept at zero in place; dL/dW =
    dL/dW' * M, so the pruned entries get no gradient and stay at zero. The same values and
    gradients as :class:`_Mask` without its forward pass over the weight."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ctx.mask = mask
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:
        # One weight-sized conversion and product, not :func:`_masked`'s chunks: in training
        # steps of mobilenetv2_cpu this came out about 5 % of a step faster (interleaved
        # development runs), although the two cost the same on one layer alone. Only weights
        # below RECYCLE_BYTES get here on the CPU (keep_masks_in_weights), so the temporaries
        # come from glibc's heap, not from fresh mmaps.
        return grad_out * ctx.mask.view(torch.uint8).to(grad_out.dtype), None


def soft_threshold(
    weight: torch.Tensor,
    theta: torch.Tensor,
    *,
    regrow: bool = False,
    recycler: Recycler | None = None,
) -> torch.Tensor:
    """Paper Eq. 2: ``sign(W) * relu(|W| - sigmoid(theta))``, differentiable in W and theta; with
    ``regrow`` the weights get the straight-through gradient instead of Eq. 4's. ``recycler``
    reuses the layer's dead buffers from step to step (:mod:`adapmtl.sparsity.recycle`)."""
    function = _SoftThresholdRegrow if regrow else _SoftThreshold
    return function.apply(weight, torch.sigmoid(theta), recycler)


def hard_threshold(
    weight: torch.Tensor,
    theta: torch.Tensor,
    *,
    regrow: bool = False,
    recycler: Recycler | None = None,
) -> torch.Tensor:
    """``W * 1[|W| > sigmoid(theta)]``, with the soft threshold's sub-gradients (a surrogate);
    with ``regrow`` the weights get the straight-through gradient instead."""
    function = _HardThresholdRegrow if regrow else _HardThreshold
    return function.apply(weight, torch.sigmoid(theta), recycler)


_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps")


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast disabled on ``device`` where it is enabled: under mixed precision a threshold is
    still applied in the weight's own precision (float32); the layer's own operation casts the
    effective weight afterwards."""
    if device.type in _AUTOCAST_DEVICES and torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


class SparseWeight(nn.Module):
    """Parametrization producing the effective (sparse) weight of one layer.

    ``thresholds`` is the model's threshold dictionary; it is held as a plain attribute, not a
    submodule, so each threshold appears once in ``state_dict`` (under the model), safetensors can
    save the model, and ``copy.deepcopy`` re-points the reference to the copied dictionary.
    ``group`` is the key of this layer's threshold, or ``None`` for a mask-only layer; ``hard``
    applies the threshold as a hard mask (:func:`hard_threshold`) instead of Eq. 2, and
    ``regrow`` gives the pruned weights of either threshold the straight-through gradient.
    ``block`` > 1 prunes a threshold layer in blocks of that many output channels
    (:mod:`adapmtl.sparsity.blocks`), where its output count is a multiple of it.
    ``in_place`` (set by :func:`~adapmtl.sparsity.masks.keep_masks_in_weights`, cleared by every
    new mask and every state-dict load) says that the stored weight is already zero under the
    mask, so the mask applies to the gradient only. ``prepared`` is an effective weight computed
    ahead of the forward for many layers at once (:mod:`adapmtl.sparsity.batched`), which the
    forward returns while it is set.
    """

    mask: torch.Tensor

    def __init__(
        self,
        thresholds: nn.ParameterDict | None,
        group: str | None,
        *,
        hard: bool = False,
        regrow: bool = False,
        block: int = 1,
    ) -> None:
        super().__init__()
        if (thresholds is None) != (group is None):
            raise ValueError("thresholds and group must be given together")
        self.block = check_block(block, "block")
        object.__setattr__(self, "thresholds", thresholds)
        self.group = group
        self.hard = hard
        self.regrow = regrow
        self.in_place = False
        self.prepared: torch.Tensor | None = None
        self.register_buffer("mask", torch.ones(0, dtype=torch.bool, device="cpu"))
        self.recycler = Recycler()
        baselines()  # measured here, never first inside a backward pass

    @property
    def masked(self) -> bool:
        """True when the effective weight is ``W * mask`` (mask-based, or frozen soft threshold)."""
        return self.mask.numel() > 0

    @property
    def theta(self) -> torch.Tensor | None:
        return None if self.group is None else self.thresholds[self.group]

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.prepared is not None:
            return self.prepared
        if self.masked and self.in_place:
            self.recycler.release()
            if torch.is_grad_enabled() and weight.requires_grad:
                return _MaskGradient.apply(weight, self.mask)
            return weight
        recycler = self._training_recycler(weight)
        if self.masked:
            return _Mask.apply(weight, self.mask, recycler)
        if self.group is None:
            return weight
        with autocast_off(weight.device):
            return self._threshold(weight, recycler)

    def _training_recycler(self, weight: torch.Tensor) -> Recycler | None:
        """The recycler in a training forward of a weight that carries a buffer between steps
        (:func:`~adapmtl.sparsity.recycle.carries_buffer`); elsewhere (smaller or non-CPU
        weights, evaluation, no_grad) it lets its buffer go, so a model at rest holds no
        weight-sized buffer beyond its gradients."""
        if carries_buffer(weight) and torch.is_grad_enabled() and weight.requires_grad:
            return self.recycler
        self.recycler.release()
        return None

    def blocked(self, weight: torch.Tensor) -> bool:
        """True when this layer's threshold acts on blocks of output channels."""
        return self.group is not None and is_blocked(weight, self.block)

    def magnitude(self, weight: torch.Tensor) -> torch.Tensor:
        """What the threshold compares with alpha, per weight: ``|W|``, or its block's
        magnitude on a blocked layer (:func:`~adapmtl.sparsity.blocks.block_magnitude`)."""
        return block_magnitude(weight, self.block) if self.blocked(weight) else weight.abs()

    def _threshold(self, weight: torch.Tensor, recycler: Recycler | None) -> torch.Tensor:
        theta = self.thresholds[self.group]
        if self.blocked(weight):
            alpha = torch.sigmoid(theta)
            return block_threshold(
                weight, alpha, hard=self.hard, regrow=self.regrow, block=self.block
            )
        function = hard_threshold if self.hard else soft_threshold
        return function(weight, theta, regrow=self.regrow, recycler=recycler)

    def active(self, weight: torch.Tensor) -> torch.Tensor:
        """Boolean map of the weights that are nonzero in the effective weight (no autograd)."""
        with torch.no_grad():
            if self.masked:
                return self.mask & (weight != 0)
            if self.group is None:
                return weight != 0
            return self.magnitude(weight) > torch.sigmoid(self.thresholds[self.group])

    def set_mask(self, mask: torch.Tensor) -> None:
        """Switch to mask mode with ``mask`` (same shape as the weight). The stored weight may
        hold values under the new mask, so the mask is applied in the forward again."""
        self.mask = mask.detach().to(dtype=torch.bool, device=self.mask.device).clone()
        self.in_place = False

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
        self.in_place = False  # the loaded weights may hold values under the mask
        key = prefix + "mask"
        if key in state_dict and state_dict[key].shape != self.mask.shape:
            self.mask = torch.empty_like(state_dict[key], dtype=torch.bool, device=self.mask.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        mode = ("mask in place" if self.in_place else "mask") if self.masked else "dense"
        if not self.masked and self.group is not None:
            mode = "hard-threshold" if self.hard else "soft-threshold"
        blocks = f", block={self.block}" if self.block > 1 else ""
        return f"mode={mode}, group={self.group!r}{blocks}"
