"""Training curves of one or several runs, from their ``log.jsonl`` (``adapmtl plot``, written by
``adapmtl train`` and ``adapmtl demo`` at the end).

Figures (PNG), each titled with the runs' names and methods:

* ``sparsity.png`` — overall sparsity in its own panel, with the target (dashed) and the
  iteration the mask was fixed (dotted; AdapMTL's ``frozen_at``, dynamic DiSparse's
  ``fixed_at``), then the sparsity of each component (like the paper's Figure 3);
* ``thresholds.png`` — the threshold alpha of each threshold group, log scale, freeze marked;
* ``task_weights.png`` — the task weights beta (like the supplement's Figure 2);
* ``losses.png`` — the training loss of each task and the weighted total, one panel each;
* ``validation.png`` — every validation metric, the validation losses and Delta_T (when a
  dense reference was configured), one panel each.

One run: sparsity of the components, alpha and beta share one panel each (one line per name).
Several runs are overlaid: one panel per name, one colour per run. Runs of methods that do not
prune (dense) have no sparsity or thresholds and are left out of those figures. Needs
matplotlib (``pip install 'adapmtl[plots]'``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapmtl.analysis.plots import pyplot, save_figure
from adapmtl.analysis.tables import OFF_TARGET, off_target_note
from adapmtl.errors import UserError
from adapmtl.sparsity.target import result_target
from adapmtl.structured import read_structured

FREEZE_KEYS = ("frozen_at", "fixed_at")
Series = dict[str, tuple[list[int], list[float]]]


@dataclass
class RunCurves:
    """What the plots read from one run directory."""

    path: Path
    name: str
    method: str | None
    train: list[dict[str, Any]] = field(default_factory=list)
    val: list[dict[str, Any]] = field(default_factory=list)
    target: float | None = None
    freeze: int | None = None
    off_target: str | None = None
    """Why a finished run missed its target (``None`` when on target or unfinished)."""
    colour: str = "C0"
    """The run's colour in every figure of an overlay."""

    @property
    def label(self) -> str:
        text = f"{self.name} ({self.method})" if self.method else self.name
        return f"{text} {OFF_TARGET}" if self.off_target else text

    def series(self, prefix: str, kind: str = "train") -> Series:
        """Every logged scalar ``prefix/<name>`` (or every scalar, for ``prefix=""``) against
        the iteration, by name."""
        found: Series = {}
        for record in self.train if kind == "train" else self.val:
            for key, value in record.items():
                if key in ("kind", "iteration") or not isinstance(value, (int, float)):
                    continue
                if prefix and not key.startswith(prefix + "/"):
                    continue
                name = key.split("/", 1)[1] if prefix else key
                xs, ys = found.setdefault(name, ([], []))
                xs.append(record["iteration"])
                ys.append(float(value))
        return found


