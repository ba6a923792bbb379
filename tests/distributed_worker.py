"""Run under ``torchrun --nproc_per_node=2`` by tests/test_distributed.py (CONFIG is the tiny
preset); what each process ends with is saved to ``OUT/checks<r>.pt`` and
``OUT/<part>/rank<r>.pt``.

1. checks: each synchronisation point against an independent single-process computation.
2. ``run``: the tiny preset as is (per-process BatchNorm statistics and dropout streams), 6
   iterations, with the session and Trainer of ``adapmtl train``: the replicas must end equal.
3. ``split_invariant``: the tiny preset made independent of how a batch is split (no dropout,
   BatchNorm on its running statistics), 12 iterations: must equal one process up to rounding.
4. ``skip``: a NaN loss on rank 1 only, with ``train.on_nonfinite: skip``.
5. ``resumed``: run 2 continued to 8 iterations by two processes, each reading ``last.pt``.
6. ``diverge``: SNIP with one more weight pruned on rank 1 only: both processes stop.
7. ``disparse``: DiSparse dynamic, its regrowth shared from rank 0 at every update.
8. ``paper``: the paper recipe (thresholds learnt through the optimizer): re-wrapped at the
   freeze by the trainer."""

from __future__ import annotations

import copy
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from adapmtl.build import build_run_dataset as build_dataset
from adapmtl.build import build_run_method
from adapmtl.build import build_run_model as build_model
from adapmtl.build import build_run_tasks as build_tasks
from adapmtl.config import from_dict, load_config
from adapmtl.engine.distributed import Distributed, MainRankError, ParallelModel, session
from adapmtl.engine.evaluate import evaluate
from adapmtl.engine.sampling import ShardedEvalSampler
from adapmtl.engine.trainer import Trainer
from adapmtl.errors import UserError
from adapmtl.sparsity import current_masks, freeze_masks, set_masks, thresholds

SETTINGS = {
    "model": {
        "name": "deeplab_resnet34_cpu",
        "options": {"width": 0.125, "head_channels": 8, "dropout": 0.0},
    },
    "tasks": {"preset": "scenes", "names": ["seg", "depth"]},
    "data": {"name": "scenes", "options": {"size": [16, 16]}, "val_options": {"n": 7}},
    "method": {"name": "adapmtl", "target": 0.5, "options": {"init": -3.0}},
    "train": {"device": "cpu", "threads": 1},
}


def _raise_on_main() -> None:
    raise UserError("output directory is not writable (seen by rank 0)")


def _fail_on_rank_one(dist: Distributed) -> None:
    if dist.rank == 1:
        raise UserError("checkpoint /not/shared/last.pt does not exist")


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def weighted_loss(model, tasks, images, targets) -> torch.Tensor:
    outputs = model(images)
    losses = [task.loss(outputs[name], targets[name]) for name, task in tasks.items()]
    return sum(weight * loss for weight, loss in zip((0.7, 1.3), losses, strict=True))


