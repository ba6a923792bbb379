"""Building a model by name and loading weights into it, for ``export``, ``bench`` and ``report``.

Weights come from a safetensors file (an ``adapmtl export`` file of either format, or any plain
state dict) or a PyTorch file read with ``torch.load(weights_only=True)`` holding a state dict,
or a dict with the state dict under ``model``. State dicts of sparsified models (parametrization
keys, thresholds, masks) are loaded into a sparsified copy and baked. The result is always a plain
model with exact zeros, in eval mode. ``read_weights_file`` is the one place to teach another
checkpoint format.

A file says which model it holds where it can: a trainer checkpoint through its run config, an
``adapmtl export`` file through its metadata (:data:`MODEL_KEY`, :data:`TASKS_KEY`,
:data:`OPTIONS_KEY`, and :data:`CONFIG_KEY` when exported from a checkpoint). Only a bare state
dict needs the model named.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adapmtl.errors import UserError
from adapmtl.sparsity import bake, sparsify, thresholds
from adapmtl.sparsity.export import check_state_dict, load_exported, read_metadata
from adapmtl.sparsity.sparsify import GROUPINGS, THRESHOLDS_ATTR

DEFAULT_TASKS = {"seg": 40, "normal": 3, "depth": 1}
MODEL_KEY = "adapmtl.model"
TASKS_KEY = "adapmtl.tasks"
OPTIONS_KEY = "adapmtl.model_options"
CONFIG_KEY = "adapmtl.config"
ITERATION_KEY = "adapmtl.iteration"


@dataclass
class ModelSpec:
    """What a weights file records about its model (``None`` where it records nothing)."""

    name: str | None = None
    tasks: dict[str, int] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    """The run config, for a trainer checkpoint or a file exported from one."""
    iteration: int | None = None

    def metadata(self) -> dict[str, str]:
        """The export metadata that records this spec."""
        info = {MODEL_KEY: self.name or "", TASKS_KEY: format_tasks(self.tasks or {})}
        info[OPTIONS_KEY] = json.dumps(self.options)
        if self.config is not None:
            info[CONFIG_KEY] = json.dumps(self.config)
        if self.iteration is not None:
            info[ITERATION_KEY] = str(self.iteration)
        return info


def format_tasks(tasks: Mapping[str, int]) -> str:
    """``{"seg": 40, "normal": 3}`` -> ``"seg:40,normal:3"`` (the ``--tasks`` syntax)."""
    return ",".join(f"{name}:{channels}" for name, channels in tasks.items())


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
    return read_weights_file(path)[0]


def read_weights_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], ModelSpec]:
    """Tensors of a weights file and what it records about its model (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        return load_exported(path), _spec_from_metadata(read_metadata(path), path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for foreign or corrupt files
        raise UserError(f"{path}: cannot read as safetensors or PyTorch weights ({err})") from None
    spec = ModelSpec()
    if isinstance(loaded, Mapping) and isinstance(loaded.get("config"), Mapping):
        spec = spec_from_config(dict(loaded["config"]), loaded.get("iteration"), path)
    if isinstance(loaded, Mapping) and isinstance(loaded.get("model"), Mapping):
        loaded = loaded["model"]
    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise UserError(f"{path}: expected a state dict (name -> tensor) or {{'model': <that>}}")
    return dict(loaded), spec


def spec_from_config(
    data: dict[str, Any], iteration: Any = None, source: str | os.PathLike = "checkpoint"
) -> ModelSpec:
    """The model a run config describes: its name, options and task channels."""
    from adapmtl.config import from_dict
    from adapmtl.engine.build import build_tasks

    try:
        config = from_dict(data)
    except UserError as err:
        raise UserError(f"{source}: the run config it records is invalid: {err}") from None
    tasks = {name: task.channels for name, task in build_tasks(config).items()}
    step = iteration if isinstance(iteration, int) else None
    return ModelSpec(config.model.name, tasks, dict(config.model.options), config.to_dict(), step)


def _spec_from_metadata(metadata: Mapping[str, str], path: Path) -> ModelSpec:
    if CONFIG_KEY in metadata:
        try:
            config = json.loads(metadata[CONFIG_KEY])
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: metadata {CONFIG_KEY!r} is not JSON ({err})") from None
        return spec_from_config(config, _int(metadata.get(ITERATION_KEY)), path)
    spec = ModelSpec(name=metadata.get(MODEL_KEY) or None)
    if metadata.get(TASKS_KEY):
        spec.tasks = parse_tasks(metadata[TASKS_KEY])
    if metadata.get(OPTIONS_KEY):
        try:
            spec.options = dict(json.loads(metadata[OPTIONS_KEY]))
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise UserError(f"{path}: metadata {OPTIONS_KEY!r} is not a JSON mapping") from err
    return spec


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


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
    name: str,
    weights: str | os.PathLike | None = None,
    tasks: Mapping[str, int] | None = None,
    options: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build model ``name`` (``adapmtl.models``) for ``tasks`` and load ``weights`` if given."""
    from adapmtl.models import build_model

    model = build_model(name, tasks=dict(tasks or DEFAULT_TASKS), **dict(options or {}))
    if weights is not None:
        model = load_weights(model, read_state_dict(weights), source=str(weights))
    return model.eval()


def model_for_file(
    weights: str | os.PathLike,
    name: str | None = None,
    tasks: Mapping[str, int] | None = None,
) -> tuple[nn.Module, ModelSpec]:
    """The model a weights file holds, built as the file records it (:class:`ModelSpec`) and
    loaded; ``name`` and ``tasks`` override what the file says. Returns the model (plain, eval
    mode) and the spec it was built from."""
    from adapmtl.models import build_model

    state, recorded = read_weights_file(weights)
    spec = ModelSpec(
        name=name or recorded.name,
        tasks=dict(tasks or recorded.tasks or DEFAULT_TASKS),
        options=recorded.options if name in (None, recorded.name) else {},
        config=recorded.config,
        iteration=recorded.iteration,
    )
    if spec.name is None:
        raise UserError(f"{weights} does not record its model (a bare state dict): give --model")
    model = build_model(spec.name, tasks=spec.tasks, **spec.options)
    try:
        model = load_weights(model, state, source=str(weights))
    except UserError as err:
        if tasks:
            told = "as --tasks says"
        elif recorded.tasks:
            told = "as the file records"
        else:
            told = "the default"
        raise UserError(
            f"{err} (model {spec.name!r} built for tasks {format_tasks(spec.tasks)}, {told}; "
            "give --model and --tasks NAME:CHANNELS,... to match the file)"
        ) from None
    return model.eval(), spec
