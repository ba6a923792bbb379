"""The iteration-based trainer (paper Section 4.1.4): Adam, step decay, validation every N
iterations, best checkpoint by Delta_T (or validation loss), exact resume.

Step order: forward, per-task losses, task weights (weighting), weighted loss, backward,
``method.after_backward`` (controller, masks), optimizer step, scheduler step,
``method.after_step``.
"""

from __future__ import annotations

import json
import platform
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from adapmtl import __version__
from adapmtl.config import Config, from_dict
from adapmtl.engine.build import (
    build_dataset,
    build_model,
    build_run_method,
    build_run_weighting,
    build_tasks,
    resolve_device,
)
from adapmtl.engine.checkpoint import load_checkpoint, save_checkpoint
from adapmtl.engine.evaluate import evaluate, normalised_score, read_reference
from adapmtl.engine.logging import RunLogger
from adapmtl.engine.sampling import EpochIndexed, ResumableBatchSampler
from adapmtl.errors import UserError
from adapmtl.methods import TrainingContext
from adapmtl.sparsity import is_sparsified, report

RUN_FILES = ("config.yaml", "meta.json", "log.jsonl", "results.json", "last.pt", "best.pt")


class NonFiniteLossError(UserError):
    """A task loss became NaN or Inf."""


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: an existing run directory needs ``resume`` or ``overwrite``."""
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise UserError(f"cannot resume: {run_dir / 'last.pt'} does not exist")
        return
    if existing and not overwrite:
        raise UserError(
            f"{run_dir} already holds a run ({', '.join(existing)}); pass --resume to continue "
            "it or --overwrite to replace it"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    probe = run_dir / ".write-test"
    try:
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as err:
        raise UserError(f"output directory {run_dir} is not writable: {err}") from None
    if overwrite:
        for name in existing:
            (run_dir / name).unlink()
        shutil.rmtree(run_dir / "tb", ignore_errors=True)


def _git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _to_device(batch: Any, device: torch.device) -> Any:
    images, targets = batch
    return images.to(device), {name: t.to(device) for name, t in targets.items()}


def model_from_checkpoint(state: dict[str, Any]) -> tuple[torch.nn.Module, Config, Any]:
    """Rebuild the model of a checkpoint from the config it holds and load its weights.
    Returns (model, config, tasks)."""
    config = from_dict(state["config"])
    tasks = build_tasks(config)
    model = build_model(config, tasks)
    method = build_run_method(config)
    method.prepare(model)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise UserError(
            f"checkpoint weights do not fit model {config.model.name!r}: {str(err).splitlines()[0]}"
        ) from None
    return model, config, tasks


class Trainer:
    """Trains one run described by ``config`` into ``run_dir``.

    ``resume`` continues ``run_dir/last.pt`` (the result equals an uninterrupted run);
    ``init_from`` starts a new run from another run's weights (and thresholds where present),
    for example to prune a 60 % model further to 90 %.
    """

    def __init__(
        self,
        config: Config,
        run_dir: str | Path,
        *,
        resume: bool = False,
        overwrite: bool = False,
        init_from: str | Path | None = None,
        verbose: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        resume_state = None
        if resume:
            prepare_run_dir(self.run_dir, resume=True, overwrite=False)
            resume_state = load_checkpoint(self.run_dir / "last.pt")
        self.config = config
        self.device = resolve_device(config.train.device)
        if config.train.threads is not None:
            torch.set_num_threads(config.train.threads)
        if config.train.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(config.train.seed)
        random.seed(config.train.seed)

        self.tasks = build_tasks(config)
        self.model = build_model(config, self.tasks)
        self.method = build_run_method(config)
        init_state = load_checkpoint(init_from) if init_from is not None else None
        self.method.prepare(self.model)
        if init_state is not None:
            self._init_from(init_state, Path(init_from))
        self.model.to(self.device)
        self.weighting = build_run_weighting(config, self.tasks, self.model)
        self.optimizer, self.scheduler = self._build_optimizer()
        self.reference = read_reference(config.eval.reference) if config.eval.reference else None

        self.train_set = build_dataset(config, config.data.train_split, self.tasks, train=True)
        self.val_set = build_dataset(config, config.data.val_split, self.tasks, train=False)
        self.iteration = 0
        self.best: dict[str, Any] | None = None
        self.initial_rng = torch.get_rng_state()
        if resume_state is not None:
            self._load_state(resume_state)
        else:
            prepare_run_dir(self.run_dir, resume=False, overwrite=overwrite)
            self._write_run_files()
        self.logger = RunLogger(
            self.run_dir, config.train.iterations, self.iteration, console=verbose
        )
        self.context = TrainingContext(
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            iterations=config.train.iterations,
            batches=self._scoring_batches,
            task_losses=self._task_losses,
            reset_optimizer=self._reset_optimizer,
            device=self.device,
        )

    def _build_optimizer(self) -> tuple[torch.optim.Optimizer, Any]:
        optim = self.config.optim
        groups = self.method.param_groups(
            self.model,
            lr=optim.lr,
            weight_decay=optim.weight_decay,
            threshold_lr=optim.threshold_lr,
            threshold_weight_decay=optim.threshold_weight_decay,
        )
        optimizer = torch.optim.Adam(groups, lr=optim.lr, betas=tuple(optim.betas))
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, optim.lr_step, optim.lr_gamma)
        return optimizer, scheduler

    def _reset_optimizer(self) -> None:
        """Fresh optimizer state and learning-rate schedule (LTH rewinding)."""
        self.optimizer, self.scheduler = self._build_optimizer()
        self.context.optimizer, self.context.scheduler = self.optimizer, self.scheduler

    def _init_from(self, state: dict[str, Any], path: Path) -> None:
        from adapmtl.sparsity import dense_state_dict, load_dense_state_dict, thresholds

        source, _, _ = model_from_checkpoint(state)
        plain = dense_state_dict(source) if is_sparsified(source) else source.state_dict()
        try:
            if is_sparsified(self.model):
                load_dense_state_dict(self.model, plain)
            else:
                self.model.load_state_dict(plain)
        except (ValueError, RuntimeError) as err:
            raise UserError(f"--init-from {path}: {err}") from None
        with torch.no_grad():
            for key, theta in thresholds(source).items():
                if key in thresholds(self.model):
                    thresholds(self.model)[key].copy_(theta)

    def _write_run_files(self) -> None:
        (self.run_dir / "config.yaml").write_text(self.config.to_yaml())
        meta = {
            "adapmtl": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "git": _git_revision(),
            "seed": self.config.train.seed,
            "device": str(self.device),
            "command": sys.argv,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (self.run_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")

    # ----------------------------------------------------------------- data
    def _loader(
        self, dataset: Any, sampler: Any = None, batch_size: int | None = None
    ) -> DataLoader:
        # A loader of its own generator: creating an iterator must not draw from the global RNG,
        # or a resumed run's dropout would differ from an uninterrupted run's.
        generator = torch.Generator().manual_seed(self.config.train.seed)
        workers = self.config.data.num_workers
        if sampler is not None:
            return DataLoader(
                dataset, batch_sampler=sampler, num_workers=workers, generator=generator
            )
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=False, num_workers=workers, generator=generator
        )

    def _train_batches(self) -> Iterator[Any]:
        sampler = ResumableBatchSampler(
            len(self.train_set),
            self.config.data.batch_size,
            seed=self.config.train.seed,
            start_iteration=self.iteration,
        )
        return iter(self._loader(EpochIndexed(self.train_set), sampler))

    def _scoring_batches(self) -> Iterator[Any]:
        """Batches for scoring at initialisation (SNIP, DiSparse), from their own seed stream."""
        sampler = ResumableBatchSampler(
            len(self.train_set),
            self.config.data.batch_size,
            seed=self.config.train.seed + 7919,
        )
        for batch in self._loader(EpochIndexed(self.train_set), sampler):
            yield _to_device(batch, self.device)

    def _val_loader(self) -> DataLoader:
        return self._loader(self.val_set, batch_size=self.config.data.eval_batch_size)

    # ----------------------------------------------------------------- steps
    def _task_losses(self, batch: Any) -> dict[str, torch.Tensor]:
        images, targets = batch
        outputs = self.model(images)
        return {name: task.loss(outputs[name], targets[name]) for name, task in self.tasks.items()}

    def _check_finite(self, losses: dict[str, torch.Tensor]) -> bool:
        bad = [name for name, value in losses.items() if not torch.isfinite(value)]
        if not bad:
            return True
        message = (
            f"loss of task {bad[0]!r} is {float(losses[bad[0]])} at iteration {self.iteration}"
        )
        if self.config.train.on_nonfinite == "skip":
            self.skipped_steps += 1
            self.logger.message(f"{message}; step skipped ({self.skipped_steps} so far)")
            return False
        raise NonFiniteLossError(
            f"{message}; stopping. The last good checkpoint is {self.run_dir / 'last.pt'} "
            "(set train.on_nonfinite: skip to skip such steps instead)"
        )

    def train_step(self, batch: Any) -> dict[str, float]:
        self.model.train()
        losses = self._task_losses(batch)
        if not self._check_finite(losses):
            return {}
        vector = torch.stack(list(losses.values()))
        weights = self.weighting.update(vector.detach()).to(vector)
        total = (weights * vector).sum()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.method.after_backward(self.context, self.iteration)
        self.optimizer.step()
        self.scheduler.step()
        self.method.after_step(self.context, self.iteration)
        scalars = {f"loss/{name}": float(value.detach()) for name, value in losses.items()}
        scalars.update({f"weight/{n}": float(w) for n, w in zip(self.tasks, weights, strict=True)})
        scalars["loss/total"] = float(total.detach())
        return scalars

    def fit(self) -> dict[str, Any]:
        """Train to ``train.iterations``; returns the final results (also in results.json)."""
        config = self.config.train
        self.skipped_steps = getattr(self, "skipped_steps", 0)
        if self.iteration == 0:
            self.method.on_start(self.context)
        batches = self._train_batches()
        results: dict[str, Any] = {}
        started = time.perf_counter()
        try:
            while self.iteration < config.iterations:
                scalars = self.train_step(_to_device(next(batches), self.device))
                self.iteration += 1
                done = self.iteration == config.iterations
                if scalars and (self.iteration % config.log_every == 0 or done):
                    self._log_train(scalars)
                if self.iteration % config.val_every == 0 or done:
                    results = self._validate()
                if self.iteration % config.checkpoint_every == 0 or done:
                    save_checkpoint(self._state(), self.run_dir / "last.pt")
        finally:
            self.logger.close()
        results["train_seconds"] = time.perf_counter() - started
        results["skipped_steps"] = self.skipped_steps
        self._write_results(results)
        return results

    def _sparsity_scalars(self) -> dict[str, float]:
        if not is_sparsified(self.model):
            return {}
        rep = report(self.model)
        scalars = {"sparsity/overall": rep.sparsity}
        scalars.update({f"sparsity/{n}": c.sparsity for n, c in rep.components.items()})
        scalars.update({f"alpha/{g}": t["alpha"] for g, t in rep.thresholds.items()})
        return scalars

    def _log_train(self, scalars: dict[str, float]) -> None:
        scalars = {**scalars, "lr": self.scheduler.get_last_lr()[0], **self._sparsity_scalars()}
        self.logger.log(self.iteration, scalars)
        text = f"loss {scalars['loss/total']:.4f}"
        if "sparsity/overall" in scalars:
            text += f" sparsity {100 * scalars['sparsity/overall']:.2f}%"
        self.logger.progress(self.iteration, text)

    def _validate(self) -> dict[str, Any]:
        evaluation = evaluate(
            self.model,
            self.tasks,
            self._val_loader(),
            self.device,
            max_batches=self.config.eval.max_batches,
        )
        results: dict[str, Any] = {"iteration": self.iteration, **evaluation}
        if is_sparsified(self.model):
            rep = report(self.model).to_dict()
            results["sparsity"] = {k: rep[k] for k in ("overall", "components", "thresholds")}
        results["method"] = self.method.summary()
        scalars: dict[str, float] = {
            f"{task}/{metric}": value
            for task, values in evaluation["metrics"].items()
            for metric, value in values.items()
        }
        scalars.update({f"loss/{t}": v for t, v in evaluation["loss"].items()})
        if self.reference is not None:
            score = normalised_score(
                evaluation["metrics"], self.reference, self.tasks, self.config.eval.delta_reduce
            )
            results["delta_t"] = score
            scalars["delta_t"] = score["overall"]
            scalars.update({f"delta_t/{t}": v for t, v in score["per_task"].items()})
        self.logger.log(self.iteration, scalars, kind="val")
        self._update_best(results)
        return results

    def _update_best(self, results: dict[str, Any]) -> None:
        if not self.method.at_target():
            return
        if "delta_t" in results:
            score, key = results["delta_t"]["overall"], "delta_t"
        else:
            score, key = -sum(results["loss"].values()), "-val_loss"
        if self.best is None or score > self.best["score"]:
            self.best = {"score": score, "key": key, "iteration": self.iteration}
            save_checkpoint(self._state(), self.run_dir / "best.pt")

    def _write_results(self, results: dict[str, Any]) -> None:
        results = {**results, "best": self.best}
        path = self.run_dir / "results.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(path)

    # ------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
        return {
            "format": "adapmtl-checkpoint-1",
            "iteration": self.iteration,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "weighting": self.weighting.state_dict(),
            "method": self.method.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])},
            "best": self.best,
            "skipped_steps": getattr(self, "skipped_steps", 0),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        if state.get("config") != self.config.to_dict():
            theirs, ours = state.get("config", {}), self.config.to_dict()
            differing = [k for k in ours if theirs.get(k) != ours[k]]
            raise UserError(
                f"cannot resume {self.run_dir}: its checkpoint was made with a different config "
                f"(sections {differing}); resume with the run's own config.yaml"
            )
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise UserError(
                f"cannot resume {self.run_dir}: checkpoint does not fit the model: "
                f"{str(err).splitlines()[0]}"
            ) from None
        self.method.load_state_dict(state["method"])
        self.optimizer, self.scheduler = self._build_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.weighting.load_state_dict(state["weighting"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate((3, tuple(state["rng"]["python"]), None))
        self.iteration = int(state["iteration"])
        self.best = state["best"]
        self.skipped_steps = int(state.get("skipped_steps", 0))
