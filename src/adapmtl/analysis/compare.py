"""Method comparisons on one training loop (paper Tables 1-3, 5 and Figure 4): a *suite* is a
base config, a list of runs that override it (method and anything else), seeds and optional
target sparsities. :func:`run_suite` trains every run with the trainer, the dense run of each seed
first (its final metrics are the Delta_T reference of that seed's other runs), skipping finished
runs and resuming interrupted ones; :func:`collect` and :func:`aggregate` turn the run directories
into per-seed rows and mean/spread rows; :func:`write_outputs` writes the tables and plots.

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
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adapmtl.atomic import write_text
from adapmtl.config import Config, _merge, _read_with_base, apply_overrides, from_dict
from adapmtl.engine.target import miss_text, on_target, result_target
from adapmtl.errors import UserError

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


def load_suite(path: str | Path, overrides: list[str] | None = None) -> Suite:
    """Read and check a suite file; ``overrides`` (``dotted.key=value``) apply to the base config
    of every run. Every run's config is validated here, before anything trains."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"suite file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"suite file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise _fail(path, "expected a mapping with 'runs', 'seeds' and 'config' or 'base'")
    unknown = sorted(set(data) - set(SUITE_KEYS))
    if unknown:
        raise _fail(path, f"unknown key {unknown[0]!r}; valid: {', '.join(SUITE_KEYS)}")
    base: dict[str, Any] = {}
    if data.get("base") is not None:
        if not isinstance(data["base"], str):
            raise _fail(path, f"'base' must be a config file name, got {data['base']!r}")
        base = _read_with_base(path.parent / data["base"])
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise _fail(path, f"'config' must be a mapping, got {config!r}")
    base = apply_overrides(_merge(base, config), overrides or [])
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
    return _merge(base, overrides)


def _percent(target: float) -> str:
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
                    run_id = f"{run.name}@{_percent(target)}"
                    label = f"{run.label} @{_percent(target)}%"
                settings = merge_run(suite.base, {**run.config, "method": run.method})
                if target is not None:
                    settings["method"]["target"] = target
                settings = _merge(settings, {"train": {"seed": seed}})
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
    from adapmtl.engine.build import build_run_method

    try:
        build_run_method(config)
    except UserError as err:
        raise _fail(path, f"run {name!r}: {err}") from None


