"""Training a comparison suite (:mod:`adapmtl.analysis.suite`): every planned run with the
trainer, the dense run of each seed first, skipping finished runs and resuming interrupted ones;
one line per run with its Delta_T against the seed's dense run, its sparsity and a missed target.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from adapmtl.analysis.suite import PlannedRun, Suite, plan, run_status
from adapmtl.engine.trainer import Trainer
from adapmtl.errors import UserError
from adapmtl.sparsity.target import miss_text, on_target, result_target
from adapmtl.tasks.score import load_reference, normalised_score


def run_suite(
    suite: Suite,
    out: Path,
    *,
    log: Callable[[str], None] = print,
    verbose: bool = False,
) -> list[PlannedRun]:
    """Train every run of the suite that has not finished; returns the plan."""
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
            try:
                reference = load_reference(dense_results)
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
