"""Paper-style result tables (Tables 1-2): per-task metrics, Delta_T per task and overall, and the
sparsity of the backbone and each head."""

from __future__ import annotations

from typing import Any


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def results_table(rows: list[tuple[str, dict[str, Any]]], tasks: list[str]) -> str:
    """Markdown table of ``(label, results)`` rows, where ``results`` is a ``results.json``
    (keys ``metrics``, optional ``delta_t`` and ``sparsity``)."""
    metric_names = {t: list(rows[0][1]["metrics"][t]) for t in tasks} if rows else {}
    components = ["backbone", *tasks]
    header = ["method"]
    for task in tasks:
        header += [f"{task} {m}" for m in metric_names[task]] + [f"ΔT {task}"]
    header += [f"sparsity {c} %" for c in components] + ["sparsity overall %", "ΔT"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, result in rows:
        delta = result.get("delta_t") or {}
        sparsity = result.get("sparsity") or {}
        cells = [label]
        for task in tasks:
            cells += [_fmt(result["metrics"][task].get(m)) for m in metric_names[task]]
            cells.append(_fmt(delta.get("per_task", {}).get(task)))
        for component in components:
            counts = sparsity.get("components", {}).get(component)
            cells.append(_fmt(None if counts is None else 100 * counts["sparsity"]))
        overall = sparsity.get("overall")
        cells.append(_fmt(None if overall is None else 100 * overall["sparsity"]))
        cells.append(_fmt(delta.get("overall")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
