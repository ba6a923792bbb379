"""Run configuration: dataclasses loaded strictly from YAML, with ``--set dotted.key=value``.

Unknown or misspelled keys, wrong types and out-of-range values are errors
(:class:`~adapmtl.errors.UserError`) that name the key and say what was expected.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from adapmtl.config_presets import resolve_config
from adapmtl.errors import UserError
from adapmtl.registry import closest


class ConfigError(UserError):
    """A config error about one dotted key, so that the caller can say where that key was set
    (the file or a ``--set``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass
class ModelConfig:
    name: str = "deeplab_resnet34_cpu"
    """Registered model name (``adapmtl.models.MODELS``)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the model factory (e.g. ``width``, ``head_channels``)."""


@dataclass
class TasksConfig:
    preset: str = "scenes"
    """Task set: ``scenes``, ``nyuv2`` or ``taskonomy``."""
    names: list[str] | None = None
    """Subset of the preset's tasks, in order; ``null`` = all."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the task set (e.g. ``seg_classes: 13``)."""


@dataclass
class DataConfig:
    name: str = "scenes"
    """Registered dataset: ``scenes``, ``nyuv2_adashare``, ``nyuv2_mtan``, ``taskonomy``."""
    root: str | None = None
    """Dataset root on disk (real datasets); unused by ``scenes``."""
    train_split: str = "train"
    val_split: str = "val"
    batch_size: int = 16
    eval_batch_size: int = 16
    num_workers: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for both splits (e.g. scenes ``size: [64, 64]``)."""
    train_options: dict[str, Any] = field(default_factory=dict)
    val_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodConfig:
    name: str = "adapmtl"
    """``dense``, ``adapmtl``, or a baseline registered in ``adapmtl.methods``."""
    target: float | None = 0.9
    """Target overall sparsity in (0, 1); ``null`` for ``dense``."""
    options: dict[str, Any] = field(default_factory=dict)
    """Method-specific options (validated by the method)."""


@dataclass
class WeightingConfig:
    name: Literal["adaptive", "equal"] = "adaptive"
    options: dict[str, Any] = field(default_factory=dict)
    """Options of ``AdaptiveWeighting`` (mode, window, warmup, lam, deviation, use_param_ratio)."""


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    lr_step: int = 4000
    """Step decay period in iterations (paper NYUv2: 4000)."""
    lr_gamma: float = 0.5
    threshold_lr: float | None = None
    """Learning rate of the thresholds (``null`` = ``lr``)."""
    threshold_weight_decay: float = 1e-4
    """L2 decay on the thresholds: the sparsity driver of the references."""


@dataclass
class TrainConfig:
    iterations: int = 20000
    val_every: int = 1000
    log_every: int = 50
    checkpoint_every: int = 1000
    seed: int = 0
    device: str = "auto"
    """``auto``, ``cpu`` or ``cuda[:i]``."""
    deterministic: bool = False
    threads: int | None = None
    """torch intra-op threads (``null`` = torch's default)."""
    on_nonfinite: Literal["stop", "skip"] = "stop"
    """What a NaN/Inf loss does: stop the run, or skip the step and count it."""


@dataclass
class EvalConfig:
    reference: str | None = None
    """JSON file with the dense model's metrics: enables Delta_T and best-by-Delta_T."""
    delta_reduce: Literal["sum", "mean"] = "sum"
    """``sum`` reproduces the paper's tables; ``mean`` is Eq. 7 as printed."""
    max_batches: int | None = None


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


_SEQUENCES = (list, tuple, collections.abc.Sequence)
_MAPPINGS = (dict, collections.abc.Mapping)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the type hint ``tp`` (lists for tuples and sequences; strings for
    paths). Raises :class:`ConfigError` naming ``key``, or ``TypeError`` for a hint this does
    not understand."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(
            key,
            errors[0] if len(errors) == 1 else f"{key}: expected {_type_name(tp)}, got {value!r}",
        )
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(key, f"{key}: expected one of {list(allowed)}, got {value!r}")
        return value
    if origin in _SEQUENCES:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"{key}: expected a list, got {value!r}")
        items = typing.get_args(tp)
        if origin is tuple and items and items[-1] is not Ellipsis:
            if len(value) != len(items):
                raise ConfigError(key, f"{key}: expected {len(items)} values, got {value!r}")
        else:
            items = items[:1] * len(value) if items else (Any,) * len(value)
        return [
            _coerce(v, item, f"{key}[{i}]")
            for i, (v, item) in enumerate(zip(value, items, strict=True))
        ]
    if origin in _MAPPINGS or tp in _MAPPINGS:
        if not isinstance(value, dict):
            raise ConfigError(key, f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp in (str, Path, os.PathLike):
        if not isinstance(value, str):
            raise ConfigError(key, f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {key}")


def build_dataclass(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(prefix, f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(dotted, f"unknown config key {dotted!r}{closest(str(key), names)}")
        kwargs[key] = _coerce(value, hints[key], dotted)
    return cls(**kwargs)


def check_options(
    factory: Callable[..., Any],
    options: dict[str, Any],
    prefix: str,
    skip: tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
) -> None:
    """Check ``options`` (the config mapping at ``prefix``) against the keyword parameters of
    ``factory``: each name must be a parameter (a typo gets a "did you mean"), each value must fit
    the parameter's type hint. ``skip`` are parameters the config does not set; ``extra`` are
    further accepted options with their types."""
    target = factory.func if isinstance(factory, functools.partial) else factory
    if inspect.isclass(target):
        target = target.__init__
    parameters = inspect.signature(factory).parameters
    accepted = [
        name
        for name, p in parameters.items()
        if name not in skip and name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    try:
        hints = {**typing.get_type_hints(target), **(extra or {})}
    except (NameError, TypeError):  # hints naming types only imported for type checking
        hints = dict(extra or {})
    accepted += [name for name in extra or {} if name not in accepted]
    for name, value in options.items():
        dotted = f"{prefix}.{name}"
        if name not in accepted:
            raise ConfigError(
                dotted,
                f"unknown option {dotted!r}{closest(str(name), accepted)}; "
                f"valid: {', '.join(accepted) or 'none'}",
            )
        try:
            _coerce(value, hints.get(name, Any), dotted)
        except TypeError:
            continue  # a hint that is not a config type (e.g. a callable): the factory checks


def validate(config: Config) -> Config:
    """Range checks that types cannot express, then every component's options
    (:func:`check_components`)."""
    checks = [
        (
            "method.target",
            config.method.target is None or 0.0 < config.method.target < 1.0,
            f"method.target: expected a sparsity in (0, 1), got {config.method.target!r}",
        ),
        (
            "method.target",
            config.method.name == "dense" or config.method.target is not None,
            f"method.target: method {config.method.name!r} needs a target sparsity",
        ),
        ("optim.lr", config.optim.lr > 0, f"optim.lr: expected > 0, got {config.optim.lr!r}"),
        (
            "optim.threshold_lr",
            config.optim.threshold_lr is None or config.optim.threshold_lr > 0,
            f"optim.threshold_lr: expected > 0, got {config.optim.threshold_lr!r}",
        ),
        (
            "optim.weight_decay",
            config.optim.weight_decay >= 0,
            f"optim.weight_decay: expected >= 0, got {config.optim.weight_decay!r}",
        ),
        (
            "optim.lr_step",
            config.optim.lr_step > 0,
            f"optim.lr_step: expected > 0, got {config.optim.lr_step!r}",
        ),
        (
            "optim.lr_gamma",
            0 < config.optim.lr_gamma <= 1,
            f"optim.lr_gamma: expected in (0, 1], got {config.optim.lr_gamma!r}",
        ),
        (
            "optim.betas",
            len(config.optim.betas) == 2 and all(0 <= b < 1 for b in config.optim.betas),
            f"optim.betas: expected two values in [0, 1), got {config.optim.betas!r}",
        ),
        (
            "train.iterations",
            config.train.iterations > 0,
            f"train.iterations: expected > 0, got {config.train.iterations!r}",
        ),
        (
            "train.val_every",
            config.train.val_every > 0,
            f"train.val_every: expected > 0, got {config.train.val_every!r}",
        ),
        (
            "train.log_every",
            config.train.log_every > 0,
            f"train.log_every: expected > 0, got {config.train.log_every!r}",
        ),
        (
            "train.checkpoint_every",
            config.train.checkpoint_every > 0,
            f"train.checkpoint_every: expected > 0, got {config.train.checkpoint_every!r}",
        ),
        (
            "data.batch_size",
            config.data.batch_size > 0,
            f"data.batch_size: expected > 0, got {config.data.batch_size!r}",
        ),
        (
            "data.eval_batch_size",
            config.data.eval_batch_size > 0,
            f"data.eval_batch_size: expected > 0, got {config.data.eval_batch_size!r}",
        ),
        (
            "data.num_workers",
            config.data.num_workers >= 0,
            f"data.num_workers: expected >= 0, got {config.data.num_workers!r}",
        ),
    ]
    device = config.train.device
    checks.append(
        (
            "train.device",
            device in ("auto", "cpu", "cuda") or device.startswith("cuda:"),
            f"train.device: expected auto, cpu, cuda or cuda:N, got {device!r}",
        )
    )
    for key, ok, message in checks:
        if not ok:
            raise ConfigError(key, message)
    check_components(config)
    return config


def check_components(config: Config) -> None:
    """Every component's name and options against the callee they are passed to (the task set,
    model factory, dataset, method and weighting): unknown names with a "did you mean", wrong
    types, and the callee's own range checks, all as :class:`ConfigError`. Nothing is built
    except the task set, the method and the weighting objects, which are cheap."""
    tasks = _check_tasks(config)
    _check_model(config)
    _check_data(config)
    _check_method(config)
    _check_weighting(config, list(tasks))


def _option_error(prefix: str, err: Exception, names: list[str]) -> ConfigError:
    """A callee's ``ValueError`` about one of its options, named as that option's config key."""
    text = str(err).removeprefix("options.")
    first = text.split(" ", 1)[0]
    if first not in names:
        return ConfigError(prefix, f"{prefix}: {text}")
    key = f"{prefix}.{first}"
    text = text.removeprefix(f"{first} ").removeprefix("must be ")
    return ConfigError(key, f"{key}: expected {text}")


def _check_tasks(config: Config) -> dict[str, Any]:
    from adapmtl.tasks.presets import TASK_SETS

    try:
        factory = TASK_SETS.get(config.tasks.preset)
    except KeyError as err:
        raise ConfigError("tasks.preset", f"tasks.preset: {err.args[0]}") from None
    check_options(factory, config.tasks.options, "tasks.options")
    try:
        tasks = factory(**config.tasks.options)
    except (TypeError, ValueError) as err:
        raise _option_error("tasks.options", err, list(config.tasks.options)) from None
    names = config.tasks.names
    if names is None:
        return tasks
    unknown = [name for name in names if name not in tasks]
    if unknown:
        raise ConfigError(
            "tasks.names",
            f"tasks.names: unknown task {unknown[0]!r}{closest(unknown[0], list(tasks))} for "
            f"preset {config.tasks.preset!r}; valid: {', '.join(tasks)}",
        )
    if not names:
        raise ConfigError("tasks.names", "tasks.names: expected at least one task, or null")
    return {name: tasks[name] for name in names}


def _check_model(config: Config) -> None:
    from adapmtl.models import MODELS

    try:
        factory = MODELS.get(config.model.name)
    except KeyError as err:
        raise ConfigError("model.name", f"model.name: {err.args[0]}") from None
    check_options(factory, config.model.options, "model.options", skip=("tasks",))


def _check_data(config: Config) -> None:
    from adapmtl.data.registry import DATASETS, dataset_class

    try:
        DATASETS.get(config.data.name)
    except KeyError as err:
        raise ConfigError("data.name", f"data.name: {err.args[0]}") from None
    cls = dataset_class(config.data.name)
    for field_name in ("options", "train_options", "val_options"):
        options = getattr(config.data, field_name)
        check_options(cls, options, f"data.{field_name}", skip=("split", "tasks"))


def _check_method(config: Config) -> None:
    from adapmtl.methods import METHODS

    name = config.method.name
    try:
        cls = METHODS.get(name)
    except KeyError as err:
        raise ConfigError("method.name", f"method.name: {err.args[0]}") from None
    options = build_dataclass(cls.Options, config.method.options, "method.options")
    try:
        cls(config.method.target, options)
    except ValueError as err:
        names = [f.name for f in dataclasses.fields(cls.Options)]
        raise _option_error("method.options", err, names) from None


def _check_weighting(config: Config, tasks: list[str]) -> None:
    from adapmtl.weighting import AdaptiveWeighting

    options = dict(config.weighting.options)
    if config.weighting.name == "equal":
        if options:
            raise ConfigError(
                "weighting.options",
                f"weighting.options: equal weighting takes no options, got {sorted(options)}",
            )
        return
    check_options(
        AdaptiveWeighting,
        options,
        "weighting.options",
        skip=("tasks", "param_ratio"),
        extra={"use_param_ratio": bool},
    )
    options.pop("use_param_ratio", None)
    try:
        AdaptiveWeighting(tasks, **options)
    except ValueError as err:
        raise _option_error("weighting.options", err, list(options)) from None


def from_dict(data: dict[str, Any]) -> Config:
    return validate(build_dataclass(Config, data, ""))


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error on one line: what went wrong and where (PyYAML's own text spans lines)."""
    mark = getattr(err, "problem_mark", None)
    parts = [getattr(err, "context", None), getattr(err, "problem", None)]
    text = ", ".join(part for part in parts if part) or " ".join(str(err).split())
    return f"{text} (line {mark.line + 1}, column {mark.column + 1})" if mark else text


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], YAML-parsed value)."""
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected dotted.key=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise UserError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise UserError(f"--set {text!r}: value is not valid YAML ({yaml_problem(err)})") from err
    return key.strip().split("."), value


def check_override(text: str) -> tuple[list[str], Any]:
    """Parse one ``--set`` and check its key against the config's sections and fields (and its
    value against the field's type), so that a typo is reported as that ``--set``."""
    path, value = parse_override(text)
    cls: Any = Config
    for depth, part in enumerate(path):
        dotted = ".".join(path[: depth + 1])
        names = [f.name for f in dataclasses.fields(cls)]
        if part not in names:
            raise UserError(f"--set {text}: unknown config key {dotted!r}{closest(part, names)}")
        tp = typing.get_type_hints(cls)[part]
        rest = path[depth + 1 :]
        if rest and dataclasses.is_dataclass(tp):
            cls = tp
            continue
        if not rest:
            try:
                _coerce(value, tp, dotted)
            except ConfigError as err:
                raise UserError(f"--set {text}: {err}") from None
        elif typing.get_origin(tp) not in _MAPPINGS:
            raise UserError(f"--set {text}: {dotted!r} is not a mapping")
        break
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Merge ``dotted.key=value`` overrides into the config mapping ``data``; each is checked
    first (:func:`check_override`)."""
    for text in overrides:
        path, value = check_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"--set {text!r}: {part!r} is not a mapping")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"config file {path} is not valid YAML: {yaml_problem(err)}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path}: expected a mapping at the top level")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults) and apply ``dotted.key=value`` overrides, strictly.

    ``path`` is a file or the name of a packaged preset (``adapmtl.config_presets``). A config may
    name a base config with ``base: other.yaml`` (relative to itself); its keys are merged under
    the file's own."""
    overrides = overrides or []
    data = _read_with_base(resolve_config(path)) if path is not None else {}
    data = apply_overrides(data, overrides)
    try:
        return from_dict(data)
    except ConfigError as err:
        raise UserError(f"{_source(err.key, overrides, path)}{err}") from None
    except UserError as err:
        where = f"{path}: " if path is not None else ""
        raise UserError(f"{where}{err}") from None


def _source(key: str, overrides: list[str], path: str | Path | None) -> str:
    """Where ``key`` was set: the last ``--set`` on or under it, else the file."""
    parts = [part.split("[", 1)[0] for part in key.split(".")]
    for text in reversed(overrides):
        set_parts = text.split("=", 1)[0].strip().split(".")
        common = min(len(parts), len(set_parts))
        if parts[:common] == set_parts[:common]:
            return f"--set {text}: "
    return f"{path}: " if path is not None else ""


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_with_base(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path.resolve() in seen:
        raise UserError(f"config file {path}: 'base' chain loops back to itself")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise UserError(f"config file {path}: 'base' must be a file name, got {base!r}")
    return _merge(_read_with_base(path.parent / base, (*seen, path.resolve())), data)