def read_log(run_dir: Path, kind: str = "train") -> list[dict[str, Any]]:
    """The records of one kind (``train`` or ``val``) of a run's ``log.jsonl``."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise UserError(f"{path} does not exist: {run_dir} is not a run directory")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise UserError(f"{path}, line {number}: not JSON ({err.msg})") from None
    return [r for r in records if r.get("kind") == kind]


def load_curves(run_dir: str | Path) -> RunCurves:
    """The log of a run directory, with its method, target and freeze iteration (from
    ``results.json`` when the run finished, else from ``config.yaml``)."""
    run_dir = Path(run_dir)
    curves = RunCurves(run_dir, run_dir.resolve().name, None)
    curves.train, curves.val = read_log(run_dir, "train"), read_log(run_dir, "val")
    config_path = run_dir / "config.yaml"
    if config_path.is_file():
        method = read_structured(config_path, "run config").get("method") or {}
        curves.method = method.get("name")
        curves.target = method.get("target")
    results_path = run_dir / "results.json"
    if results_path.is_file():
        results = read_structured(results_path, "results file")
        target, _ = result_target(results)
        curves.target = target
        curves.off_target = off_target_note(results)
        summary = results.get("method") or {}
        curves.freeze = next((summary[k] for k in FREEZE_KEYS if summary.get(k) is not None), None)
    return curves


def _grid(plt: Any, panels: int, title: str) -> tuple[Any, list[Any]]:
    columns = min(4, panels)
    rows = math.ceil(panels / columns)
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(3.6 * columns, 2.7 * rows + 0.7),
        dpi=110,
        squeeze=False,
        layout="constrained",
    )
    flat = list(axes.flat)
    for ax in flat[panels:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=9)
    return fig, flat[:panels]


def _title(what: str, runs: Sequence[RunCurves]) -> str:
    lines = [f"{what}: {'; '.join(run.label for run in runs)}"]
    lines += [
        f"{OFF_TARGET} {run.name} off target: {run.off_target}" for run in runs if run.off_target
    ]
    return "\n".join(lines)


def _finish(ax: Any, panel: str, ylabel: str, logy: bool) -> None:
    ax.set_title(panel, fontsize=8)
    ax.set_xlabel("iteration", fontsize=7)
    ax.set_ylabel(ylabel, fontsize=7)
    ax.tick_params(labelsize=7)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if len(ax.get_legend_handles_labels()[0]) > 1:
        ax.legend(fontsize=6)


def _marks(ax: Any, run: RunCurves, colour: str, scale: float, target: bool, freeze: bool) -> None:
    if target and run.target is not None:
        ax.axhline(scale * run.target, color=colour, linestyle="--", linewidth=0.8)
    if freeze and run.freeze is not None:
        ax.axvline(run.freeze, color=colour, linestyle=":", linewidth=1.0)


def _runs_legend(
    fig: Any, runs: Sequence[RunCurves], extra: Sequence[tuple[str, str]] = ()
) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=run.colour) for run in runs]
    labels = [run.label for run in runs]
    for style, text in extra:
        handles.append(Line2D([], [], color="gray", linestyle=style))
        labels.append(text)
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=7)


def _panel_figure(
    runs: Sequence[RunCurves],
    what: str,
    names: dict[str, str],
    data: list[Series],
    ylabel: str,
    out: Path,
    *,
    scale: float = 1.0,
    logy: bool = False,
    shared: bool = True,
    lead: str | None = None,
    freeze: bool = False,
    overlay: bool = False,
) -> Path:
    """One figure of the series ``data[i]`` of ``runs[i]``; ``names`` maps each series name to
    its panel title. For one run (not ``overlay``) and ``shared``, the series share one panel;
    otherwise each name has its own panel, one colour per run. ``lead`` (overall sparsity) is
    always alone in the first panel, with each run's target; ``freeze`` marks the mask fixing in
    every panel."""
    plt = pyplot()
    single = not overlay and shared
    rest = [name for name in names if name != lead]
    panels: list[tuple[str, list[str]]] = [(names[lead], [lead])] if lead in names else []
    if single and rest:
        panels.append(("components" if lead else what, rest))
    else:
        panels += [(names[name], [name]) for name in rest]
    fig, axes = _grid(plt, len(panels), _title(what, runs))
    for ax, (panel, members) in zip(axes, panels, strict=True):
        values = [y for series in data for name in members for y in series.get(name, ([], []))[1]]
        for run, series in zip(runs, data, strict=True):
            colour = run.colour if overlay else "black"
            for j, name in enumerate(members):
                if name in series:
                    xs, ys = series[name]
                    ax.plot(
                        xs,
                        [scale * y for y in ys],
                        color=colour if overlay else f"C{j % 10}",
                        label=name if single and len(members) > 1 else None,
                        linewidth=1.2,
                    )
            _marks(ax, run, colour, scale, target=members == [lead], freeze=freeze)
        _finish(ax, panel, ylabel, logy and any(y > 0 for y in values))
    extra = [("--", "target")] if lead and any(r.target is not None for r in runs) else []
    if freeze and any(run.freeze is not None for run in runs):
        extra.append((":", "mask fixed"))
    if overlay or extra:
        _runs_legend(fig, runs, extra)
    return save_figure(fig, plt, out)


def _names(data: list[Series]) -> list[str]:
    names: list[str] = []
    for series in data:
        names += [name for name in series if name not in names]
    return names


FIGURES: list[tuple[str, str, str, str, str, dict[str, Any]]] = [
    # (file, title, logged prefix ("" = every validation scalar), panel prefix, y label, options);
    # a run that logged nothing under the prefix (a dense run's sparsity) is left out
    ("sparsity.png", "sparsity", "sparsity", "", "sparsity (%)",
     {"scale": 100.0, "lead": "overall", "freeze": True}),
    ("thresholds.png", "thresholds α", "alpha", "α ", "α", {"logy": True, "freeze": True}),
    ("task_weights.png", "task weights β", "weight", "β ", "β", {}),
    ("losses.png", "training losses", "loss", "training loss ", "loss", {"shared": False}),
    ("validation.png", "validation", "", "", "value", {"shared": False}),
]  # fmt: skip


def plot_runs(run_dirs: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    """Draw the figures of the module docstring for ``run_dirs`` (overlaid) into ``out_dir``;
    returns the files written (a figure with nothing logged is left out)."""
    runs = [load_curves(path) for path in run_dirs]
    if not runs:
        raise UserError("give at least one run directory")
    for index, run in enumerate(runs):
        run.colour = f"C{index % 10}"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for file, what, prefix, panel, ylabel, options in FIGURES:
        kind = "val" if file == "validation.png" else "train"
        drawn = [(run, run.series(prefix, kind)) for run in runs]
        drawn = [(run, series) for run, series in drawn if series]
        if not drawn:
            continue
        chosen, data = [run for run, _ in drawn], [series for _, series in drawn]
        names = {name: panel + name.replace("/", " ") for name in _names(data)}
        out = out_dir / file
        figure = _panel_figure(
            chosen, what, names, data, ylabel, out, overlay=len(runs) > 1, **options
        )
        written.append(figure)
    return written


def plot_run(run_dir: str | Path) -> list[Path]:
    """The figures of one run, written into its run directory."""
    return plot_runs([run_dir], run_dir)
