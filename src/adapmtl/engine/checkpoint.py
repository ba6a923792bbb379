"""Checkpoints: written atomically, read only with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain containers (no pickled objects), so loading it never
runs code. Writing goes to a temporary file in the same directory, is flushed to disk, and is then
renamed over the target: a crash leaves either the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from adapmtl.errors import UserError


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; every failure is a :class:`UserError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UserError(
            f"checkpoint {path} holds objects other than tensors and plain containers; refusing "
            f"to unpickle it (weights_only=True): {str(err).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise UserError(f"checkpoint {path} is unreadable or truncated: {err}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"checkpoint {path} is not an adapmtl checkpoint (no 'model' entry)")
    return state
