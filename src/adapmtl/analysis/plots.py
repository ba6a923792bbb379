"""Training curves from a run's ``log.jsonl``: component sparsity over training (like the paper's
Figure 3) and task weights over training (like the supplement's Figure 2); method comparisons:
Delta_T per method, sparsity allocation per component (supplement Figure 3) and Delta_T against
sparsity (paper Figure 4). Needs matplotlib (``pip install adapmtl[plots]``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adapmtl.analysis.tables import OFF_TARGET, flagged, off_target_note
from adapmtl.atomic import atomic_write
from adapmtl.errors import UserError
from adapmtl.sparsity.target import result_target
from adapmtl.structured import read_structured


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise UserError("plots need matplotlib: pip install 'adapmtl[plots]'") from err
    return plt


def read_log(run_dir: Path, kind: str = "train") -> list[dict]:
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("kind") == kind]


def plot_series(
    run_dir: Path,
    prefix: str,
    ylabel: str,
    out: Path,
    scale: float = 1.0,
    target: tuple[float, str | None] | None = None,
) -> Path:
    """Plot every logged scalar ``prefix/<name>`` against the iteration into ``out`` (PNG);
    ``target`` (value, off-target note) adds a dashed line and, when off target, a title."""
    plt = _pyplot()
    records = read_log(run_dir)
    names = sorted({k.split("/", 1)[1] for r in records for k in r if k.startswith(prefix + "/")})
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    for name in names:
        points = [
            (r["iteration"], r[f"{prefix}/{name}"]) for r in records if f"{prefix}/{name}" in r
        ]
        ax.plot([p[0] for p in points], [scale * p[1] for p in points], label=name)
    if target is not None:
        value, note = target
        ax.axhline(scale * value, color="black", linestyle="--", linewidth=0.8, label="target")
        if note is not None:
            ax.set_title(f"{OFF_TARGET} off target: {note}", fontsize=8, color="tab:red")
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, plt, out)


def plot_run(run_dir: Path) -> list[Path]:
    """Sparsity and task-weight curves of one run, written next to its log. The sparsity plot
    marks the target, and says so in its title when the run ended off it."""
    run_dir = Path(run_dir)
    outputs = [plot_series(run_dir, "weight", "task weight β", run_dir / "task_weights.png")]
    if any("sparsity/overall" in r for r in read_log(run_dir)):
        outputs.append(
            plot_series(
                run_dir,
                "sparsity",
                "sparsity (%)",
                run_dir / "sparsity.png",
                100.0,
                target=_run_target(run_dir),
            )
        )
    return outputs


def _run_target(run_dir: Path) -> tuple[float, str | None] | None:
    """(target, why it is off target or None) from the run's results.json, if it has one."""
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    results = read_structured(path, "results file")
    target, _ = result_target(results)
    return None if target is None else (target, off_target_note(results))


def _save(fig: Any, plt: Any, out: Path) -> Path:
    fig.tight_layout()
    atomic_write(out, lambda handle: fig.savefig(handle, format=Path(out).suffix[1:] or "png"))
    plt.close(fig)
    return out


def _labels(aggregates: list[Any]) -> list[str]:
    """Method labels, flagged when a seed of the run missed its target sparsity."""
    return [flagged(a.label, a.off_target) for a in aggregates]


def _off_target_title(ax: Any, aggregates: list[Any]) -> None:
    if any(a.off_target for a in aggregates):
        ax.set_title(f"{OFF_TARGET} = off its target sparsity", fontsize=8, color="tab:red")


