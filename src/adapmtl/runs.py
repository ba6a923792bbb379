"""Runs from Python: :func:`train` a config into a run directory, :func:`load_run` a run back
(its model with thresholds or masks, config, tasks, results), :meth:`Run.evaluate` it on any
split with Delta_T against a dense reference. What ``adapmtl train`` / ``eval`` / ``report`` do,
built on the same pieces (:mod:`adapmtl.loading`, :mod:`adapmtl.build`, the trainer).
docs/python_api.md shows them at work.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adapmtl.config import Config, ConfigError, apply_overrides, from_dict, load_config
from adapmtl.errors import UserError
from adapmtl.loading import load_trained
from adapmtl.rundir import run_checkpoint
from adapmtl.structured import read_if_valid

ConfigLike = str | os.PathLike | Mapping[str, Any] | Config


class ReferenceSplitWarning(UserWarning):
    """The dense reference does not record the split its metrics were measured on."""


@dataclass
class Run:
    """A trained run, read back from its files by :func:`load_run`."""

    model: nn.Module
    """As it trained: sparsified by its method (thresholds, masks), in eval mode; a plain model
    with exact zeros when read from an ``adapmtl export`` file."""
    config: Config | None
    """The run config (``None`` for an export of a bare state dict)."""
    tasks: dict[str, Any] | None
    """Task name -> :class:`adapmtl.tasks.Task` (losses, metrics, metric directions)."""
    checkpoint: Path
    """The file the model was read from."""
    directory: Path | None
    """The run directory, when the file lies in one (it holds ``config.yaml``)."""
    iteration: int | None

    @property
    def results(self) -> dict[str, Any] | None:
        """The run's ``results.json`` (its last validation), ``None`` outside a run directory."""
        if self.directory is None:
            return None
        found = read_if_valid(self.directory / "results.json")
        return found if isinstance(found, dict) else None

    def report(self) -> Any:
        """Sparsity overall, per component and per layer, with the thresholds
        (:class:`adapmtl.sparsity.SparsityReport`; ``print`` it for the table)."""
        from adapmtl.sparsity import is_sparsified, report, sparsify

        if is_sparsified(self.model):
            return report(self.model)
        if self.checkpoint.suffix == ".safetensors":
            # the exact zeros of an exported model, counted per component on a masked copy
            return report(sparsify(copy.deepcopy(self.model), mode="mask"))
        method = self.config.method.name if self.config is not None else "unknown"
        raise UserError(f"{self.checkpoint} holds a dense model (method {method!r})")

    def evaluate(
        self,
        split: str | None = None,
        reference: str | os.PathLike | Run | Mapping[str, Any] | None = None,
        *,
        device: str | torch.device = "auto",
        max_batches: int | None = None,
        reduce: str | None = None,
    ) -> dict[str, Any]:
        """The paper's metrics per task on ``split`` (default: the run's ``data.val_split``),
        the mean loss per task, the sparsity, and Delta_T (paper Eq. 7) against ``reference``
        (default: the run's ``eval.reference``): a results file, a run directory or
        :class:`Run` (its ``results.json``), or the output of another run's ``evaluate`` on
        the same split. ``device``: ``auto`` (the first CUDA device if there is one), ``cpu``,
        ``cuda[:N]``. The same numbers as ``adapmtl eval --json``."""
        from torch.utils.data import DataLoader

        from adapmtl.build import build_run_dataset
        from adapmtl.engine.distributed import resolve_device
        from adapmtl.engine.evaluate import evaluate
        from adapmtl.sparsity import is_sparsified, report
        from adapmtl.tasks.score import normalised_score

        if self.config is None or self.tasks is None:
            raise UserError(
                f"{self.checkpoint} was exported from a bare weights file and records no run "
                "config, so its data and tasks are unknown: evaluate the run's checkpoint instead"
            )
        config, tasks = self.config, self.tasks
        if not isinstance(device, torch.device):
            device = resolve_device(device, "device")
        model = self.model.to(device)
        split = split or config.data.val_split
        if reference is None:
            reference = config.eval.reference
        dense = None
        if reference is not None:
            dense = reference_metrics(reference, split, config.data.val_split, tasks)
        dataset = build_run_dataset(config, split, tasks, train=False)
        loader = DataLoader(dataset, batch_size=config.data.eval_batch_size)
        results = evaluate(model, tasks, loader, device, max_batches=max_batches)
        results["iteration"] = self.iteration
        results["split"] = split
        if is_sparsified(model):
            rep = report(model).to_dict()
            results["sparsity"] = {k: rep[k] for k in ("overall", "components", "thresholds")}
        if dense is not None:
            results["delta_t"] = normalised_score(
                results["metrics"], dense, tasks, reduce or config.eval.delta_reduce
            )
        return results


def load_run(path: str | os.PathLike) -> Run:
    """A run from its directory (``best.pt``, else ``last.pt``), one of its checkpoints, or a
    file written by ``adapmtl export`` (a plain model)."""
    given = Path(path)
    checkpoint = run_checkpoint(given)
    trained = load_trained(checkpoint)
    directory = checkpoint.parent if (checkpoint.parent / "config.yaml").is_file() else None
    return Run(
        model=trained.model.eval(),
        config=trained.config,
        tasks=trained.tasks,
        checkpoint=checkpoint,
        directory=directory,
        iteration=trained.iteration,
    )


