"""Run configuration: dataclasses loaded strictly from YAML, with ``--set dotted.key=value``.

Unknown or misspelled keys, wrong types and out-of-range values are errors
(:class:`~adapmtl.errors.UserError`) that name the key and say what was expected.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from adapmtl.config_presets import preset_path
from adapmtl.errors import UserError
from adapmtl.options import MAPPINGS, ConfigError, build_dataclass, check_options, coerce
from adapmtl.registry import closest
from adapmtl.structured import read_structured, yaml_problem
from adapmtl.usercode import import_modules

__all__ = [
    "Config",
    "ConfigError",
    "apply_overrides",
    "build_dataclass",
    "check_options",
    "from_dict",
    "load_config",
    "merge",
    "read_with_base",
    "read_yaml",
    "with_defaults",
    "without_length",
]


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
    """DataLoader worker processes per training process (0: load in the training process)."""
    prefetch_factor: int | None = None
    """Batches each worker loads ahead (``null``: PyTorch's default, 2); needs workers."""
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
    name: str = "adaptive"
    """Registered weighting (``adapmtl.weighting.WEIGHTINGS``): ``adaptive`` or ``equal``."""
    options: dict[str, Any] = field(default_factory=dict)
    """Options of the weighting (adaptive: mode, window, warmup, lam, deviation,
    use_param_ratio)."""


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
    fused: bool = True
    """Adam's fused kernel (one vectorized pass per tensor, on the CPU and CUDA) instead of the
    loop of tensor operations PyTorch uses by default on the CPU: the same update up to rounding,
    and a faster step (the CPU presets: about 15 %). ``false``: PyTorch's default."""


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
    autocast: Literal["bf16", "fp16"] | None = None
    """Mixed precision for the training forward pass (``null``: float32). ``fp16`` scales the
    loss (a GradScaler); thresholds, losses and the optimizer stay in float32."""
    cudnn_benchmark: bool = False
    """Let cuDNN time its convolution algorithms for the run's shapes (CUDA; not with
    ``deterministic``)."""
    keep_freed_memory: bool = True
    """Keep the memory each step frees in the process for the next step instead of returning it
    to the system (glibc; :mod:`adapmtl.engine.allocator`): fewer page faults per step, the
    process stays at its peak size. No effect with another C library."""
    masks_in_weights: bool = True
    """Once a method's masks are final (AdapMTL after its freeze; SNIP, LTH, IMP, DiSparse at
    their last mask), keep the pruned weights at zero in the stored weights and mask only the
    gradients, instead of computing ``W * M`` in every forward: the same training, value for
    value, without a pass over every weight and a weight-sized buffer per layer
    (:func:`~adapmtl.sparsity.masks.keep_masks_in_weights`)."""
    batched_thresholds: bool = True
    """Apply the thresholds of all layers in one autograd node per training forward instead of
    one call per layer (:mod:`adapmtl.sparsity.batched`; CPU weights of 32 MB or more keep their
    own): the same values (the thresholds' gradients up to the order of their sums), a faster
    step on models with many small layers. ``false``: one call per layer, as earlier versions."""


@dataclass
class EvalConfig:
    reference: str | None = None
    """JSON file with the dense model's metrics: enables Delta_T and best-by-Delta_T."""
    delta_reduce: Literal["sum", "mean"] = "sum"
    """``sum`` reproduces the paper's tables; ``mean`` is Eq. 7 as printed."""
    max_batches: int | None = None


@dataclass
class Config:
    imports: list[str] = field(default_factory=list)
    """Modules of the user's own code to import first: they register models, datasets, task
    sets, methods or weightings (:mod:`adapmtl.usercode`)."""
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
        (
            "data.prefetch_factor",
            config.data.prefetch_factor is None
            or (config.data.prefetch_factor > 0 and config.data.num_workers > 0),
            "data.prefetch_factor: expected null, or > 0 with data.num_workers > 0, got "
            f"{config.data.prefetch_factor!r} (num_workers {config.data.num_workers})",
        ),
    ]
    checks.append(
        (
            "train.cudnn_benchmark",
            not (config.train.cudnn_benchmark and config.train.deterministic),
            "train.cudnn_benchmark: true picks convolution algorithms by timing, which differs "
            "between runs; it cannot be combined with train.deterministic: true",
        )
    )
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
    from adapmtl.weighting import WEIGHTINGS

    try:
        cls: Any = WEIGHTINGS.get(config.weighting.name)
    except KeyError as err:
        raise ConfigError("weighting.name", f"weighting.name: {err.args[0]}") from None
    options = dict(config.weighting.options)
    cls.check_options(options)
    try:
        cls(tasks, **{k: v for k, v in options.items() if k not in cls.CONFIG_ONLY})
    except ValueError as err:
        raise _option_error("weighting.options", err, list(options)) from None


def from_dict(data: dict[str, Any]) -> Config:
    """The config of ``data``, strictly: its ``imports`` imported, then everything checked."""
    config = build_dataclass(Config, data, "")
    try:
        import_modules(config.imports)
    except UserError as err:
        raise ConfigError("imports", str(err)) from err
    return validate(config)


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
                coerce(value, tp, dotted)
            except ConfigError as err:
                raise UserError(f"--set {text}: {err}") from None
        elif typing.get_origin(tp) not in MAPPINGS:
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
    """A config file's mapping (an empty file is ``{}``)."""
    return read_structured(path, "config file")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults) and apply ``dotted.key=value`` overrides, strictly.

    ``path`` is a file or the name of a packaged preset (``adapmtl.config_presets``). A config may
    name a base config with ``base: other.yaml`` (relative to itself); its keys are merged under
    the file's own."""
    overrides = overrides or []
    data = read_with_base(preset_path(path)) if path is not None else {}
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


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base`` key by key (nested mappings recursively); inputs unchanged."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_with_base(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file with its ``base:`` chain merged under it (each base relative to the file
    naming it)."""
    if path.resolve() in seen:
        raise UserError(f"config file {path}: 'base' chain loops back to itself")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise UserError(f"config file {path}: 'base' must be a file name, got {base!r}")
    return merge(read_with_base(path.parent / base, (*seen, path.resolve())), data)


def with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config mapping with every setting added since it was written filled with its
    default, so that a run made before an upgrade compares equal to the same config today (new
    settings default to the earlier behaviour). A mapping that no longer parses is returned
    unchanged, and then differs."""
    try:
        return from_dict(copy.deepcopy(config)).to_dict()
    except UserError:
        return config


def without_length(config: dict[str, Any]) -> dict[str, Any]:
    """A config mapping without ``train.iterations``, the one setting a resumed run may change."""
    train = {k: v for k, v in (config.get("train") or {}).items() if k != "iterations"}
    return {**config, "train": train}
