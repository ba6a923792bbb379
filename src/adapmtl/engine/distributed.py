"""Multi-process training with plain ``torch.distributed`` (``torchrun``), no extra framework.

``torchrun --nproc_per_node=N -m adapmtl train ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment; :func:`session` joins them into one
process group (NCCL on CUDA, gloo on the CPU) and gives each its device (``cuda:LOCAL_RANK``).

What is synchronised, and how (docs/distributed.md):

* gradients, thresholds' included — :class:`ParallelModel` (DistributedDataParallel), re-wrapped
  whenever the set of trainable parameters or of buffers changes (the controller freezing the
  masks stops the thresholds' gradients and installs mask buffers);
* the per-task losses given to the adaptive weighting, and the stop requests of
  SIGINT/SIGTERM — one all-reduce per step (:meth:`Distributed.sum`);
* metrics — their sufficient statistics are summed (:meth:`Distributed.sum_state`);
* decisions — every method decides from rank-identical data; one-off work (preparing the run
  directory, reading checkpoints) runs on rank 0 and its outcome is broadcast (:meth:`on_main`).
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from adapmtl.errors import UserError

T = TypeVar("T")


class MainRankError(UserError):
    """An error that rank 0 hit and reports; the other ranks exit quietly with the same code."""


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job. ``Distributed()`` is a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------ collectives
    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over the processes (a new tensor; the input is left unchanged)."""
        if not self.enabled:
            return tensor.clone()
        out = tensor.detach().to(_collective_device(), copy=True)
        torch_dist.all_reduce(out, op=torch_dist.ReduceOp.SUM)
        return out.to(tensor.device)

    def sum_state(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Sum a metric's sufficient statistics over the processes (``Metric.state()``)."""
        return {key: self.sum(value) for key, value in state.items()}

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (any picklable object, sent between our own
        processes only)."""
        if not self.enabled:
            return value
        box = [value]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        out: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and return its result on every rank. A :class:`UserError`
        on rank 0 is raised on every rank (as :class:`MainRankError` on the others, which
        print nothing); any other exception on rank 0 stops the other ranks the same way, so no
        process waits for a partner that gave up."""
        if not self.enabled:
            return fn()
        outcome: tuple[str, Any] = ("ok", None)
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except Exception as err:
                self.broadcast(("error", str(err)))
                raise
        outcome = self.broadcast(outcome)
        if outcome[0] == "error":
            raise MainRankError(outcome[1])
        return outcome[1]

    def gather_rows(self, row: torch.Tensor) -> torch.Tensor:
        """Every rank's 1-d ``row`` stacked in rank order (``[world_size, n]``), on every rank:
        one collective, after which all ranks hold the same information and decide alike."""
        if not self.enabled:
            return row[None].clone()
        mine = row.to(_collective_device())
        rows = [torch.empty_like(mine) for _ in range(self.world_size)]
        torch_dist.all_gather(rows, mine)
        return torch.stack(rows).to(row.device)

    def check_same(self, value: Any, what: str) -> None:
        """Raise a :class:`UserError` on every rank unless ``value`` is equal on all of them."""
        if not self.enabled:
            return
        rows = self.gather_rows(digest(value))
        if not bool((rows == rows[0]).all()):
            raise UserError(
                f"{what} differs between processes (rank {self.rank} of "
                f"{self.world_size}); every process must use the same one"
            )

    # ----------------------------------------------------------------- device
    def device(self, spec: str) -> torch.device:
        """The device of this process for ``train.device``: under torchrun ``auto``/``cuda``
        mean ``cuda:LOCAL_RANK`` (one GPU per process)."""
        if not self.enabled:
            return resolve_device(spec)
        if spec.startswith("cuda:"):
            raise UserError(
                f"train.device: {spec!r} pins every process to one GPU; under torchrun use "
                "'cuda' or 'auto' (process LOCAL_RANK uses cuda:LOCAL_RANK)"
            )
        device = resolve_device(spec)
        if device.type != "cuda":
            return device
        if self.local_rank >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK {self.local_rank} but this machine has "
                f"{torch.cuda.device_count()} CUDA devices: start at most that many processes "
                "per node (--nproc_per_node)"
            )
        return torch.device("cuda", self.local_rank)


