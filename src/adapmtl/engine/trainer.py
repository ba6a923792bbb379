"""The iteration-based trainer (paper Section 4.1.4): Adam, step decay, validation every N
iterations, best checkpoint by Delta_T (or validation loss), exact resume.

Step order: forward, per-task losses, (DDP: losses all-reduced), task weights (weighting),
weighted loss, backward (DDP: gradients all-reduced), one host read of the step's health
(:class:`StepHealth`), ``method.after_backward`` (controller, masks), optimizer step, scheduler
step, ``method.after_step``. Nothing else in the step reads the device (docs/architecture.md).

Under torchrun every process runs this trainer on its slice of each global batch
(docs/distributed.md); only rank 0 writes files. Faults (docs/reliability.md): checkpoints are
atomic, SIGINT/SIGTERM stop after the current step with a checkpoint, a non-finite loss stops
the run (or skips the step) and is never saved.

This module is the loop; the run directory is :mod:`adapmtl.rundir`, what a checkpoint holds
:mod:`adapmtl.engine.state`, the loaders :mod:`adapmtl.engine.loaders` and the step's health
:mod:`adapmtl.engine.health`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from adapmtl.atomic import write_text
from adapmtl.build import (
    build_run_dataset,
    build_run_method,
    build_run_model,
    build_run_tasks,
    build_run_weighting,
)
from adapmtl.checkpoint import (
    check_free_space,
    estimated_size,
    load_checkpoint,
    load_model_state,
    remove_partial_writes,
    save_checkpoint,
)
from adapmtl.config import Config
from adapmtl.engine.allocator import keep_freed_memory
from adapmtl.engine.distributed import Distributed, ParallelModel
from adapmtl.engine.evaluate import evaluate
from adapmtl.engine.health import NonFiniteLossError, StepHealth
from adapmtl.engine.interrupt import (
    StopRequest,
    TrainingInterruptedError,
    catch,
)
from adapmtl.engine.loaders import RunLoaders, to_device
from adapmtl.engine.logging import RunLogger
from adapmtl.engine.precision import Precision
from adapmtl.engine.reach import check_threshold_reach
from adapmtl.engine.state import (
    check_resumable,
    checkpoint_state,
    init_from_run,
    rank_seed,
    restore_rng,
    rng_state,
)
from adapmtl.errors import UserError
from adapmtl.methods import TrainingContext
from adapmtl.rundir import final_results, prepare_run_dir, truncate_log, write_run_files
from adapmtl.sparsity import (
    batched_thresholds,
    is_sparsified,
    keep_masks_in_weights,
    overall_sparsity,
    report,
)
from adapmtl.sparsity.target import target_fields
from adapmtl.tasks.score import load_reference, normalised_score

SHARED = (
    " (every process reads checkpoints itself: under torchrun on several machines the run "
    "directory and --init-from must be on a file system they share, docs/distributed.md)"
)


FUSED_ADAM_DEVICES = ("cpu", "cuda")
"""Devices on which ``optim.fused`` selects Adam's fused kernel (elsewhere PyTorch chooses)."""


def _validation_text(results: dict[str, Any]) -> str:
    """``seg miou 0.3296, depth abs_err 2.349, ΔT -12.34 %``: each task's main metric (its
    first, as the paper's tables list them) and Delta_T when a reference is set."""
    parts = []
    for task, values in results["metrics"].items():
        metric, value = next(iter(values.items()))
        parts.append(f"{task} {metric} {value:.4g}")
    if "delta_t" in results:
        parts.append(f"ΔT {results['delta_t']['overall']:+.2f} %")
    return ", ".join(parts)


