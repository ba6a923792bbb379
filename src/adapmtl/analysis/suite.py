"""Comparison suites (paper Tables 1-3, 5 and Figure 4): the suite file, the plan of its runs
and the status of each run directory. A *suite* is a base config, a list of runs that override it
(method and anything else), seeds and optional target sparsities. :func:`plan` lists every run in
training order, the dense run of each seed first (its final metrics are the Delta_T reference of
that seed's other runs); :func:`run_status` says which have finished. Training them is
:func:`adapmtl.engine.suite_runner.run_suite`; tables and plots are :mod:`adapmtl.analysis.compare`.

Suite file (YAML)::

    name: scenes-cpu-90
    config: {...}              # the base run config (keys of a run config), or
    base: ../scenes/cpu.yaml   # a run config file (relative to the suite), merged under ``config``
    seeds: [0, 1, 2]
    targets: [0.9]             # optional: every pruning run at each target (Figure 4 sweeps)
    runs:
      - name: dense            # exactly one run with method dense: the Delta_T reference
        method: {name: dense, target: null}
        config: {weighting: {name: equal}}
      - name: lth
        label: LTH
        method: {name: lth, options: {dense_checkpoint: "{dense}/last.pt"}}

``{dense}`` in a string value is replaced by the same seed's dense run directory. A run's
``method`` and ``config`` are merged into the base config key by key, except that a section whose
``name`` the run changes (e.g. ``weighting: {name: equal}``) does not inherit the base's options
for that section (``options``, ``train_options``, ``val_options``): they belong to the old name.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapmtl.config import (
    Config,
    apply_overrides,
    from_dict,
    merge,
    read_with_base,
    with_defaults,
    without_length,
)
from adapmtl.errors import UserError
from adapmtl.methods import build_method
from adapmtl.rundir import final_results
from adapmtl.structured import read_if_valid, read_structured

DENSE = "dense"
SUITE_KEYS = ("name", "description", "base", "config", "seeds", "targets", "runs")
RUN_KEYS = ("name", "label", "method", "config")


@dataclass
class SuiteRun:
    """One entry of ``runs``: ``method`` and ``config`` override the suite's base config."""

    name: str
    label: str
    method: dict[str, Any]
    config: dict[str, Any]


@dataclass
class Suite:
    name: str
    path: Path
    base: dict[str, Any]
    seeds: list[int]
    runs: list[SuiteRun]
    targets: list[float] | None = None
    description: str = ""
    overrides: list[str] = field(default_factory=list)
    """The ``--set`` overrides applied to ``base`` (the description predates them)."""
    imports: list[str] = field(default_factory=list)
    """User-code modules every run imports besides its own ``imports:`` (``compare --import``),
    recorded in each run's config so later commands on the run import them too."""

    @property
    def dense(self) -> SuiteRun:
        return next(run for run in self.runs if run.method.get("name") == DENSE)


@dataclass
class PlannedRun:
    """One training run of the suite: a run entry at one seed (and target)."""

    run: SuiteRun
    seed: int
    target: float | None
    run_id: str
    label: str
    run_dir: Path
    config: Config

    @property
    def is_dense(self) -> bool:
        return self.run.method.get("name") == DENSE


def _fail(path: Path, message: str) -> UserError:
    return UserError(f"suite {path}: {message}")


