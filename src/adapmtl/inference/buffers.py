"""Output buffers of the sparse kernels, reused once no tensor refers to them any more.

glibc serves an allocation above its largest mmap threshold (32 MiB on 64-bit Linux) with a
fresh ``mmap`` and returns it with ``munmap`` when freed, so a layer output of that size (a
batch of 8 of DeepLab's 1024-channel feature maps is 64 MiB) costs a page fault and the zeroing
of a page for every 4 KiB the kernel writes, on every call: at batch 8 this took more time than
the difference between batch 1 and batch 8 per sample. Below that size glibc keeps freed memory
for reuse itself.

:func:`empty` hands out such large buffers as tensors viewing a pooled numpy array; when the last
tensor sharing the memory is freed, the array returns to the pool (kept while the pool holds
less than :data:`MAX_FREE_BYTES`), ready for the next output of the same size.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np
import torch

MIN_POOLED_BYTES = 16 * 2**20
"""Smaller outputs come from torch's allocator (half glibc's largest mmap threshold: glibc
reuses freed memory of these sizes)."""
MAX_FREE_BYTES = 2**30
"""Most memory the pool keeps in buffers that no tensor uses; beyond it freed buffers are
released."""

_FREE: dict[int, list[np.ndarray]] = {}
_LOCK = threading.RLock()  # re-entrant: a release can run inside empty() when a tensor dies
_STATE = {"free_bytes": 0}


def _release(raw: np.ndarray) -> None:
    with _LOCK:
        if _STATE["free_bytes"] + raw.nbytes <= MAX_FREE_BYTES:
            _FREE.setdefault(raw.size, []).append(raw)
            _STATE["free_bytes"] += raw.nbytes


def empty(numel: int) -> torch.Tensor:
    """An uninitialised float32 tensor of ``numel`` elements (not resizable when pooled)."""
    if 4 * numel < MIN_POOLED_BYTES:
        return torch.empty(numel)
    with _LOCK:
        free = _FREE.get(numel)
        raw = free.pop() if free else None
        if raw is not None:
            _STATE["free_bytes"] -= raw.nbytes
    if raw is None:
        raw = np.empty(numel, np.float32)
    handed = raw[:]  # torch keeps this view alive exactly as long as the tensor's memory
    weakref.finalize(handed, _release, raw)
    return torch.from_numpy(handed)


def free_bytes() -> int:
    """Bytes held by the pool in buffers that no tensor uses."""
    return _STATE["free_bytes"]
