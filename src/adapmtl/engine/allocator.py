"""Keeping the memory a training step frees inside the process (glibc's allocator).

PyTorch's CPU tensors come from ``malloc``. With its default settings glibc hands freed memory back
to the system when more than ``M_TRIM_THRESHOLD`` bytes are free at the top of its heap, and
serves blocks above ``M_MMAP_THRESHOLD`` with their own ``mmap``, unmapped again on ``free``
(both thresholds adapt to the program's allocations). Memory handed back is faulted in again,
page by page and zeroed by the kernel, the next time it is used. A training step frees and
re-allocates the same buffers every step, so whether they come back as faults depends on the
order of frees: a sparsified model makes more weight-sized buffers per step than the dense one
(the effective weights), and on ``mobilenetv2_cpu`` that tipped the heap into thousands of page
faults per step, where the dense model had none (docs/results/overhead.md).

:func:`keep_freed_memory` fixes both thresholds, which also stops their adaptation: freed heap
memory is kept for reuse, and blocks of at least :data:`MMAP_THRESHOLD` (large enough for the
weight-sized buffers, which :mod:`adapmtl.sparsity.recycle` reuses themselves) still get their own
mapping. The process then keeps its peak heap size for its lifetime, which is what a training
run needs again every step anyway. Other C libraries are left alone.

A larger mmap threshold (``MALLOC_MMAP_THRESHOLD_=1073741824`` in the environment, which this
module then leaves as it is) also serves the weight-sized buffers of large models from the heap:
on the full MobileNetV2 that removed the dense step's own page faults as well, at the price of a
larger peak for the sparsified model (docs/results/overhead.md).
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 1 << 30
"""Free bytes at the top of the heap before glibc returns them to the system."""
MMAP_THRESHOLD = 32 << 20
"""Blocks at least this large get their own mapping (the largest value glibc's adaptive
threshold reaches on 64-bit systems)."""


_SETTINGS = (
    (_M_TRIM_THRESHOLD, TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold"),
    (_M_MMAP_THRESHOLD, MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold"),
)


def keep_freed_memory() -> bool:
    """Fix glibc's trim and mmap thresholds for this process (see the module docstring). A
    threshold the user set in the environment (``MALLOC_TRIM_THRESHOLD_``,
    ``MALLOC_MMAP_THRESHOLD_`` or ``GLIBC_TUNABLES``) is left as they set it.

    Returns True when glibc accepted the settings, False on another C library or platform, where
    nothing is changed."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    accepted = True
    for option, value, variable, tunable in _SETTINGS:
        if variable not in os.environ and tunable not in tunables:
            accepted = bool(mallopt(option, value)) and accepted
    return accepted
