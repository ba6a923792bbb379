"""Building a model by name and loading weights into it, for ``export`` and ``bench``.

Weights come from a safetensors file (an ``adapmtl export`` file of either format, or any plain
state dict) or a PyTorch file read with ``torch.load(weights_only=True)`` holding a state dict,
or a dict with the state dict under ``model``. State dicts of sparsified models (parametrization
keys, thresholds, masks) are loaded into a sparsified copy and baked. The result is always a plain
model with exact zeros, in eval mode. ``read_state_dict`` is the one place to teach another
checkpoint format.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from adapmtl.errors import UserError
from adapmtl.sparsity import bake, sparsify, thresholds
from adapmtl.sparsity.export import check_state_dict, load_exported
from adapmtl.sparsity.sparsify import GROUPINGS, THRESHOLDS_ATTR

DEFAULT_TASKS = {"seg": 40, "normal": 3, "depth": 1}
_PARAMETRIZED = ".parametrizations.weight."


def parse_tasks(spec: str) -> dict[str, int]:
    """``"seg:40,normal:3,depth:1"`` -> ``{"seg": 40, "normal": 3, "depth": 1}``."""
    tasks: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, channels = item.partition(":")
        if not sep or not channels.strip().isdigit() or int(channels) < 1:
            raise UserError(f"--tasks entry {item!r}: expected NAME:CHANNELS, e.g. seg:40")
        tasks[name.strip()] = int(channels)
    if not tasks:
        raise UserError(f"--tasks {spec!r}: expected NAME:CHANNELS[,NAME:CHANNELS...]")
    return tasks


def parse_size(spec: str) -> tuple[int, int]:
    """``"321x321"`` or ``"321"`` -> ``(321, 321)``."""
    parts = spec.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"input size {spec!r}: expected HxW, e.g. 321x321")
    height = int(parts[0])
    return height, int(parts[-1])


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a weights file (see module docstring); ``UserError`` for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        return load_exported(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for foreign or corrupt files
        raise UserError(f"{path}: cannot read as safetensors or PyTorch weights ({err})") from None
    if isinstance(loaded, Mapping) and isinstance(loaded.get("model"), Mapping):
        loaded = loaded["model"]
    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise UserError(f"{path}: expected a state dict (name -> tensor) or {{'model': <that>}}")
    return dict(loaded)


def _sparsified_like(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    groups = {k.split(".", 1)[1] for k in state if k.startswith(THRESHOLDS_ATTR + ".")}
    if not groups:
        return sparsify(model, mode="mask")
    for grouping in GROUPINGS:
        candidate = sparsify(copy.deepcopy(model), grouping=grouping)
        if set(thresholds(candidate)) == groups:
            return candidate
    raise UserError(f"{source}: threshold groups {sorted(groups)} match no grouping {GROUPINGS}")


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> nn.Module:
    """Load ``state`` (plain or sparsified keys) into the plain ``model``; return a plain model."""
    if any(_PARAMETRIZED in key for key in state):
        model = _sparsified_like(model, state, source)
        check_state_dict(model, state, source=source)
        model.load_state_dict(state)
        return bake(model)
    check_state_dict(model, state, source=source)
    model.load_state_dict(state)
    return model


def load_model(
    name: str, weights: str | os.PathLike | None = None, tasks: Mapping[str, int] | None = None
) -> nn.Module:
    """Build model ``name`` (``adapmtl.models``) for ``tasks`` and load ``weights`` if given."""
    from adapmtl.models import build_model

    model = build_model(name, tasks=dict(tasks or DEFAULT_TASKS))
    if weights is not None:
        model = load_weights(model, read_state_dict(weights), source=str(weights))
    return model.eval()
