"""The results of a comparison suite (:mod:`adapmtl.analysis.suite`): :func:`collect` and
:func:`aggregate` turn the finished run directories into per-seed rows (Delta_T against the same
seed's dense run) and mean/spread rows; :func:`write_outputs` writes the tables, CSVs,
``summary.json`` and plots.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapmtl.analysis.suite import Suite, percent, plan, run_status
from adapmtl.atomic import write_text
from adapmtl.build import build_run_tasks
from adapmtl.errors import UserError
from adapmtl.sparsity.target import miss_text, on_target
from adapmtl.structured import read_structured
from adapmtl.tasks.score import normalised_score


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
    planned = plan(suite, out)
    tasks = build_run_tasks(planned[0].config)
    rows = []
    dense_metrics: dict[int, dict[str, dict[str, float]]] = {}
    for p in planned:
        if run_status(p) != "done":
            raise UserError(f"{p.run_dir} has not finished; run the suite first")
        results = read_structured(p.run_dir / "results.json", "results file")
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
        text += f", target sparsity {' / '.join(f'{percent(t)} %' for t in targets)}"
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