def plot_delta_t(aggregates: list[Any], out: Path) -> Path:
    """Bar per method: mean overall Delta_T over seeds, error bar = sample std, dots = seeds.
    ``aggregates`` are :class:`adapmtl.analysis.compare.Aggregate`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(aggregates) + 1.5), 3.6), dpi=110)
    for i, agg in enumerate(aggregates):
        stat = agg.delta_t["overall"]
        hatch = "xx" if agg.off_target else None
        color = "tab:blue" if stat.mean >= 0 else "tab:red"
        ax.bar(i, stat.mean, color=color, alpha=0.7, hatch=hatch)
        if stat.std is not None:
            ax.errorbar(i, stat.mean, yerr=stat.std, color="black", capsize=4)
        ax.scatter([i] * len(stat.values), stat.values, color="black", s=10, zorder=3)
    ax.axhline(0.0, color="gray", linewidth=0.8)
    ax.set_xticks(range(len(aggregates)))
    ax.set_xticklabels(_labels(aggregates), rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("ΔT (%)")
    ax.grid(axis="y", alpha=0.3)
    _off_target_title(ax, aggregates)
    return _save(fig, plt, out)


def plot_sparsity_allocation(aggregates: list[Any], tasks: list[str], out: Path) -> Path:
    """Grouped bars: sparsity of the backbone and each head per method (supplement Figure 3)."""
    plt = _pyplot()
    sparse = [a for a in aggregates if a.sparsity]
    components = ["backbone", *tasks, "overall"]
    width = 0.8 / len(components)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(sparse) + 2.0), 3.6), dpi=110)
    for j, component in enumerate(components):
        means = [100 * a.sparsity[component].mean for a in sparse]
        xs = [i + (j - (len(components) - 1) / 2) * width for i in range(len(sparse))]
        hatch = "//" if component == "overall" else None
        ax.bar(xs, means, width=width, label=component, hatch=hatch)
    for i, agg in enumerate(sparse):
        if agg.target is not None:
            ax.hlines(100 * agg.target, i - 0.45, i + 0.45, color="black", linestyles="--")
    ax.set_xticks(range(len(sparse)))
    ax.set_xticklabels(_labels(sparse), rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("sparsity (%)")
    lowest = min((100 * s.mean for a in sparse for s in a.sparsity.values()), default=0.0)
    ax.set_ylim(max(0.0, lowest - 10.0), 100.0)
    ax.legend(
        fontsize=7,
        ncol=len(components),
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        frameon=False,
        title=f"dashed: target; {OFF_TARGET}: off target"
        if any(a.off_target for a in sparse)
        else None,
        title_fontsize=7,
    )
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, plt, out)


def plot_delta_t_vs_sparsity(aggregates: list[Any], out: Path) -> Path:
    """Delta_T against the measured overall sparsity, one line per method (paper Figure 4)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    by_method: dict[str, list[Any]] = {}
    for agg in aggregates:
        if agg.sparsity:
            by_method.setdefault(agg.label.split(" @")[0], []).append(agg)
    for label, group in by_method.items():
        group.sort(key=lambda a: a.sparsity["overall"].mean)
        xs = [100 * a.sparsity["overall"].mean for a in group]
        ys = [a.delta_t["overall"].mean for a in group]
        errors = [a.delta_t["overall"].std or 0.0 for a in group]
        ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=label)
        missed = [(x, y) for x, y, a in zip(xs, ys, group, strict=True) if a.off_target]
        if missed:
            ax.scatter(*zip(*missed, strict=True), s=120, facecolors="none", edgecolors="tab:red")
    flagged_any = any(a.off_target for group in by_method.values() for a in group)
    if flagged_any:
        ax.scatter([], [], s=120, facecolors="none", edgecolors="tab:red", label="off target")
    ax.axhline(0.0, color="gray", linewidth=0.8)
    ax.set_xlabel("overall sparsity (%)")
    ax.set_ylabel("ΔT (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, plt, out)


def plot_sensitivity(points: list[Any], component: str, tasks: list[str], out: Path) -> Path:
    """Delta_T of every task (and overall) against the sparsity of one pruned component
    (paper Figure 5 / supplement Figure 1). ``points`` are
    :class:`adapmtl.analysis.sensitivity.SensitivityPoint`."""
    plt = _pyplot()
    mine = sorted((p for p in points if p.component == component), key=lambda p: p.level)
    measured = "heads" if component == "heads" else component
    xs = [100 * _component_sparsity(p, measured, tasks) for p in mine]
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    for task in tasks:
        ax.plot(xs, [p.delta_t["per_task"][task] for p in mine], marker="o", label=f"ΔT {task}")
    ax.plot(
        xs, [p.delta_t["overall"] for p in mine], marker="s", color="black", linewidth=2, label="ΔT"
    )
    ax.axhline(0.0, color="gray", linewidth=0.8)
    ax.set_xlabel(f"sparsity of {component} (%)")
    ax.set_ylabel("ΔT (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, plt, out)


def _component_sparsity(point: Any, component: str, tasks: list[str]) -> float:
    if component != "heads":
        return point.sparsity[component]
    return sum(point.sparsity[t] for t in tasks) / len(tasks)
