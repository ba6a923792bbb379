"""Checkpoints: written atomically, read only with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain containers (no pickled objects), so loading it never
runs code. Writing goes to a temporary file in the same directory, is flushed to disk, and is then
renamed over the target: a crash leaves either the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import pickle
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from adapmtl.atomic import TMP_SUFFIX, atomic_write
from adapmtl.errors import UserError

REQUIRED_KEYS = ("config", "model", "iteration")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically. A failed write (full disk, I/O error) removes its
    temporary file, leaves any previous ``path`` intact and raises a :class:`UserError`."""
    atomic_write(path, lambda handle: torch.save(state, handle), "checkpoint")


def load_weights(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Load ``state_dict`` into ``model``; None on success, else what does not fit (the model is
    then only partly loaded and should be discarded)."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        return describe_mismatch(model.state_dict(), state_dict) or str(err).splitlines()[0]
    return None


def describe_mismatch(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
) -> str | None:
    """What keeps ``given`` from loading into a model whose state dict is ``expected``: missing
    and unexpected keys, other shapes (empty buffers, e.g. masks not set yet, take any shape)."""
    problems = []
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = [
        k
        for k in expected
        if k in given and expected[k].numel() and expected[k].shape != given[k].shape
    ]
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
    if shapes:
        key = shapes[0]
        problems.append(
            f"{len(shapes)} of another shape (e.g. {key!r}: {list(given[key].shape)} in the "
            f"checkpoint, {list(expected[key].shape)} in the model)"
        )
    return "; ".join(problems) or None


def remove_partial_writes(directory: str | Path) -> list[Path]:
    """Delete temporary files left by checkpoint writes that were killed; returns them."""
    leftovers = sorted(Path(directory).glob(f".*.pt.*{TMP_SUFFIX}"))
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return leftovers


def estimated_size(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes a checkpoint holding these tensors needs (plus 1 MiB for the rest)."""
    return sum(t.numel() * t.element_size() for t in tensors) + 2**20


def check_free_space(directory: str | Path, needed: int) -> None:
    """A clear error before training when ``directory``'s file system has less than ``needed``
    bytes free (checked where it can be; a disk that fills later fails the write cleanly)."""
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise UserError(
            f"not enough free space in {directory}: {free / 2**20:.1f} MiB free, checkpoints need "
            f"about {needed / 2**20:.1f} MiB; free some space or choose another --out"
        )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; every failure is a :class:`UserError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL \S+", str(err)) or re.search(
            r"WeightsUnpickler error: [^.\n]+", str(err)
        )
        raise UserError(
            f"checkpoint {path} holds objects other than tensors and plain containers"
            f"{f' ({found[0]})' if found else ''}; refusing to unpickle it (weights_only=True): "
            "loading it could run arbitrary code"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else repr(err)
        raise UserError(f"checkpoint {path} is unreadable or truncated: {first}") from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise UserError(f"checkpoint {path} is not an adapmtl checkpoint (no {missing[0]!r} entry)")
    return state