def resolve_device(spec: str, setting: str = "train.device") -> torch.device:
    """``auto`` -> the first CUDA device if there is one, else the CPU. ``setting`` (the config
    key or flag ``spec`` came from) names it in errors."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec != "cpu" and spec != "cuda" and not spec.startswith("cuda:"):
        raise UserError(f"{setting}: expected auto, cpu, cuda or cuda:N, got {spec!r}")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{setting}: {spec!r} requested but CUDA is not available here")
    try:
        return torch.device(spec)
    except RuntimeError as err:
        raise UserError(f"{setting}: {spec!r} is not a device ({err})") from None


def _collective_device() -> torch.device:
    """NCCL reduces CUDA tensors only; gloo CPU tensors."""
    if torch_dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def from_environment() -> Distributed:
    """The job layout torchrun put in the environment (single process when it is absent)."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as err:
        raise UserError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers: {err}") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"RANK={rank} is not in [0, WORLD_SIZE={world_size})")
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank)


@contextmanager
def session(device_spec: str) -> Iterator[Distributed]:
    """Join the torchrun job for the duration of a command (nothing to do in a plain run).
    The backend is NCCL when the processes train on CUDA, gloo otherwise."""
    dist = from_environment()
    if not dist.enabled:
        yield dist
        return
    device = dist.device(device_spec)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch_dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        timeout=datetime.timedelta(minutes=30),
    )
    try:
        yield dist
    finally:
        torch_dist.destroy_process_group()


def digest(value: Any) -> torch.Tensor:
    """SHA-256 of ``repr(value)`` as an int64 tensor of its 32 bytes (compared across ranks)."""
    return torch.tensor(
        list(hashlib.sha256(repr(value).encode()).digest()), dtype=torch.int64, device="cpu"
    )


def structure(model: nn.Module) -> tuple[Any, ...]:
    """What DistributedDataParallel captures when it wraps a model: which parameters require
    gradients, and which buffer tensors exist (masks are replaced when they are set)."""
    return (
        tuple(name for name, p in model.named_parameters() if p.requires_grad),
        tuple((name, id(b)) for name, b in model.named_buffers()),
    )


class ParallelModel:
    """Calls the model through DistributedDataParallel in a multi-process run (the model itself
    otherwise). DDP fixes its parameter and buffer lists when it wraps the model, so the model
    is re-wrapped when :func:`structure` changes — after the controller freezes the masks, the
    thresholds no longer receive gradients and DDP must stop waiting for them. Every rank
    re-wraps at the same step (their decisions are identical; checked at every step with one
    small all-gather), and wrapping broadcasts rank 0's parameters and buffers."""

    def __init__(self, model: nn.Module, dist: Distributed, device: torch.device) -> None:
        self.model = model
        self.dist = dist
        self.device = device
        self.wraps = 0
        self._structure: tuple[Any, ...] | None = None
        self._ddp: DistributedDataParallel | None = None

    def __call__(self, images: torch.Tensor) -> Any:
        if not self.dist.enabled:
            return self.model(images)
        current = structure(self.model)
        changed = current != self._structure
        trainable, buffers = current
        names = digest((trainable, tuple(name for name, _ in buffers)))
        # every step, every rank: a decision taken on some ranks only must stop the job here,
        # before DDP's collectives would hang or the replicas silently diverge
        rows = self.dist.gather_rows(torch.cat([names, torch.tensor([int(changed)], device="cpu")]))
        if not bool((rows == rows[0]).all()):
            raise UserError(
                "the processes disagree on the trainable parameters or masks (a pruning "
                "decision taken on some processes only); stopping"
            )
        if changed:
            self._ddp = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
            self._structure = current
            self.wraps += 1
        assert self._ddp is not None
        return self._ddp(images)

    def sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics drift apart between
        the forward passes of a step; DDP only re-broadcasts them at the next forward)."""
        if not self.dist.enabled:
            return
        for buffer in self.model.buffers():
            if buffer.numel():
                torch_dist.broadcast(buffer, src=0)
