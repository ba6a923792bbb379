"""Run configuration: dataclasses loaded strictly from YAML, with ``--set dotted.key=value``.

Unknown or misspelled keys, wrong types and out-of-range values are errors
(:class:`~adapmtl.errors.UserError`) that name the key and say what was expected.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from adapmtl.errors import UserError
from adapmtl.registry import closest


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


def _coerce(value: Any, tp: Any, key: str) -> Any:
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
            except UserError as err:
                errors.append(str(err))
        raise UserError(
            errors[0] if len(errors) == 1 else f"{key}: expected {_type_name(tp)}, got {value!r}"
        )
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise UserError(f"{key}: expected one of {list(allowed)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {key}")


def build_dataclass(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise UserError(f"unknown config key {dotted!r}{closest(str(key), names)}")
        kwargs[key] = _coerce(value, hints[key], dotted)
    return cls(**kwargs)


def validate(config: Config) -> Config:
    """Range checks that types cannot express."""
    checks = [
        (
            config.method.target is None or 0.0 < config.method.target < 1.0,
            f"method.target: expected a sparsity in (0, 1), got {config.method.target!r}",
        ),
        (
            config.method.name == "dense" or config.method.target is not None,
            f"method.target: method {config.method.name!r} needs a target sparsity",
        ),
        (config.optim.lr > 0, f"optim.lr: expected > 0, got {config.optim.lr!r}"),
        (
            config.optim.threshold_lr is None or config.optim.threshold_lr > 0,
            f"optim.threshold_lr: expected > 0, got {config.optim.threshold_lr!r}",
        ),
        (
            config.optim.weight_decay >= 0,
            f"optim.weight_decay: expected >= 0, got {config.optim.weight_decay!r}",
        ),
        (config.optim.lr_step > 0, f"optim.lr_step: expected > 0, got {config.optim.lr_step!r}"),
        (
            0 < config.optim.lr_gamma <= 1,
            f"optim.lr_gamma: expected in (0, 1], got {config.optim.lr_gamma!r}",
        ),
        (
            len(config.optim.betas) == 2 and all(0 <= b < 1 for b in config.optim.betas),
            f"optim.betas: expected two values in [0, 1), got {config.optim.betas!r}",
        ),
        (
            config.train.iterations > 0,
            f"train.iterations: expected > 0, got {config.train.iterations!r}",
        ),
        (
            config.train.val_every > 0,
            f"train.val_every: expected > 0, got {config.train.val_every!r}",
        ),
        (
            config.train.log_every > 0,
            f"train.log_every: expected > 0, got {config.train.log_every!r}",
        ),
        (
            config.train.checkpoint_every > 0,
            f"train.checkpoint_every: expected > 0, got {config.train.checkpoint_every!r}",
        ),
        (
            config.data.batch_size > 0,
            f"data.batch_size: expected > 0, got {config.data.batch_size!r}",
        ),
        (
            config.data.eval_batch_size > 0,
            f"data.eval_batch_size: expected > 0, got {config.data.eval_batch_size!r}",
        ),
        (
            config.data.num_workers >= 0,
            f"data.num_workers: expected >= 0, got {config.data.num_workers!r}",
        ),
    ]
    window = config.weighting.options.get("window")
    if window is not None:
        checks.append(
            (
                isinstance(window, int) and not isinstance(window, bool) and window >= 2,
                f"weighting.options.window: expected an integer >= 2, got {window!r}",
            )
        )
    device = config.train.device
    checks.append(
        (
            device in ("auto", "cpu", "cuda") or device.startswith("cuda:"),
            f"train.device: expected auto, cpu, cuda or cuda:N, got {device!r}",
        )
    )
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    return config


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


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
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

    A config may name a base config with ``base: other.yaml`` (relative to itself); its keys are
    merged under the file's own."""
    data = _read_with_base(Path(path)) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    try:
        return from_dict(data)
    except UserError as err:
        where = f"{path}: " if path is not None else ""
        raise UserError(f"{where}{err}") from None


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