class Trainer:
    """Trains one run described by ``config`` into ``run_dir``.

    ``resume`` continues ``run_dir/last.pt`` (the result equals an uninterrupted run, with the
    same or a different number of processes); ``init_from`` starts a new run from another run's
    weights (and thresholds where present), for example to prune a 60 % model further to 90 %.
    ``dist`` places this process in a torchrun job (:func:`adapmtl.engine.distributed.session`).

    Once built, ``model`` (prepared by the method: sparsified for AdapMTL), ``tasks``,
    ``method``, ``weighting``, ``optimizer`` and the datasets are in place and can be inspected
    before :meth:`fit`; ``adapmtl.train`` is this with :meth:`fit` (docs/python_api.md).
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
        dist: Distributed | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.dist = dist or Distributed()
        self.dist.check_same(config.to_dict(), "the run config")
        if config.data.batch_size % self.dist.world_size:
            raise UserError(
                f"data.batch_size: the global batch of {config.data.batch_size} does not split "
                f"evenly over {self.dist.world_size} processes"
            )
        resume_state = None
        if resume:
            self.dist.on_main(lambda: prepare_run_dir(self.run_dir, resume=True, overwrite=False))
            resume_state = self.dist.each(lambda: load_checkpoint(self.run_dir / "last.pt"), SHARED)
        self.config = config
        self.device = self.dist.device(config.train.device)
        if config.train.threads is not None:
            torch.set_num_threads(config.train.threads)
        if config.train.keep_freed_memory:
            keep_freed_memory()
        if config.train.deterministic:
            # cuBLAS is deterministic only with a fixed workspace (read when its first handle
            # is created, so set before the model reaches the GPU); a no-op on the CPU
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = config.train.cudnn_benchmark
        self.precision = Precision(config.train.autocast, self.device)
        torch.manual_seed(config.train.seed)
        random.seed(config.train.seed)

        self.tasks = build_run_tasks(config)
        self.model = build_run_model(config, self.tasks)
        self.method = build_run_method(config)
        init_state = None
        if init_from is not None:
            init_state = self.dist.each(lambda: load_checkpoint(init_from), SHARED)
        self.method.prepare(self.model)
        if init_state is not None:
            init_from_run(self.model, init_state, Path(init_from))
        if self.method.level_from_threshold_travel:
            check_threshold_reach(config, self.model)
        self.model.to(self.device)
        if self.dist.rank > 0:  # identical weights, but dropout of its own on every process
            torch.manual_seed(rank_seed(config.train.seed, self.dist.rank, 0))
        self.parallel = ParallelModel(self.model, self.dist, self.device)
        self.weighting = build_run_weighting(config, self.tasks, self.model)
        self.optimizer, self.scheduler = self._build_optimizer()
        self.reference = None
        if config.eval.reference:
            reference = config.eval.reference
            self.reference = self.dist.on_main(
                lambda: load_reference(reference, "eval.reference", self.tasks)
            )

        self.train_set = build_run_dataset(config, config.data.train_split, self.tasks, train=True)
        self.val_set = build_run_dataset(config, config.data.val_split, self.tasks, train=False)
        self.loaders = RunLoaders(self.train_set, self.val_set, config, self.dist, self.device)
        self.iteration = 0
        self.masks_in_weights = False
        """True once the final masks are kept in the weights (:meth:`train_step`)."""
        self.skipped_steps = 0
        self.best: dict[str, Any] | None = None
        self.stop_request = StopRequest()
        self.stop_signal: int | None = None
        self.finished_results: dict[str, Any] | None = None
        """The results of a resumed run that had already finished (``fit`` then changes
        nothing and returns them)."""
        if resume_state is not None:
            self._load_state(resume_state)
            self.finished_results = self.dist.on_main(self._finished_results)
            if self.finished_results is None:
                self.dist.on_main(self._prepare_resumed_dir)
        else:
            self.dist.on_main(lambda: self._prepare_new_dir(overwrite))
        self.logger = RunLogger(
            self.run_dir,
            config.train.iterations,
            self.iteration,
            enabled=self.dist.is_main and self.finished_results is None,
            console=verbose,
        )
        self.context = TrainingContext(
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            iterations=config.train.iterations,
            batches=self.loaders.scoring_batches,
            task_losses=self._task_losses,
            reset_optimizer=self._reset_optimizer,
            device=self.device,
            share=self.dist.broadcast_tensors,
        )

    def _finished_results(self) -> dict[str, Any] | None:
        """results.json when the checkpoint is at ``train.iterations`` and results.json
        describes that iteration, else None."""
        if self.iteration < self.config.train.iterations:
            return None
        return final_results(self.run_dir, self.iteration)

    def _prepare_resumed_dir(self) -> None:
        remove_partial_writes(self.run_dir)
        truncate_log(self.run_dir / "log.jsonl", self.iteration)
        present = sum((self.run_dir / name).exists() for name in ("last.pt", "best.pt"))
        check_free_space(self.run_dir, self._checkpoint_size() * (3 - present))
        config_file = self.run_dir / "config.yaml"
        if not config_file.is_file() or config_file.read_text() != self.config.to_yaml():
            write_text(config_file, self.config.to_yaml())  # train.iterations was raised

    def _prepare_new_dir(self, overwrite: bool) -> None:
        space = self._checkpoint_size() * 3  # last.pt, best.pt and one temporary copy
        prepare_run_dir(self.run_dir, resume=False, overwrite=overwrite, space_needed=space)
        write_run_files(
            self.run_dir,
            self.config.to_yaml(),
            seed=self.config.train.seed,
            device=str(self.device),
            world_size=self.dist.world_size,
        )

    def _checkpoint_size(self) -> int:
        """Model state plus Adam's two moments per trainable weight."""
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        return estimated_size([*self.model.state_dict().values(), *trainable, *trainable])

    def _build_optimizer(self) -> tuple[torch.optim.Optimizer, Any]:
        optim = self.config.optim
        groups = self.method.param_groups(
            self.model,
            lr=optim.lr,
            weight_decay=optim.weight_decay,
            threshold_lr=optim.threshold_lr,
            threshold_weight_decay=optim.threshold_weight_decay,
        )
        fused = optim.fused and self.device.type in FUSED_ADAM_DEVICES
        optimizer = torch.optim.Adam(
            groups, lr=optim.lr, betas=tuple(optim.betas), fused=True if fused else None
        )
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, optim.lr_step, optim.lr_gamma)
        return optimizer, scheduler

    def _reset_optimizer(self) -> None:
        """Fresh optimizer state and learning-rate schedule (LTH rewinding)."""
        self.optimizer, self.scheduler = self._build_optimizer()
        self.context.optimizer, self.context.scheduler = self.optimizer, self.scheduler

    # ----------------------------------------------------------------- data
    def _train_batches(self) -> Iterator[Any]:
        """This process's slice of every global batch, from the current iteration on."""
        return self.loaders.train_batches(self.iteration)

    # ----------------------------------------------------------------- steps
    def _task_losses(
        self, batch: Any, forward: Any = None, *, check_values: bool = True
    ) -> dict[str, torch.Tensor]:
        """Unweighted per-task losses; ``forward`` defaults to the bare model (no DDP), which
        is what methods score with. ``check_values=False`` (the training step) reads nothing on
        the host: a non-finite prediction gives a non-finite loss, which the step's health check
        catches, and invalid targets are reported by :meth:`_target_problems`."""
        images, targets = batch
        # the training step runs in mixed precision when configured; losses are float32
        outputs = self.model(images) if forward is None else self.precision.forward(forward, images)
        losses = {}
        for name, task in self.tasks.items():
            if not check_values:
                losses[name] = task.loss(outputs[name], targets[name], check_values=False)
            elif torch.isfinite(outputs[name]).all():
                losses[name] = task.loss(outputs[name], targets[name])
            else:  # the tasks refuse non-finite predictions; on_nonfinite decides what follows
                losses[name] = torch.full((), float("nan"), device=outputs[name].device)
        return losses

    def _target_problems(self, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """One flag per task, on the device: the batch holds target values its task rejects."""
        return torch.stack([task.target_problem(targets[n]) for n, task in self.tasks.items()])

    def _synchronise(
        self, losses: torch.Tensor, problems: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The mean of every process's task losses (what the weighting sees, so all processes
        compute the same task weights), the counts over the processes of the stop requests
        per signal followed by the target problems per task, and how far the processes disagree
        on the model's structure and masks (zero when they agree,
        :meth:`ParallelModel.disagreement`). All stay on the device, unread: one all-reduce per
        step."""
        stops = torch.tensor(self.stop_request.vector(), dtype=torch.float64, device=losses.device)
        counts = torch.cat([stops, problems.double()])
        if not self.dist.enabled:
            return losses, counts, torch.zeros((), dtype=torch.float64, device=losses.device)
        agreement = self.parallel.agreement()
        total = self.dist.sum(torch.cat([losses.double(), counts, agreement]))
        tasks, end = len(losses), len(losses) + len(counts)
        mean = (total[:tasks] / self.dist.world_size).to(losses.dtype)
        return mean, total[tasks:end], self.parallel.disagreement(total[end:])

    def _check_agreement(self, disagreement: float) -> None:
        if disagreement:
            raise UserError(
                "the processes disagree on the trainable parameters or masks (a pruning "
                f"decision taken on some processes only, by iteration {self.iteration}); stopping"
            )

    def _gradient_bound(self) -> torch.Tensor:
        """The largest |gradient| of the model (NaN or Inf when one is not finite), computed with
        the fused multi-tensor kernels; gradients are all-reduced by now, so every process
        decides alike."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not grads:
            return torch.zeros((), device=self.device)
        return torch.nn.utils.get_total_norm(grads, norm_type=math.inf)

    def _logs_at(self, iteration: int) -> bool:
        """Whether the step that ends at ``iteration`` logs its scalars."""
        return iteration % self.config.train.log_every == 0 or (
            iteration == self.config.train.iterations
        )

    @staticmethod
    def read(values: torch.Tensor) -> list[float]:
        """The one host read of a training step (a GPU synchronisation)."""
        return values.tolist()

    def _raise_target_problem(self, name: str, batch: Any) -> None:
        """The task's own message for the targets it rejects (from this process's batch, or
        naming another process when the problem is in its slice)."""
        images, targets = batch
        self.model.eval()
        with torch.no_grad():
            prediction = self.model(images)[name]
        self.model.train()
        self.tasks[name].check(prediction, targets[name])
        raise self.tasks[name].error(
            "the batch of another process holds target values the task rejects (its message "
            "names them)"
        )

    def _problem(self, health: StepHealth, batch: Any) -> str | None:
        """What is wrong with this step: a rejected target (raised), a non-finite loss or
        gradient (returned, for ``train.on_nonfinite``)."""
        for name, problems in zip(self.tasks, health.problems, strict=True):
            if problems:
                self._raise_target_problem(name, batch)
        for name, loss in zip(self.tasks, health.losses, strict=True):
            if not math.isfinite(loss):
                return f"loss of task {name!r} is {loss} at iteration {self.iteration + 1}"
        if not math.isfinite(health.gradient_bound):
            name = next(
                n
                for n, p in self.model.named_parameters()
                if p.grad is not None and not torch.isfinite(p.grad).all()
            )
            return f"gradient of {name!r} is not finite at iteration {self.iteration + 1}"
        return None

    def _nonfinite(self, message: str) -> bool:
        """Apply ``train.on_nonfinite``: False (skip the step) or raise."""
        if self.config.train.on_nonfinite == "skip":
            self.skipped_steps += 1
            self.logger.message(f"{message}; step skipped ({self.skipped_steps} so far)")
            return False
        raise NonFiniteLossError(
            f"{message}; stopping. {self._last_good()} "
            "(set train.on_nonfinite: skip to skip such steps instead)"
        )

    def _last_good(self) -> str:
        last = self.run_dir / "last.pt"
        if self.iteration > 0 and last.is_file():
            return f"The last good checkpoint, {last}, is kept"
        return "No checkpoint was written yet"

    def train_step(self, batch: Any) -> dict[str, float] | None:
        """One optimisation step; None when ``on_nonfinite: skip`` skipped it, else the scalars
        to log ({} on the steps that do not log).

        The step reads the device once (:meth:`read`, :class:`StepHealth`), after backward. A
        step with a non-finite loss undoes its weighting update before it is skipped."""
        self.model.train()
        with self._batched_thresholds():
            losses = self._task_losses(batch, self.parallel, check_values=False)
        vector = torch.stack(list(losses.values()))
        mean, counts, disagreement = self._synchronise(
            vector.detach(), self._target_problems(batch[1])
        )
        if self.parallel.rewrapped:  # before DDP's backward could wait on another parameter list
            self._check_agreement(self.read(disagreement[None])[0])
        skip = self.config.train.on_nonfinite == "skip"
        weighting_state = self.weighting.state_dict() if skip else None
        weights = self.weighting.update(mean, validate=False).to(vector)
        total = (weights * vector).sum()
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.backward(total, self.optimizer)
        logged = weights.detach() if self._logs_at(self.iteration + 1) else None
        health = StepHealth.read(
            self.read, mean, counts, disagreement, self._gradient_bound(), logged
        )
        self._check_agreement(health.disagreement)
        self.stop_signal = StopRequest.signal_of(health.stops)
        overflow = not math.isfinite(health.gradient_bound) and not any(health.problems)
        if overflow and health.losses_finite and self.precision.overflow():
            self.optimizer.zero_grad(set_to_none=True)  # fp16 overflow: a smaller scale next
            return {}
        problem = self._problem(health, batch)
        if problem is not None:
            if weighting_state is not None and not health.losses_finite:
                self.weighting.load_state_dict(weighting_state)
            self.optimizer.zero_grad(set_to_none=True)
            self.precision.stepped()
            self._nonfinite(problem)
            return None
        self.method.after_backward(self.context, self.iteration)
        self.optimizer.step()
        self.precision.stepped()
        self.scheduler.step()
        self.method.after_step(self.context, self.iteration)
        self._keep_final_masks_in_weights()
        return health.scalars(list(self.tasks))

    def _batched_thresholds(self) -> contextlib.AbstractContextManager:
        """The thresholds in one node for this step's forward
        (``train.batched_thresholds``)."""
        if self.config.train.batched_thresholds:
            return batched_thresholds(self.model)
        return contextlib.nullcontext()

    def _keep_final_masks_in_weights(self) -> None:
        """Switch the masks to the weights once the method says they are final (once per run
        and per resume: a loaded checkpoint returns every layer to ``W * M``)."""
        if self.masks_in_weights or not self.config.train.masks_in_weights:
            return
        if self.method.masks_final():
            keep_masks_in_weights(self.model, self.optimizer)
            self.masks_in_weights = True

    def fit(self) -> dict[str, Any]:
        """Train to ``train.iterations``; returns the final results (also in results.json).

        Raises :class:`TrainingInterruptedError` after writing a checkpoint when SIGINT/SIGTERM
        arrived, and :class:`NonFiniteLossError` on a NaN/Inf loss (``on_nonfinite: stop``).
        A resumed run that had finished is left as it is: its results are returned."""
        if self.finished_results is not None:
            self.logger.close()
            return dict(self.finished_results)
        config = self.config.train
        if self.iteration == 0:
            self.method.on_start(self.context)
            self._share_method_state()
        batches = self._train_batches()
        results: dict[str, Any] = {}
        started = time.perf_counter()
        try:
            with catch() as self.stop_request:
                while self.iteration < config.iterations:
                    scalars = self.train_step(to_device(next(batches), self.device))
                    self.iteration += 1
                    done = self.iteration == config.iterations
                    if scalars:
                        self._log_train(scalars)
                    if self.iteration % config.val_every == 0 or done:
                        results = self._validate()
                    stopping = self.stop_signal is not None and not done
                    if self.iteration % config.checkpoint_every == 0 or done or stopping:
                        self._save("last.pt")
                    if stopping:
                        raise self._interrupted()
                if not results:  # resumed at its last iteration, with no results.json yet
                    results = self._validate()
        finally:
            self.logger.close()
        results["train_seconds"] = time.perf_counter() - started
        results["skipped_steps"] = self.skipped_steps
        results["best"] = self.best
        if self.dist.is_main:
            self._write_results(results)
        return results

    def _share_method_state(self) -> None:
        """Decisions taken before the first step (scoring at initialisation) are rank 0's: its
        method state goes to every process, its weights and masks with the first DDP wrap."""
        if not self.dist.enabled:
            return
        state = self.dist.broadcast_state(self.method.state_dict(), self.device)
        if not self.dist.is_main:
            self.method.load_state_dict(state)

    def _interrupted(self) -> TrainingInterruptedError:
        self.dist.barrier()  # the checkpoint is complete before any process exits
        assert self.stop_signal is not None
        name = signal.Signals(self.stop_signal).name
        under = " (under torchrun, with any number of processes)" if self.dist.enabled else ""
        return TrainingInterruptedError(
            self.stop_signal,
            f"stopped by {name} after iteration {self.iteration} of "
            f"{self.config.train.iterations}; checkpoint written to {self.run_dir / 'last.pt'}. "
            f"Resume with: adapmtl train --out {self.run_dir} --resume{under}",
        )

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
        self._check_weights()
        self.parallel.sync_buffers()
        evaluation = evaluate(
            self.model,
            self.tasks,
            self.loaders.val_loader(),
            self.device,
            reduce_state=self.dist.sum_state if self.dist.enabled else None,
        )
        results: dict[str, Any] = {"iteration": self.iteration, **evaluation}
        if is_sparsified(self.model):
            rep = report(self.model).to_dict()
            results["sparsity"] = {k: rep[k] for k in ("overall", "components", "thresholds")}
        results["method"] = self.method.summary()
        sparsity = overall_sparsity(self.model) if is_sparsified(self.model) else None
        results.update(target_fields(self.method.target, sparsity))
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
        self.logger.message(f"[{self.iteration}] val {_validation_text(results)}")
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
            self._save("best.pt")

    def _write_results(self, results: dict[str, Any]) -> None:
        write_text(self.run_dir / "results.json", json.dumps(results, indent=2) + "\n")

    # ------------------------------------------------------------ checkpoints
    def _save(self, name: str) -> None:
        """Write a checkpoint (rank 0) — never one holding non-finite weights."""
        self._check_weights()
        self.parallel.sync_buffers()
        rng_per_rank = self.dist.gather(rng_state(self.device))
        if self.dist.is_main:
            save_checkpoint(self._state(rng_per_rank), self.run_dir / name)

    def _check_weights(self) -> None:
        bad = next(
            (
                key
                for key, value in self.model.state_dict().items()
                if value.is_floating_point() and not torch.isfinite(value).all()
            ),
            None,
        )
        if bad is not None:
            raise NonFiniteLossError(
                f"weight {bad!r} became NaN or Inf by iteration {self.iteration}; stopping "
                f"without saving it. {self._last_good()}"
            )

    def _state(self, rng_per_rank: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        return checkpoint_state(
            iteration=self.iteration,
            config=self.config,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            weighting=self.weighting,
            method=self.method,
            rng_per_rank=rng_per_rank,
            best=self.best,
            skipped_steps=self.skipped_steps,
            scaler=self.precision.state_dict(),
        )

    def _load_state(self, state: dict[str, Any]) -> None:
        check_resumable(state, self.config, self.run_dir)
        mismatch = load_model_state(self.model, state["model"])
        if mismatch is not None:
            raise UserError(
                f"cannot resume {self.run_dir}: last.pt does not fit the model: {mismatch}"
            )
        self.method.load_state_dict(state["method"])
        self.optimizer, self.scheduler = self._build_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.weighting.load_state_dict(state["weighting"])
        self.iteration = int(state["iteration"])
        restore_rng(state["rng"], self.dist, self.device, self.config.train.seed, self.iteration)
        self.best = state["best"]
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.precision.load_state_dict(state.get("scaler"))