def load_suite(
    path: str | Path, overrides: list[str] | None = None, imports: list[str] | None = None
) -> Suite:
    """Read and check a suite file; ``overrides`` (``dotted.key=value``) apply to the base config
    of every run, and every run records the user-code modules ``imports`` in its ``imports``.
    Every run's config is validated here, before anything trains."""
    path = Path(path)
    data = read_structured(path, "suite file", mapping=False)
    if not isinstance(data, dict):
        raise _fail(path, "expected a mapping with 'runs', 'seeds' and 'config' or 'base'")
    unknown = sorted(set(data) - set(SUITE_KEYS))
    if unknown:
        raise _fail(path, f"unknown key {unknown[0]!r}; valid: {', '.join(SUITE_KEYS)}")
    base: dict[str, Any] = {}
    if data.get("base") is not None:
        if not isinstance(data["base"], str):
            raise _fail(path, f"'base' must be a config file name, got {data['base']!r}")
        base = read_with_base(path.parent / data["base"])
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise _fail(path, f"'config' must be a mapping, got {config!r}")
    base = apply_overrides(merge(base, config), overrides or [])
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(_is_int(s) for s in seeds):
        raise _fail(path, f"'seeds' must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise _fail(path, f"'seeds' has duplicates: {seeds}")
    targets = data.get("targets")
    if targets is not None and (
        not isinstance(targets, list)
        or not targets
        or not all(isinstance(t, (int, float)) and 0 < t < 1 for t in targets)
    ):
        raise _fail(path, f"'targets' must be a list of sparsities in (0, 1), got {targets!r}")
    runs = [_parse_run(path, i, entry) for i, entry in enumerate(data.get("runs") or [])]
    if not runs:
        raise _fail(path, "'runs' must list at least one run")
    names = [run.name for run in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _fail(path, f"run name {duplicates[0]!r} is used twice")
    dense = [run.name for run in runs if run.method.get("name") == DENSE]
    if len(dense) != 1:
        raise _fail(
            path,
            f"exactly one run must use method 'dense' (the Delta_T reference); found {dense}",
        )
    suite = Suite(
        name=str(data.get("name") or path.stem),
        path=path,
        base=base,
        seeds=[int(s) for s in seeds],
        runs=runs,
        targets=None if targets is None else [float(t) for t in targets],
        description=str(data.get("description") or ""),
        overrides=list(overrides or []),
        imports=list(imports or []),
    )
    plan(suite, Path("suite-check"))  # validates every run's config now
    return suite


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_run(path: Path, index: int, entry: Any) -> SuiteRun:
    where = f"runs[{index}]"
    if not isinstance(entry, dict):
        raise _fail(path, f"{where}: expected a mapping with 'name' and 'method', got {entry!r}")
    unknown = sorted(set(entry) - set(RUN_KEYS))
    if unknown:
        raise _fail(path, f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(RUN_KEYS)}")
    name = entry.get("name")
    if not isinstance(name, str) or not name or "/" in name or "@" in name:
        raise _fail(path, f"{where}: 'name' must be a non-empty string without '/' or '@'")
    method = entry.get("method")
    if not isinstance(method, dict) or not isinstance(method.get("name"), str):
        raise _fail(path, f"{where} ({name}): 'method' must be a mapping with a 'name'")
    config = entry.get("config") or {}
    if not isinstance(config, dict):
        raise _fail(path, f"{where} ({name}): 'config' must be a mapping")
    return SuiteRun(name, str(entry.get("label") or name), dict(method), dict(config))


def _substitute(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, replacement in mapping.items():
            value = value.replace("{" + key + "}", replacement)
        return value
    if isinstance(value, dict):
        return {k: _substitute(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, mapping) for v in value]
    return value


OPTION_KEYS = ("options", "train_options", "val_options")


def merge_run(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge a run's overrides into the base config (see the module docstring); the inputs are
    not modified."""
    base, overrides = copy.deepcopy(base), copy.deepcopy(overrides)
    for section, value in overrides.items():
        current = base.get(section)
        if (
            isinstance(value, dict)
            and isinstance(current, dict)
            and "name" in value
            and value["name"] != current.get("name")
        ):
            base[section] = {k: v for k, v in current.items() if k not in OPTION_KEYS}
    return merge(base, overrides)


def percent(target: float) -> str:
    return f"{100 * target:.2f}".rstrip("0").rstrip(".")


def plan(suite: Suite, out: Path) -> list[PlannedRun]:
    """Every run of the suite, in training order: per seed, the dense run first."""
    planned = []
    out = Path(out)
    for seed in suite.seeds:
        seed_dir = out / f"seed{seed}"
        dense_dir = seed_dir / suite.dense.name
        ordered = [suite.dense] + [run for run in suite.runs if run is not suite.dense]
        for run in ordered:
            dense_method = run.method.get("name") == DENSE
            if dense_method or suite.targets is None or "target" in run.method:
                targets: list[float | None] = [None]
            else:
                targets = list(suite.targets)
            for target in targets:
                run_id = run.name
                label = run.label
                if target is not None and len(suite.targets or []) > 1:
                    run_id = f"{run.name}@{percent(target)}"
                    label = f"{run.label} @{percent(target)}%"
                settings = merge_run(suite.base, {**run.config, "method": run.method})
                if target is not None:
                    settings["method"]["target"] = target
                settings = merge(settings, {"train": {"seed": seed}})
                own = list(settings.get("imports") or [])
                settings["imports"] = own + [m for m in suite.imports if m not in own]
                settings = _substitute(settings, {"dense": str(dense_dir.resolve())})
                try:
                    config = from_dict(settings)
                except UserError as err:
                    raise _fail(suite.path, f"run {run.name!r}: {err}") from None
                _check_method_options(suite.path, run.name, config)
                planned.append(
                    PlannedRun(run, seed, target, run_id, label, seed_dir / run_id, config)
                )
    return planned


def _check_method_options(path: Path, name: str, config: Config) -> None:
    try:
        build_method(config.method.name, config.method.target, config.method.options)
    except UserError as err:
        raise _fail(path, f"run {name!r}: {err}") from None


def run_status(planned: PlannedRun) -> str:
    """``done`` (results.json of the last iteration, written with this config), ``partial`` (a
    checkpoint to resume, or a finished run to continue because ``train.iterations`` was raised)
    or ``todo``. A finished run made with another config is an error, never overwritten."""
    results = planned.run_dir / "results.json"
    last = planned.run_dir / "last.pt"
    if results.is_file():
        saved = planned.run_dir / "config.yaml"
        theirs = read_if_valid(saved) if saved.is_file() else None
        if isinstance(theirs, dict):
            theirs = with_defaults(theirs)
        ours = planned.config.to_dict()
        longer = (
            isinstance(theirs, dict)
            and without_length(theirs) == without_length(ours)
            and (theirs.get("train") or {}).get("iterations", 0) < ours["train"]["iterations"]
        )
        if longer and last.is_file():
            return "partial"
        if theirs != ours:
            sections = sorted(k for k in ours if (theirs or {}).get(k) != ours[k])
            raise UserError(
                f"{planned.run_dir} holds a finished run made with a different config "
                f"(sections {sections}); delete it or compare into another --out directory"
            )
        if final_results(planned.run_dir, planned.config.train.iterations) is not None:
            return "done"
    return "partial" if last.is_file() else "todo"
