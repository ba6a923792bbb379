"""Keep numba's thread count equal to PyTorch's, so ``torch.set_num_threads`` governs both.

numba's OpenMP threading layer sets the OpenMP thread count when it launches a parallel kernel,
and PyTorch reads its own count from the same OpenMP runtime, so a kernel launch would silently
change ``torch.get_num_threads()``; :func:`restore` puts it back.
"""

from __future__ import annotations

import torch


def sync() -> int:
    """Set numba's thread count to ``torch.get_num_threads()`` (capped at numba's maximum) and
    return PyTorch's count, to be passed to :func:`restore` after the kernel."""
    import numba

    wanted = torch.get_num_threads()
    capped = max(1, min(wanted, numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != capped:
        numba.set_num_threads(capped)
    return wanted


def restore(wanted: int) -> None:
    """Undo a change of PyTorch's thread count made by a numba kernel launch."""
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


def numba_available() -> bool:
    """True when numba imports (the optional ``inference`` extra)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def numba_max() -> int:
    """The most threads numba can use in this process."""
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)
