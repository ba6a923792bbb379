"""Getting a model from any of our files: a trainer checkpoint, an ``adapmtl export`` file or a
plain state dict (``eval``, ``report``, ``sensitivity``, ``export``, ``bench``, ``--init-from``).

Weights come from a safetensors file (an ``adapmtl export`` file of either format, or any plain
state dict) or a PyTorch file read with ``torch.load(weights_only=True)`` holding a state dict,
or a dict with the state dict under ``model``. State dicts of sparsified models (parametrization
keys, thresholds, masks) are loaded into a sparsified copy and baked. The result is always a plain
model with exact zeros, in eval mode. ``read_weights_file`` is the one place to teach another
checkpoint format; :func:`model_from_checkpoint` rebuilds a checkpoint's model as it trained
(sparsified), :func:`load_trained` reads either kind for ``eval`` and ``report``.

A file says which model it holds where it can: a trainer checkpoint through its run config, an
``adapmtl export`` file through its metadata (:data:`MODEL_KEY`, :data:`TASKS_KEY`,
:data:`OPTIONS_KEY`, and :data:`CONFIG_KEY` when exported from a checkpoint). Only a bare state
dict needs the model named.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adapmtl.build import build_run_method, build_run_model, build_run_tasks
from adapmtl.checkpoint import load_baked, load_checkpoint, load_model_state, read_torch_file
from adapmtl.config import Config, from_dict
from adapmtl.errors import MissingFileError, UserError
from adapmtl.models import build_model
from adapmtl.sparsity.export import load_exported, read_metadata

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


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a weights file (see module docstring); ``UserError`` for anything else."""
    return read_weights_file(path)[0]


def read_weights_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], ModelSpec]:
    """Tensors of a weights file and what it records about its model (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        return load_exported(path), _spec_from_metadata(read_metadata(path), path)
    loaded = read_torch_file(path, "weights file")
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
    try:
        config = from_dict(data)
    except UserError as err:
        raise UserError(f"{source}: the run config it records is invalid: {err}") from None
    tasks = {name: task.channels for name, task in build_run_tasks(config).items()}
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


def load_model(
    name: str,
    weights: str | os.PathLike | None = None,
    tasks: Mapping[str, int] | None = None,
    options: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build model ``name`` (``adapmtl.models``) for ``tasks`` and load ``weights`` if given."""
    model = build_model(name, tasks=dict(tasks or DEFAULT_TASKS), **dict(options or {}))
    if weights is not None:
        model = load_baked(model, read_state_dict(weights), source=str(weights))
    return model.eval()


def model_for_file(
    weights: str | os.PathLike,
    name: str | None = None,
    tasks: Mapping[str, int] | None = None,
) -> tuple[nn.Module, ModelSpec]:
    """The model a weights file holds, built as the file records it (:class:`ModelSpec`) and
    loaded; ``name`` and ``tasks`` override what the file says. Returns the model (plain, eval
    mode) and the spec it was built from."""
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
        model = load_baked(model, state, source=str(weights))
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


def model_from_checkpoint(
    state: dict[str, Any], source: str | Path = "checkpoint"
) -> tuple[nn.Module, Config, dict[str, Any]]:
    """The model of a trainer checkpoint as it trained: rebuilt from the config it holds
    (sparsified by its method, thresholds and masks included) and loaded. Returns (model,
    config, tasks); ``source`` (the file) names it in error messages."""
    if not isinstance(state.get("config"), dict):
        raise UserError(f"{source}: the checkpoint holds no run config")
    try:
        config = from_dict(state["config"])
    except UserError as err:
        raise UserError(
            f"{source}: the config stored in the checkpoint is invalid: {err}"
        ) from None
    tasks = build_run_tasks(config)
    model = build_run_model(config, tasks)
    method = build_run_method(config)
    method.prepare(model)
    mismatch = load_model_state(model, state["model"])
    if mismatch is not None:
        raise UserError(
            f"{source}: its weights do not fit the model its config describes "
            f"({config.model.name!r}, tasks {', '.join(tasks)}): {mismatch}"
        )
    return model, config, tasks


@dataclass
class Trained:
    """A trained model read for ``eval`` / ``report``: from a checkpoint or an export."""

    model: nn.Module
    path: Path
    config: Config | None
    """The run config (``None`` for an export of a bare state dict)."""
    tasks: dict[str, Any] | None
    iteration: int | None
    exported: bool


def load_trained(path: str | os.PathLike) -> Trained:
    """The model of a trainer checkpoint (as it trained: :func:`model_from_checkpoint`) or of an
    ``adapmtl export`` file (plain: :func:`model_for_file`), with the run config and tasks the
    file records."""
    path = Path(path)
    if path.suffix == ".safetensors":
        model, spec = model_for_file(path)
        config = from_dict(spec.config) if spec.config is not None else None
        tasks = build_run_tasks(config) if config is not None else None
        return Trained(model, path, config, tasks, spec.iteration, exported=True)
    state = load_checkpoint(path)
    model, config, tasks = model_from_checkpoint(state, path)
    return Trained(model, path, config, tasks, state["iteration"], exported=False)
