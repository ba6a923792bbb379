"""Paper-style result tables (Tables 1-2): per-task metrics, Delta_T per task and overall, and the
sparsity of the backbone and each head; for method comparisons over seeds also mean ± spread
tables and CSV files."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from adapmtl.sparsity.target import miss_text, on_target, result_target

OFF_TARGET = "⚠"
"""Marks the label of a row whose run missed its target sparsity (explained under the table)."""


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def off_target_note(result: dict[str, Any]) -> str | None:
    """Why a row is off target (None when it is not): ``result["off_target"]`` when given (the
    means over seeds say which seeds missed), else from its target and overall sparsity."""
    if "off_target" in result:
        return result["off_target"]
    target, sparsity = result_target(result)
    if on_target(target, sparsity):
        return None
    assert target is not None
    return miss_text(target, sparsity)


def flagged(label: str, note: str | None) -> str:
    return label if note is None else f"{label} {OFF_TARGET}"


def _footnotes(notes: list[tuple[str, str | None]]) -> list[str]:
    lines = [f"{OFF_TARGET} {label}: off target, {note}." for label, note in notes if note]
    return ["", *lines] if lines else []


def markdown_row(cells: Sequence[Any]) -> str:
    """One Markdown table row; a ``|`` inside a cell (a label such as "|W_B|") is escaped, so it
    cannot split the cell."""
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"


def results_table(rows: list[tuple[str, dict[str, Any]]], tasks: list[str]) -> str:
    """Markdown table of ``(label, results)`` rows, where ``results`` is a ``results.json``
    (keys ``metrics``, optional ``delta_t`` and ``sparsity``). A run off its target sparsity is
    flagged in its row and explained under the table."""
    metric_names = {t: list(rows[0][1]["metrics"][t]) for t in tasks} if rows else {}
    components = ["backbone", *tasks]
    header = ["method"]
    for task in tasks:
        header += [f"{task} {m}" for m in metric_names[task]] + [f"ΔT {task}"]
    header += [f"sparsity {c} %" for c in components] + ["sparsity overall %", "ΔT"]
    lines = [markdown_row(header), "|" + "---|" * len(header)]
    notes = [(label, off_target_note(result)) for label, result in rows]
    for (label, result), (_, note) in zip(rows, notes, strict=True):
        delta = result.get("delta_t") or {}
        sparsity = result.get("sparsity") or {}
        cells = [flagged(label, note)]
        for task in tasks:
            cells += [_fmt(result["metrics"][task].get(m)) for m in metric_names[task]]
            cells.append(_fmt(delta.get("per_task", {}).get(task)))
        for component in components:
            counts = sparsity.get("components", {}).get(component)
            cells.append(_fmt(None if counts is None else 100 * counts["sparsity"]))
        overall = sparsity.get("overall")
        cells.append(_fmt(None if overall is None else 100 * overall["sparsity"]))
        cells.append(_fmt(delta.get("overall")))
        lines.append(markdown_row(cells))
    return "\n".join(lines + _footnotes(notes))


def fmt_stat(mean: float, std: float | None, digits: int = 2, scale: float = 1.0) -> str:
    """``mean ± std`` (just the mean when there is one seed)."""
    if std is None:
        return f"{scale * mean:.{digits}f}"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def spread_table(aggregates: list[Any], tasks: list[str]) -> str:
    """Markdown: ΔT per task and overall (mean ± sample std over seeds, and every seed's overall
    ΔT), and the sparsity of the whole model, the backbone and each head (mean ± std, %).
    ``aggregates`` are :class:`adapmtl.analysis.compare.Aggregate`."""
    components = ["overall", "backbone", *tasks]
    header = ["method", "seeds", *[f"ΔT {t}" for t in tasks], "ΔT", "ΔT per seed"]
    header += [f"sparsity {c} %" for c in components]
    lines = [markdown_row(header), "|" + "---|" * len(header)]
    notes = [(agg.label, agg.off_target) for agg in aggregates]
    for agg in aggregates:
        cells = [flagged(agg.label, agg.off_target), str(len(agg.seeds))]
        cells += [fmt_stat(agg.delta_t[t].mean, agg.delta_t[t].std) for t in tasks]
        overall = agg.delta_t["overall"]
        cells.append(fmt_stat(overall.mean, overall.std))
        cells.append(", ".join(f"{v:+.2f}" for v in overall.values))
        for component in components:
            stat = agg.sparsity.get(component)
            cells.append("-" if stat is None else fmt_stat(stat.mean, stat.std, scale=100.0))
        lines.append(markdown_row(cells))
    return "\n".join(lines + _footnotes(notes))


def csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _none(value: float | None) -> Any:
    return "" if value is None else value


def aggregate_csv(aggregates: list[Any], tasks: list[str]) -> str:
    """One row per run id: every metric, ΔT (per task, overall) and sparsity (fractions), each
    as ``<name>_mean`` and ``<name>_std`` over the seeds."""
    if not aggregates:
        return ""
    first = aggregates[0]
    metric_keys = [(t, m) for t in tasks for m in first.metrics[t]]
    sparsity_keys = ["overall", "backbone", *tasks]
    header = ["run_id", "label", "method", "target", "seeds", "off_target_seeds"]
    for task, metric in metric_keys:
        header += [f"{task}/{metric}_mean", f"{task}/{metric}_std"]
    for key in [*tasks, "overall"]:
        header += [f"delta_t/{key}_mean", f"delta_t/{key}_std"]
    for key in sparsity_keys:
        header += [f"sparsity/{key}_mean", f"sparsity/{key}_std"]
    rows = []
    for agg in aggregates:
        row: list[Any] = [agg.run_id, agg.label, agg.method, _none(agg.target), len(agg.seeds)]
        row.append(" ".join(str(seed) for seed in agg.off_target_seeds))
        for task, metric in metric_keys:
            stat = agg.metrics[task][metric]
            row += [stat.mean, _none(stat.std)]
        for key in [*tasks, "overall"]:
            row += [agg.delta_t[key].mean, _none(agg.delta_t[key].std)]
        for key in sparsity_keys:
            stat = agg.sparsity.get(key)
            row += ["", ""] if stat is None else [stat.mean, _none(stat.std)]
        rows.append(row)
    return csv_text(header, rows)


def per_seed_csv(rows: list[Any], tasks: list[str]) -> str:
    """One row per run and seed (``adapmtl.analysis.compare.Row``): metrics, ΔT, sparsity."""
    if not rows:
        return ""
    metric_keys = [(t, m) for t in tasks for m in rows[0].metrics[t]]
    sparsity_keys = ["overall", "backbone", *tasks]
    header = ["run_id", "label", "seed", "target", "target_reached"]
    header += [f"{t}/{m}" for t, m in metric_keys]
    header += [f"delta_t/{k}" for k in [*tasks, "overall"]]
    header += [f"sparsity/{k}" for k in sparsity_keys]
    out = []
    for r in rows:
        line: list[Any] = [r.run_id, r.label, r.seed, _none(r.target), _none(r.target_reached)]
        line += [r.metrics[t][m] for t, m in metric_keys]
        line += [r.delta_t["per_task"][t] for t in tasks] + [r.delta_t["overall"]]
        line += [r.sparsity.get(k, "") for k in sparsity_keys]
        out.append(line)
    return csv_text(header, out)
