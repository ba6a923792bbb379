"""Method comparisons: Delta_T per method, sparsity allocation per component (supplement
Figure 3), Delta_T against sparsity (paper Figure 4) and sensitivity sweeps (paper Figure 5);
the curves of single runs are in :mod:`adapmtl.analysis.curves`. Needs matplotlib
(``pip install adapmtl[plots]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapmtl.analysis.tables import OFF_TARGET, flagged
from adapmtl.atomic import atomic_write
from adapmtl.errors import UserError


def pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise UserError("plots need matplotlib: pip install 'adapmtl[plots]'") from err
    return plt


def save_figure(fig: Any, plt: Any, out: Path) -> Path:
    if fig.get_layout_engine() is None:
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
    plt = pyplot()
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
    return save_figure(fig, plt, out)


def plot_sparsity_allocation(aggregates: list[Any], tasks: list[str], out: Path) -> Path:
    """Grouped bars: sparsity of the backbone and each head per method (supplement Figure 3)."""
    plt = pyplot()
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
    return save_figure(fig, plt, out)


def plot_delta_t_vs_sparsity(aggregates: list[Any], out: Path) -> Path:
    """Delta_T against the measured overall sparsity, one line per method (paper Figure 4)."""
    plt = pyplot()
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
    return save_figure(fig, plt, out)


def plot_sensitivity(points: list[Any], component: str, tasks: list[str], out: Path) -> Path:
    """Delta_T of every task (and overall) against the sparsity of one pruned component
    (paper Figure 5 / supplement Figure 1). ``points`` are
    :class:`adapmtl.analysis.sensitivity.SensitivityPoint`."""
    plt = pyplot()
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
    return save_figure(fig, plt, out)


def _component_sparsity(point: Any, component: str, tasks: list[str]) -> float:
    if component != "heads":
        return point.sparsity[component]
    return sum(point.sparsity[t] for t in tasks) / len(tasks)