def check_synchronisation(dist: Distributed, out: Path) -> None:
    # the paper recipe: its thresholds learn through the optimizer, so DDP must average their
    # gradients (the recommended recipe moves them without gradients)
    paper = {**SETTINGS["method"], "options": {"recipe": "paper", "init": -3.0}}
    config = from_dict({**SETTINGS, "method": paper})
    seen: dict[str, object] = {"rank": dist.rank}

    # rank 0's error reaches every rank
    try:
        dist.on_main(_raise_on_main)
    except MainRankError as err:
        seen["on_main"] = ("MainRankError", str(err))
    except UserError as err:
        seen["on_main"] = ("UserError", str(err))

    # every rank runs it; rank 1's error stops both, rank 0 naming rank 1
    try:
        dist.each(lambda: _fail_on_rank_one(dist), " (a hint)")
        seen["each"] = None
    except MainRankError as err:
        seen["each"] = ("MainRankError", str(err))
    except UserError as err:
        seen["each"] = ("UserError", str(err))
    seen["each_ok"] = dist.each(lambda: 10 + dist.rank)

    # values that differ between ranks are caught; equal ones pass
    dist.check_same({"a": 1}, "a value equal everywhere")
    try:
        dist.check_same(dist.rank, "the rank number")
        seen["check_same"] = None
    except UserError as err:
        seen["check_same"] = str(err)

    torch.manual_seed(0)
    tasks = build_tasks(config)
    model = build_model(config, tasks)
    build_run_method(config).prepare(model)
    val = build_dataset(config, "val", tasks, train=False)

    # evaluation: each rank its batches, statistics summed = one process over all batches
    sharded = DataLoader(val, batch_sampler=ShardedEvalSampler(7, 3, rank=dist.rank, world_size=2))
    seen["eval_sharded"] = evaluate(
        model, tasks, sharded, torch.device("cpu"), reduce_state=dist.sum_state
    )
    seen["eval_single"] = evaluate(model, tasks, DataLoader(val, batch_size=3), torch.device("cpu"))

    # gradients through DDP = the mean of the gradients of the two halves of the batch
    images, targets = next(iter(DataLoader(val, batch_size=4)))
    reference = copy.deepcopy(model)
    halves = []
    for half in range(2):
        reference.zero_grad()
        part = slice(2 * half, 2 * half + 2)
        weighted_loss(
            reference, tasks, images[part], {k: v[part] for k, v in targets.items()}
        ).backward()
        halves.append(gradients(reference))
    seen["grad_reference"] = {k: (halves[0][k] + halves[1][k]) / 2 for k in halves[0]}
    parallel = ParallelModel(model, dist, torch.device("cpu"))
    mine = slice(2 * dist.rank, 2 * dist.rank + 2)
    model.zero_grad()
    weighted_loss(
        parallel, tasks, images[mine], {k: v[mine] for k, v in targets.items()}
    ).backward()
    seen["grad_ddp"] = gradients(model)
    seen["threshold_names"] = [f"sparsity_thresholds.{k}" for k in thresholds(model)]

    # freezing the masks stops the thresholds' gradients: the next step re-wraps and runs
    freeze_masks(model)
    model.zero_grad()
    weighted_loss(
        parallel, tasks, images[mine], {k: v[mine] for k, v in targets.items()}
    ).backward()
    seen["wraps"] = parallel.wraps
    seen["grad_after_freeze"] = gradients(model)

    # no buffer travels with a forward pass: each rank keeps its own BatchNorm statistics until
    # sync_buffers gives it rank 0's
    norm = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    norm.running_mean.fill_(float(dist.rank))
    model.eval()
    parallel(images[mine])
    seen["running_mean_after_forward"] = norm.running_mean.clone()
    parallel.sync_buffers()
    seen["running_mean_after_sync"] = norm.running_mean.clone()
    model.train()

    # a mask change (the same on every rank) needs no re-wrap; the agreement vectors match
    masks = current_masks(model)
    path = next(iter(masks))
    fewer = masks[path].clone()
    fewer.view(-1)[: fewer.numel() // 2] = False
    set_masks(model, {path: fewer})
    parallel(images[mine])
    seen["wraps_after_mask_change"] = parallel.wraps
    seen["agreement_same"] = parallel.disagreement(dist.sum(parallel.agreement())).item()
    # a mask changed on rank 0 only is seen in the summed agreement vectors
    if dist.rank == 0:
        fewer = fewer.clone()
        fewer.view(-1)[fewer.numel() // 2 :] = False
        set_masks(model, {path: fewer})
    parallel(images[mine])
    seen["agreement_diverged"] = parallel.disagreement(dist.sum(parallel.agreement())).item()

    # rank 0's tensors reach every rank as tensors: nothing holding a tensor is pickled
    with record_pickled() as pickled:
        shared = dist.broadcast_tensors(
            {"mask": torch.rand(5) > 0.5 if dist.rank else torch.ones(5, dtype=torch.bool)}
        )
        state = {"w": [torch.full((2, 3), float(dist.rank)), 4 + dist.rank], "t": (dist.rank,)}
        seen["shared_state"] = dist.broadcast_state(state, torch.device("cpu"))
    seen["shared_mask"] = shared["mask"]
    seen["pickled_tensors"] = holds_tensors(pickled)
    torch.save(seen, out / f"checks{dist.rank}.pt")


def holds_tensors(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, dict):
        return any(holds_tensors(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(holds_tensors(v) for v in value)
    return False


@contextmanager
def record_pickled() -> Iterator[list]:
    """Every object broadcast with broadcast_object_list meanwhile (rank 0's, as sent)."""
    seen: list = []
    original = torch.distributed.broadcast_object_list

    def recording(objects, *args, **kwargs):
        seen.extend(objects)
        return original(objects, *args, **kwargs)

    torch.distributed.broadcast_object_list = recording
    try:
        yield seen
    finally:
        torch.distributed.broadcast_object_list = original


class SplitInvariantTrainer(Trainer):
    """BatchNorm normalises with its running statistics during training too (they then stay at
    their initial values), so a batch's gradient is the mean of its images' gradients however
    the batch is split over processes. With dropout off, N processes and one compute the same
    training run up to rounding."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for module in self.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train = self._stay_in_eval_mode(module)
                module.training = False

    @staticmethod
    def _stay_in_eval_mode(module: nn.Module):
        def train(mode: bool = True) -> nn.Module:
            return module

        return train


# "equal up to rounding" needs a run that is continuous in its weights: the default threshold
# 'auto' gives BatchNorm-fed layers the soft threshold without regrowth, which stops a weight the
# step it crosses the threshold, so a rounding-level difference can stop one process's copy and
# not the other's (seen: one backbone weight 0.01 apart after 12 iterations); the hard threshold
# with regrowth keeps updating every weight
SPLIT_INVARIANT = ["model.options.dropout=0.0", "method.options.threshold=hard"]


# every collective but the all-reduces (the step's one and DDP's gradient buckets)
OTHER_COLLECTIVES = (
    "broadcast", "_broadcast_coalesced", "all_gather", "all_gather_object",
    "broadcast_object_list",
)  # fmt: skip


@contextmanager
def count_collectives() -> Iterator[list[str]]:
    """The names of the other collectives called meanwhile (DDP calls them through
    ``torch.distributed`` too)."""
    seen: list[str] = []
    originals = {name: getattr(torch.distributed, name) for name in OTHER_COLLECTIVES}

    def recording(name, original):
        def call(*args, **kwargs):
            seen.append(name)
            return original(*args, **kwargs)

        return call

    for name, original in originals.items():
        setattr(torch.distributed, name, recording(name, original))
    try:
        yield seen
    finally:
        for name, original in originals.items():
            setattr(torch.distributed, name, original)


class CountingTrainer(Trainer):
    """Records the collectives other than all-reduces of every training step."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.collectives: list[list[str]] = []

    def train_step(self, batch):
        with count_collectives() as seen:
            scalars = super().train_step(batch)
        self.collectives.append(seen)
        return scalars


def train(dist: Distributed, trainer_class: type, config, out: Path) -> None:
    trainer = trainer_class(config, out, verbose=False, dist=dist)
    results = trainer.fit()
    final = {
        "model": trainer.model.state_dict(),
        "weighting": trainer.weighting.state_dict(),
        "task_weights": trainer.weighting.weights,
        "method": trainer.method.state_dict(),
        "wraps": trainer.parallel.wraps,
        "collectives": getattr(trainer, "collectives", None),
        "results": results,
    }
    torch.save(final, out / f"rank{dist.rank}.pt")


class NanOnRankOne(Trainer):
    """The depth loss is NaN on rank 1 only, at the second step."""

    def _task_losses(self, batch, forward=None, **options):
        losses = super()._task_losses(batch, forward, **options)
        if forward is not None and self.iteration == 1 and self.dist.rank == 1:
            losses["depth"] = losses["depth"] * float("nan")
        return losses


def skip_on_one_rank(dist: Distributed, config_path: str, out: Path) -> None:
    """``on_nonfinite: skip`` with a NaN on one process: every process skips the same step."""
    config = load_config(config_path, ["train.on_nonfinite=skip", "train.iterations=3"])
    trainer = NanOnRankOne(config, out, verbose=False, dist=dist)
    results = trainer.fit()
    final = {
        "skipped_steps": results["skipped_steps"],
        "weighting_steps": trainer.weighting.step,
        "model": trainer.model.state_dict(),
    }
    torch.save(final, out / f"rank{dist.rank}.pt")


class MaskOnRankOne(Trainer):
    """Rank 1 alone prunes one more weight before the third step."""

    def train_step(self, batch):
        if self.iteration == 2 and self.dist.rank == 1:
            path, mask = next(iter(current_masks(self.model).items()))
            mask = mask.clone()
            mask.view(-1)[mask.view(-1).nonzero()[0]] = False
            set_masks(self.model, {path: mask})
        return super().train_step(batch)


def diverge_on_one_rank(dist: Distributed, config_path: str, out: Path) -> None:
    settings = yaml.safe_load(Path(config_path).read_text())
    config = from_dict({**settings, "method": {"name": "snip", "target": 0.5}})
    trainer = MaskOnRankOne(config, out, verbose=False, dist=dist)
    try:
        trainer.fit()
        seen = None
    except UserError as err:
        seen = (trainer.iteration, str(err))
    torch.save(seen, out / f"rank{dist.rank}.pt")


def resume_with_two(dist: Distributed, config_path: str, run: Path, out: Path) -> None:
    """Continue the 6-iteration run to 8 with two processes, each reading last.pt itself."""
    if dist.is_main:
        shutil.copytree(run, out)
    dist.barrier()
    config = load_config(config_path, ["train.iterations=8"])
    with record_pickled() as pickled:
        trainer = Trainer(config, out, resume=True, verbose=False, dist=dist)
    start = trainer.iteration
    trainer.fit()
    final = {
        "start": start,
        "model": trainer.model.state_dict(),
        "pickled_tensors": holds_tensors(pickled),
    }
    torch.save(final, out / f"rank{dist.rank}.pt")


def main(config_path: str, out: str) -> None:
    torch.set_num_threads(1)
    with session("cpu") as dist:
        check_synchronisation(dist, Path(out))
        plain = load_config(config_path, ["train.iterations=6"])
        train(dist, CountingTrainer, plain, Path(out) / "run")
        resume_with_two(dist, config_path, Path(out) / "run", Path(out) / "resumed")
        settings = yaml.safe_load(Path(config_path).read_text())
        dynamic = {"mode": "dynamic", "update_every": 2}
        disparse = {"name": "disparse", "target": 0.5, "options": dynamic}
        disparse_config = from_dict({**settings, "method": disparse})
        train(dist, CountingTrainer, disparse_config, Path(out) / "disparse")
        paper = {
            **settings["method"],
            "options": {**settings["method"]["options"], "recipe": "paper"},
        }
        paper_config = from_dict({**settings, "method": paper})
        train(dist, CountingTrainer, paper_config, Path(out) / "paper")
        diverge_on_one_rank(dist, config_path, Path(out) / "diverge")
        split_invariant = load_config(config_path, SPLIT_INVARIANT)
        train(dist, SplitInvariantTrainer, split_invariant, Path(out) / "split_invariant")
        skip_on_one_rank(dist, config_path, Path(out) / "skip")


if __name__ == "__main__":
    main(*sys.argv[1:])
