"""Recycling a layer's weight-sized buffers from one training step to the next (CPU).

A sparsified layer makes, every step, an effective weight (forward) and a weight gradient
(backward) the size of its weight. For a large weight a fresh buffer is a fresh ``mmap`` for glibc,
whose page faults cost several times the arithmetic on it (47 MB, a MobileNetV2 head conv: ~35 ms
of faults, ~4 ms of arithmetic), so the parametrization reuses memory that is provably dead:

* backward writes dL/dW over the effective weight once only the autograd graph holds it, and the
  graph is freed after this pass (:func:`graph_only`);
* the storage of that gradient, which becomes ``weight.grad``, is remembered by the layer's
  :class:`Recycler`; once the optimizer drops it (``zero_grad(set_to_none=True)``), the next
  forward writes the effective weight into it instead of allocating.

Only weights of at least :data:`RECYCLE_BYTES` carry a buffer between steps: glibc serves
smaller blocks from its heap, whose recently freed memory is faster to reuse than a buffer kept
from the previous step (measured on ``mobilenetv2_cpu``, whose largest weight is 2.9 MB).

"Provably dead" is a storage reference count equal to the references the code itself holds, so a
tensor anyone else keeps (an effective weight the user holds, a retained graph, a gradient kept
for accumulation) is never overwritten. The counts use two private torch functions; without them
(another torch version) nothing is recycled and every buffer is freshly allocated, as before.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch

# glibc's largest dynamic mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX): blocks
# this large are always a fresh mmap, freed back to the system at once
RECYCLE_BYTES = 32 << 20


def carries_buffer(weight: torch.Tensor) -> bool:
    """True for a CPU weight of :data:`RECYCLE_BYTES` or more: each weight-sized buffer of it is
    a fresh ``mmap``, so its layer carries one from step to step."""
    return weight.device.type == "cpu" and weight.numel() * weight.element_size() >= RECYCLE_BYTES


def storage_refs(tensor: torch.Tensor) -> int:
    """References to ``tensor``'s storage (tensors and views sharing it, saved copies, and one
    for the storage object made to ask)."""
    return torch._C._storage_Use_Count(tensor.untyped_storage()._cdata)


class _Probe(torch.autograd.Function):
    """Records, in backward, the storage references of a saved output only the graph holds."""

    seen: ClassVar[list[int]] = []

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x * 2
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        _Probe.seen.append(storage_refs(out))
        return grad_out


@functools.cache
def baselines() -> tuple[int, int] | None:
    """(references of a tensor nobody else holds, references of a saved output seen from
    backward when only the graph holds it), measured once on this torch version; None when the
    private functions are missing. Call it outside any backward pass (the constructor of
    :class:`~adapmtl.sparsity.parametrization.SparseWeight` does)."""
    if not hasattr(torch._C, "_storage_Use_Count") or not hasattr(
        torch._C._autograd, "_get_current_graph_task_keep_graph"
    ):
        return None
    alone = torch.empty(1, device="cpu")
    with torch.enable_grad():
        x = torch.ones(2, requires_grad=True, device="cpu")
        (_Probe.apply(x) * 1.0).sum().backward()  # neither consumer saves the output
    return storage_refs(alone), _Probe.seen.pop()


def graph_only(out: torch.Tensor, recycler: Recycler | None) -> bool:
    """True when ``out``, a saved output just unpacked in backward, may be overwritten: nothing but
    the graph (and ``recycler``, when it holds the same storage) references it, and the graph is
    freed after this pass (no ``retain_graph``)."""
    counts = baselines()
    if counts is None or torch._C._autograd._get_current_graph_task_keep_graph():
        return False
    held = recycler is not None and recycler.holds(out)
    return storage_refs(out) == counts[1] + held


class Recycler:
    """The weight-sized buffer one layer carries from its weight gradient to its next effective
    weight (see the module docstring). Holds at most one buffer, never in ``state_dict``."""

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None

    def holds(self, tensor: torch.Tensor) -> bool:
        return self.buffer is not None and (
            self.buffer.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr()
        )

    def take(self, like: torch.Tensor) -> torch.Tensor | None:
        """The kept buffer shaped as ``like``, if nobody else references it any more; else None."""
        counts, buffer = baselines(), self.buffer
        if (
            counts is None
            or buffer is None
            or not like.is_contiguous()
            or buffer.numel() != like.numel()
            or buffer.dtype != like.dtype
            or buffer.device != like.device
            or storage_refs(buffer) != counts[0]
        ):
            return None
        return buffer.view_as(like)

    def keep(self, grad: torch.Tensor | None, weight: torch.Tensor) -> None:
        """Remember ``grad``'s storage when it is about to become ``weight.grad`` (a leaf without
        a gradient yet); a gradient added into an existing one is not kept, so accumulating
        gradients never holds a second weight-sized buffer."""
        fresh = grad is not None and weight.is_leaf and weight.grad is None
        if not fresh or grad is None or not grad.is_contiguous():
            self.buffer = None
            return
        # a new tensor on the same storage, not a view: a view would keep its base alive, and
        # that base's reference would make the storage look shared forever
        alias = torch.empty(0, dtype=grad.dtype, device=grad.device)
        self.buffer = alias.set_(grad.untyped_storage(), grad.storage_offset(), (grad.numel(),))

    def release(self) -> None:
        self.buffer = None

    def __getstate__(self) -> dict:
        return {"buffer": None}  # a deep copy starts empty instead of duplicating the buffer
