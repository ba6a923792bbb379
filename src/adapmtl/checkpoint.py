"""Checkpoint and weights files: the one place that writes and reads them and loads their
tensors into a model (the trainer, the methods' dense checkpoints, export, inference).

A checkpoint is a dict of tensors and plain containers (no pickled objects), read only with
``torch.load(weights_only=True)`` (:func:`read_torch_file`), so loading it never runs code.
Writing goes to a temporary file in the same directory, is flushed to disk, and is then renamed
over the target: a crash leaves either the old file or the new one, never a truncated one.
Every refusal is a :class:`~adapmtl.errors.UserError` naming the file.
"""

from __future__ import annotations

import copy
import pickle
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adapmtl.atomic import TMP_SUFFIX, atomic_write
from adapmtl.errors import MissingFileError, UserError
from adapmtl.sparsity import GROUPINGS, THRESHOLDS_ATTR, bake, sparsify, thresholds
from adapmtl.sparsity.export import check_state_dict

REQUIRED_KEYS = ("config", "model", "iteration")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically. A failed write (full disk, I/O error) removes its
    temporary file, leaves any previous ``path`` intact and raises a :class:`UserError`."""
    atomic_write(path, lambda handle: torch.save(state, handle), "checkpoint")


def load_model_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str | None:
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


def read_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    """The content of a PyTorch file, loaded on the CPU with ``weights_only=True``; ``what``
    names the file in errors (missing: :class:`~adapmtl.errors.MissingFileError`)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL \S+", str(err)) or re.search(
            r"WeightsUnpickler error: [^.\n]+", str(err)
        )
        raise UserError(
            f"{what} {path} holds objects other than tensors and plain containers"
            f"{f' ({found[0]})' if found else ''}; refusing to unpickle it (weights_only=True): "
            "loading it could run arbitrary code"
        ) from None
    except Exception as err:  # torch raises several types for foreign or corrupt files
        first = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else repr(err)
        raise UserError(
            f"{what} {path} is unreadable or truncated: cannot read it as PyTorch weights ({first})"
        ) from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A trainer checkpoint (``config``, ``model``, ``iteration``, ...), read safely."""
    state = read_torch_file(path)
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise UserError(f"checkpoint {path} is not an adapmtl checkpoint (no {missing[0]!r} entry)")
    return state


def read_dense_checkpoint(path: str | Path, option: str) -> dict[str, Any]:
    """A dense run's checkpoint (``last.pt``/``best.pt``) for the option ``option`` names (the
    weights LTH and IMP start from): refused when it holds a sparsified model."""
    try:
        state = read_torch_file(path)
    except UserError as err:
        raise UserError(f"{option}: {err}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"{option}: {path} is not an adapmtl checkpoint (no 'model' entry)")
    if any(".parametrizations." in k or k.startswith(THRESHOLDS_ATTR) for k in state["model"]):
        method = state.get("config", {}).get("method", {}).get("name", "?")
        raise UserError(
            f"{option}: {path} holds a sparsified model (method {method!r}); give the "
            "checkpoint of a dense run"
        )
    return state


_PARAMETRIZED = ".parametrizations.weight."


def _sparsified_like(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    groups = {k.split(".", 1)[1] for k in state if k.startswith(THRESHOLDS_ATTR + ".")}
    if not groups:
        return sparsify(model, mode="mask")
    for grouping in GROUPINGS:
        candidate = sparsify(copy.deepcopy(model), grouping=grouping)
        if set(thresholds(candidate)) == groups:
            return candidate
    raise UserError(f"{source}: threshold groups {sorted(groups)} match no grouping {GROUPINGS}")


def load_baked(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> nn.Module:
    """Load ``state`` (plain keys, or a sparsified model's: parametrizations, thresholds, masks)
    into the plain ``model``; returns a plain model with exact zeros (baked)."""
    if any(_PARAMETRIZED in key for key in state):
        model = _sparsified_like(model, state, source)
        check_state_dict(model, state, source=source)
        model.load_state_dict(state)
        return bake(model)
    check_state_dict(model, state, source=source)
    model.load_state_dict(state)
    return model
