"""Keep numba's thread count equal to PyTorch's, so ``torch.set_num_threads`` governs both."""

from __future__ import annotations

import torch


def sync() -> int:
    """Set numba's thread count to ``torch.get_num_threads()`` (capped at numba's maximum) and
    return it."""
    import numba

    wanted = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != wanted:
        numba.set_num_threads(wanted)
    return wanted


def numba_available() -> bool:
    """True when numba imports (the optional ``inference`` extra)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True