# --------------------------------------------------------------------------- running
def run_status(planned: PlannedRun) -> str:
    """``done`` (results.json of the last iteration, written with this config), ``partial`` (a
    checkpoint to resume, or a finished run to continue because ``train.iterations`` was raised)
    or ``todo``. A finished run made with another config is an error, never overwritten."""
    from adapmtl.engine.trainer import config_without_length

    results = planned.run_dir / "results.json"
    last = planned.run_dir / "last.pt"
    if results.is_file():
        saved = planned.run_dir / "config.yaml"
        theirs = yaml.safe_load(saved.read_text()) if saved.is_file() else None
        ours = planned.config.to_dict()
        longer = (
            isinstance(theirs, dict)
            and config_without_length(theirs) == config_without_length(ours)
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
        if _final_results(results, planned.config.train.iterations):
            return "done"
    return "partial" if last.is_file() else "todo"


def _final_results(path: Path, iterations: int) -> bool:
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (
        isinstance(results, dict)
        and results.get("iteration") == iterations
        and "metrics" in results
    )


def run_suite(
    suite: Suite,
    out: Path,
    *,
    log: Callable[[str], None] = print,
    verbose: bool = False,
) -> list[PlannedRun]:
    """Train every run of the suite that has not finished; returns the plan."""
    from adapmtl.engine.evaluate import normalised_score
    from adapmtl.engine.trainer import Trainer

    planned = plan(suite, out)
    statuses = [run_status(p) for p in planned]  # refuse stale runs before training anything
    for index, (p, status) in enumerate(zip(planned, statuses, strict=True), start=1):
        where = f"[{index}/{len(planned)}] seed {p.seed} {p.run_id}"
        if status == "done":
            log(f"{where}: finished earlier, skipped")
            continue
        started = time.perf_counter()
        log(f"{where}: {'resuming' if status == 'partial' else 'training'} -> {p.run_dir}")
        trainer = Trainer(
            p.config,
            p.run_dir,
            resume=status == "partial",
            overwrite=status == "todo",
            verbose=verbose,
        )
        results = trainer.fit()
        minutes = (time.perf_counter() - started) / 60
        summary = f"{where}: done in {minutes:.1f} min"
        dense_results = p.run_dir.parent / suite.dense.name / "results.json"
        if not p.is_dense and "metrics" in results and dense_results.is_file():
            reference = json.loads(dense_results.read_text()).get("metrics", {})
            try:
                score = normalised_score(
                    results["metrics"], reference, trainer.tasks, p.config.eval.delta_reduce
                )
                summary += f", ΔT {score['overall']:+.2f}"
            except UserError as err:
                summary += f", ΔT undefined ({err})"
        if "sparsity" in results:
            summary += f", sparsity {100 * results['sparsity']['overall']['sparsity']:.2f}%"
        target, sparsity = result_target(results)
        if not on_target(target, sparsity):
            assert target is not None
            summary += f"; OFF TARGET: {miss_text(target, sparsity)}"
        log(summary)
    return planned


# ------------------------------------------------------------------------ collecting
@dataclass
class Row:
    """Results of one run (one seed), Delta_T against the same seed's dense run."""

    run_id: str
    label: str
    seed: int
    target: float | None
    method: str
    metrics: dict[str, dict[str, float]]
    delta_t: dict[str, Any]
    sparsity: dict[str, float] = field(default_factory=dict)
    """``overall`` and one entry per component (fractions); empty for the dense model."""

    @property
    def target_reached(self) -> bool | None:
        """Whether the run ended within half a point of its target (None without a target)."""
        if self.target is None:
            return None
        return on_target(self.target, self.sparsity.get("overall"))


def collect(suite: Suite, out: Path) -> tuple[list[Row], list[str]]:
    """Rows of every finished run, and the task names (in table order)."""
    from adapmtl.engine.build import build_tasks
    from adapmtl.engine.evaluate import normalised_score

    planned = plan(suite, out)
    tasks = build_tasks(planned[0].config)
    rows = []
    dense_metrics: dict[int, dict[str, dict[str, float]]] = {}
    for p in planned:
        if run_status(p) != "done":
            raise UserError(f"{p.run_dir} has not finished; run the suite first")
        results = json.loads((p.run_dir / "results.json").read_text())
        if "metrics" not in results:
            raise UserError(
                f"{p.run_dir / 'results.json'} holds no metrics (the run ended before its last "
                "validation); delete the run directory and run the suite again"
            )
        if p.is_dense:
            dense_metrics[p.seed] = results["metrics"]
        try:
            score = normalised_score(
                results["metrics"], dense_metrics[p.seed], tasks, p.config.eval.delta_reduce
            )
        except UserError as err:
            raise UserError(f"{p.run_dir} (seed {p.seed}, {p.run_id}): {err}") from None
        sparsity: dict[str, float] = {}
        if "sparsity" in results:
            sparsity["overall"] = results["sparsity"]["overall"]["sparsity"]
            for component, counts in results["sparsity"]["components"].items():
                sparsity[component] = counts["sparsity"]
        rows.append(
            Row(
                run_id=p.run_id,
                label=p.label,
                seed=p.seed,
                target=p.config.method.target if not p.is_dense else None,
                method=p.config.method.name,
                metrics=results["metrics"],
                delta_t=score,
                sparsity=sparsity,
            )
        )
    return rows, list(tasks)


@dataclass
class Stat:
    mean: float
    std: float | None
    """Sample standard deviation over seeds (None with one seed)."""
    values: list[float]


def _stat(values: list[float]) -> Stat:
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stat(statistics.fmean(values), std, list(values))


@dataclass
class Aggregate:
    """Mean and spread over the seeds of one run id."""

    run_id: str
    label: str
    method: str
    target: float | None
    seeds: list[int]
    metrics: dict[str, dict[str, Stat]]
    delta_t: dict[str, Stat]
    """per task, and ``overall``."""
    sparsity: dict[str, Stat]
    off_target_seeds: list[int] = field(default_factory=list)
    """Seeds whose run missed its target sparsity."""

    @property
    def off_target(self) -> str | None:
        """Which seeds missed the target and what they reached; None when none did."""
        if not self.off_target_seeds or self.target is None:
            return None
        overall = self.sparsity.get("overall")
        reached = dict(zip(self.seeds, overall.values, strict=True)) if overall else {}
        return "; ".join(
            f"seed {seed} {miss_text(self.target, reached.get(seed))}"
            for seed in self.off_target_seeds
        )

    def mean_results(self) -> dict[str, Any]:
        """A ``results.json``-shaped dict of the means (for :func:`results_table`)."""
        result: dict[str, Any] = {
            "metrics": {
                task: {m: s.mean for m, s in values.items()}
                for task, values in self.metrics.items()
            },
            "delta_t": {
                "per_task": {t: s.mean for t, s in self.delta_t.items() if t != "overall"},
                "overall": self.delta_t["overall"].mean,
            },
            "off_target": self.off_target,
        }
        if self.sparsity:
            result["sparsity"] = {
                "overall": {"sparsity": self.sparsity["overall"].mean},
                "components": {
                    c: {"sparsity": s.mean} for c, s in self.sparsity.items() if c != "overall"
                },
            }
        return result


def aggregate(rows: list[Row]) -> list[Aggregate]:
    """Group rows by run id (suite order) into mean/spread statistics."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.run_id, []).append(row)
    out = []
    for run_id, group in groups.items():
        first = group[0]
        metrics = {
            task: {m: _stat([r.metrics[task][m] for r in group]) for m in values}
            for task, values in first.metrics.items()
        }
        delta = {
            task: _stat([r.delta_t["per_task"][task] for r in group])
            for task in first.delta_t["per_task"]
        }
        delta["overall"] = _stat([r.delta_t["overall"] for r in group])
        sparsity = {key: _stat([r.sparsity[key] for r in group]) for key in first.sparsity}
        out.append(
            Aggregate(
                run_id=run_id,
                label=first.label,
                method=first.method,
                target=first.target,
                seeds=[r.seed for r in group],
                metrics=metrics,
                delta_t=delta,
                sparsity=sparsity,
                off_target_seeds=[r.seed for r in group if r.target_reached is False],
            )
        )
    return out


# -------------------------------------------------------------------------- outputs
def write_outputs(suite: Suite, out: Path, *, plots: bool = True) -> dict[str, Path]:
    """Write ``table.md``, ``table.csv`` (means and spreads), ``per_seed.csv``, ``summary.json``
    and the plots into ``out``; returns the paths by kind."""
    from adapmtl.analysis import tables

    rows, tasks = collect(suite, out)
    aggregates = aggregate(rows)
    out = Path(out)
    files = {
        "table.md": out / "table.md",
        "table.csv": out / "table.csv",
        "per_seed.csv": out / "per_seed.csv",
        "summary.json": out / "summary.json",
    }
    write_text(files["table.md"], suite_markdown(suite, rows, aggregates, tasks))
    write_text(files["table.csv"], tables.aggregate_csv(aggregates, tasks))
    write_text(files["per_seed.csv"], tables.per_seed_csv(rows, tasks))
    write_text(files["summary.json"], json.dumps(summary(suite, rows, aggregates), indent=2) + "\n")
    if plots:
        from adapmtl.analysis import plots as plotting

        plot_dir = out / "plots"
        plot_dir.mkdir(exist_ok=True)
        files["delta_t.png"] = plotting.plot_delta_t(aggregates, plot_dir / "delta_t.png")
        files["sparsity.png"] = plotting.plot_sparsity_allocation(
            aggregates, tasks, plot_dir / "sparsity.png"
        )
        if suite.targets is not None and len(suite.targets) > 1:
            files["delta_t_vs_sparsity.png"] = plotting.plot_delta_t_vs_sparsity(
                aggregates, plot_dir / "delta_t_vs_sparsity.png"
            )
    return files


def suite_markdown(
    suite: Suite, rows: list[Row], aggregates: list[Aggregate], tasks: list[str]
) -> str:
    from adapmtl.analysis import tables

    lines = [f"# {suite.name}", ""]
    if suite.description:
        lines += [suite.description.strip(), ""]
    lines += [settings_text(suite), ""]
    lines += ["## Mean over seeds (paper Table 1 layout)", ""]
    lines.append(tables.results_table([(a.label, a.mean_results()) for a in aggregates], tasks))
    lines += ["", "## ΔT and sparsity: mean ± sample std over seeds, and every seed", ""]
    lines.append(tables.spread_table(aggregates, tasks))
    lines += ["", "## Per seed", ""]
    per_seed = [
        (
            f"{r.label} (seed {r.seed})",
            {
                "metrics": r.metrics,
                "delta_t": r.delta_t,
                "target": r.target,
                "final_sparsity": r.sparsity.get("overall"),
                **_sp(r),
            },
        )
        for r in rows
    ]
    lines.append(tables.results_table(per_seed, tasks))
    return "\n".join(lines) + "\n"


def settings_text(suite: Suite) -> str:
    """The settings the runs actually use, after ``--set`` (a suite's description is its file's
    prose and does not follow the overrides)."""
    planned = plan(suite, Path("."))
    config = planned[0].config
    iterations = sorted({p.config.train.iterations for p in planned})
    targets = sorted(
        {t for p in planned if not p.is_dense and (t := p.config.method.target) is not None}
    )
    text = "Settings in effect"
    if suite.overrides:
        text += f" (with --set {', '.join(suite.overrides)}; they override the description)"
    text += (
        f": model `{config.model.name}` {config.model.options or ''}, data `{config.data.name}`, "
        f"{' / '.join(str(n) for n in iterations)} iterations, batch {config.data.batch_size}"
    )
    if targets:
        text += f", target sparsity {' / '.join(f'{_percent(t)} %' for t in targets)}"
    return text + (
        f", seeds {suite.seeds}. ΔT ({config.eval.delta_reduce} form) of each run against the "
        "dense run of the same seed; sparsity in %."
    )


def _sp(row: Row) -> dict[str, Any]:
    if not row.sparsity:
        return {}
    return {
        "sparsity": {
            "overall": {"sparsity": row.sparsity["overall"]},
            "components": {c: {"sparsity": v} for c, v in row.sparsity.items() if c != "overall"},
        }
    }


def summary(suite: Suite, rows: list[Row], aggregates: list[Aggregate]) -> dict[str, Any]:
    """Everything in machine-readable form (benchmarks read this)."""

    def stat(s: Stat) -> dict[str, Any]:
        return {"mean": s.mean, "std": s.std, "values": s.values}

    return {
        "suite": suite.name,
        "seeds": suite.seeds,
        "runs": [
            {
                "run_id": a.run_id,
                "label": a.label,
                "method": a.method,
                "target": a.target,
                "seeds": a.seeds,
                "off_target_seeds": a.off_target_seeds,
                "delta_t": {k: stat(v) for k, v in a.delta_t.items()},
                "sparsity": {k: stat(v) for k, v in a.sparsity.items()},
                "metrics": {
                    t: {m: stat(s) for m, s in values.items()} for t, values in a.metrics.items()
                },
            }
            for a in aggregates
        ],
        "per_seed": [
            {
                "run_id": r.run_id,
                "seed": r.seed,
                "target": r.target,
                "target_reached": r.target_reached,
                "delta_t": r.delta_t,
                "sparsity": r.sparsity,
                "metrics": r.metrics,
            }
            for r in rows
        ],
    }