def resolve_config(config: ConfigLike, overrides: Sequence[str] = ()) -> Config:
    """A :class:`Config` from a YAML file, a mapping (the YAML's content) or a ``Config``, with
    ``dotted.key=value`` overrides applied (the CLI's ``--set``), checked strictly."""
    if isinstance(config, (str, os.PathLike)):
        return load_config(config, list(overrides))
    data = config.to_dict() if isinstance(config, Config) else copy.deepcopy(dict(config))
    try:
        return from_dict(apply_overrides(data, list(overrides)))
    except ConfigError as err:
        raise UserError(f"config: {err}") from None


def train(
    config: ConfigLike,
    out: str | os.PathLike,
    *,
    overrides: Sequence[str] = (),
    resume: bool = False,
    overwrite: bool = False,
    init_from: str | os.PathLike | None = None,
    verbose: bool = True,
    plots: bool = True,
) -> Run:
    """Train ``config`` (a YAML path, a mapping or a :class:`Config`; ``overrides`` as
    ``--set``) into the run directory ``out`` and return the run (:func:`load_run`: its
    ``best.pt``, else its ``last.pt``). ``resume``,
    ``overwrite`` and ``init_from`` are ``adapmtl train``'s ``--resume``, ``--overwrite`` and
    ``--init-from``; ``verbose`` shows the progress; ``plots`` draws the curves into ``out``, as
    ``adapmtl train`` does. What a user must know (a missed target, no ``best.pt``, no plots) is
    a ``UserWarning``. For more control (the model before the
    first step, one's own loop), build :class:`adapmtl.engine.trainer.Trainer` directly."""
    from adapmtl.engine.trainer import Trainer

    resolved = resolve_config(config, overrides)
    trainer = Trainer(
        resolved,
        out,
        resume=resume,
        overwrite=overwrite,
        init_from=init_from,
        verbose=verbose,
    )
    results = trainer.fit()
    if plots:
        _, problem = draw_run_plots(Path(out))
        if problem is not None:
            warnings.warn(f"adapmtl.train: {problem}", UserWarning, stacklevel=2)
    for text in result_warnings(results, Path(out)):
        warnings.warn(f"adapmtl.train: {text}", UserWarning, stacklevel=2)
    return load_run(out)


def result_warnings(results: dict[str, Any], run_dir: Path) -> list[str]:
    """What a user must know about a finished run: a missed target sparsity, no best.pt."""
    from adapmtl.sparsity.target import miss_text, on_target, result_target

    target, sparsity = result_target(results)
    found = []
    if not on_target(target, sparsity):
        assert target is not None
        found.append(
            f"the run missed its target: {miss_text(target, sparsity)} "
            "(results.json: target_reached false); train longer or adjust the method's options"
        )
    if results.get("best") is None:
        found.append(
            f"no {run_dir / 'best.pt'}: best.pt holds the best validated checkpoint at the "
            f"target sparsity, and no validation was at the target; {run_dir / 'last.pt'} "
            "holds the final model"
        )
    return found


def draw_run_plots(run_dir: Path) -> tuple[list[Path], str | None]:
    """Draw the run's curves (:func:`adapmtl.analysis.curves.plot_run`) into ``run_dir``: the
    files drawn and None, or no files and why not (matplotlib missing, a log that cannot be
    drawn); a finished run is never failed for its plots."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return [], "no plots (matplotlib is not installed: pip install 'adapmtl[plots]')"
    from adapmtl.analysis.curves import plot_run

    try:
        return plot_run(run_dir), None
    except UserError as err:
        return [], f"no plots: {err}"


def reference_metrics(
    reference: str | os.PathLike | Run | Mapping[str, Any],
    split: str,
    val_split: str,
    tasks: Mapping[str, Any],
) -> dict[str, dict[str, float]]:
    """The dense reference's metrics for Delta_T on ``split``. A reference that records another
    split is refused (Delta_T would compare two splits); one that records none is assumed to be
    of ``split``, with a :class:`ReferenceSplitWarning` when that is not the validation split."""
    from adapmtl.tasks.score import load_reference, reference_from_mapping, reference_split

    if isinstance(reference, Mapping):
        measured = reference.get("split")
        if measured is not None and measured != split:
            raise UserError(
                f"split {split!r}: the reference holds metrics on the {measured!r} split; "
                f"evaluate the dense run on {split!r} for its reference"
            )
        return reference_from_mapping(reference, "given to evaluate()", tasks)
    if isinstance(reference, Run):
        if reference.directory is None:
            raise UserError(f"reference: {reference.checkpoint} is not in a run directory")
        path = reference.directory / "results.json"
    else:
        path = Path(reference)
        if path.is_dir():
            path = path / "results.json"
    measured = reference_split(path)
    if measured is not None and measured != split:
        raise UserError(
            f"--split {split}: the reference {path} holds metrics on the {measured!r} "
            f"split, so Delta_T would compare two splits; give --reference with the dense run's "
            f"metrics on {split!r} ('adapmtl eval DENSE_RUN --split {split} --json > FILE')"
        )
    if measured is None and split != val_split:
        warnings.warn(
            f"{path} does not record its split; Delta_T assumes it was measured on {split!r}",
            ReferenceSplitWarning,
            stacklevel=3,
        )
    return load_reference(path, "--reference", tasks)
