"""Multi-process training with plain ``torch.distributed`` (``torchrun``), no extra framework.

``torchrun --nproc_per_node=N -m adapmtl train ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment; :func:`session` joins them into one
process group (NCCL on CUDA, gloo on the CPU) and gives each its device (``cuda:LOCAL_RANK``).

What is synchronised, and how (docs/distributed.md):

* gradients, thresholds' included — :class:`ParallelModel` (DistributedDataParallel, no buffer
  broadcasts), re-wrapped when the set of trainable parameters changes (the controller freezing
  the masks stops the thresholds' gradients);
* the per-task losses given to the adaptive weighting, the stop requests of SIGINT/SIGTERM and
  the processes' agreement on the model's structure and masks — one all-reduce per step
  (:meth:`Distributed.sum`);
* masks — identical by construction, or rank 0's decision shared before it is applied
  (:meth:`Distributed.broadcast_tensors`); BatchNorm statistics — rank 0's, before validation
  and checkpoints (:meth:`ParallelModel.sync_buffers`);
* metrics — their sufficient statistics are summed (:meth:`Distributed.sum_state`);
* decisions — every method decides from rank-identical data; one-off work (preparing the run
  directory) runs on rank 0 and its outcome is broadcast (:meth:`on_main`); checkpoints are read
  by every process from the shared file system (:meth:`each`), method state is sent as tensors
  (:meth:`broadcast_state`).
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from adapmtl.errors import UserError
from adapmtl.sparsity import SparseWeight

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

    def broadcast_into(self, tensors: Sequence[torch.Tensor]) -> None:
        """Overwrite ``tensors`` in place with rank 0's (the same shapes and dtypes on every
        rank): one broadcast per dtype, of their flattened concatenation, on the backend's
        device; nothing is pickled."""
        if not self.enabled:
            return
        groups: dict[torch.dtype, list[torch.Tensor]] = {}
        for tensor in tensors:
            groups.setdefault(tensor.dtype, []).append(tensor)
        for dtype, group in groups.items():
            wire = torch.uint8 if dtype == torch.bool else dtype
            flat = torch.cat([t.detach().reshape(-1).to(_collective_device(), wire) for t in group])
            torch_dist.broadcast(flat, src=0)
            if self.is_main:
                continue
            with torch.no_grad():
                for tensor, part in zip(group, flat.split([t.numel() for t in group]), strict=True):
                    tensor.copy_(part.view(tensor.shape))

    def broadcast_tensors(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rank 0's ``tensors`` on every rank, in copies of this rank's (same keys, shapes and
        dtypes everywhere): a decision some kernel could round differently on another GPU is
        taken once."""
        if not self.enabled:
            return dict(tensors)
        out = {key: value.detach().clone() for key, value in tensors.items()}
        self.broadcast_into(list(out.values()))
        return out

    def broadcast_state(self, value: T, device: torch.device) -> T:
        """Rank 0's ``value`` (nested dicts, lists and tuples of tensors and plain values) on
        every rank: the structure is pickled, the tensors are sent as tensors and land on
        ``device`` (CPU ones stay on the CPU), never unpickled onto rank 0's GPU."""
        if not self.enabled:
            return value
        tensors: list[torch.Tensor] = []
        skeleton = self.broadcast(_split(value, tensors))
        if self.is_main:
            self.broadcast_into(tensors)
            return value
        slots: list[_Slot] = []
        _split(skeleton, slots)
        received = [
            torch.empty(s.shape, dtype=s.dtype, device=device if s.on_device else "cpu")
            for s in slots
        ]
        self.broadcast_into(received)
        return _join(skeleton, iter(received))

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

    def each(self, fn: Callable[[], T], hint: str = "") -> T:
        """Run ``fn`` on every rank (each reads its own copy of a file, for example) and return
        its result there. When it fails anywhere, every rank raises: rank 0 its own error, or
        one naming the first rank that failed (with ``hint``); the others
        :class:`MainRankError`, which prints nothing."""
        if not self.enabled:
            return fn()
        result: Any = None
        failure: Exception | None = None
        try:
            result = fn()
        except Exception as err:
            failure = err
        failures = self.gather(None if failure is None else str(failure))
        failed = [(rank, text) for rank, text in enumerate(failures) if text is not None]
        if not failed:
            return result
        if not self.is_main:
            raise MainRankError(failed[0][1])
        if failure is not None:
            raise failure
        rank, text = failed[0]
        raise UserError(f"process {rank} of {self.world_size}: {text}{hint}")

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


@dataclass(frozen=True)
class _Slot:
    """Where a tensor was in a broadcast structure."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    on_device: bool


def _split(value: Any, found: list[Any]) -> Any:
    """``value`` with every tensor replaced by a :class:`_Slot` (tensors appended to
    ``found``); on a skeleton, collects its slots."""
    if isinstance(value, torch.Tensor):
        found.append(value)
        return _Slot(tuple(value.shape), value.dtype, value.device.type != "cpu")
    if isinstance(value, _Slot):
        found.append(value)
        return value
    if isinstance(value, dict):
        return {key: _split(item, found) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_split(item, found) for item in value)
    return value


def _join(skeleton: Any, tensors: Iterator[torch.Tensor]) -> Any:
    if isinstance(skeleton, _Slot):
        return next(tensors)
    if isinstance(skeleton, dict):
        return {key: _join(item, tensors) for key, item in skeleton.items()}
    if isinstance(skeleton, (list, tuple)):
        return type(skeleton)(_join(item, tensors) for item in skeleton)
    return skeleton


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


def structure(model: nn.Module) -> tuple[str, ...]:
    """What DistributedDataParallel captures when it wraps a model: the parameters that require
    gradients (it broadcasts no buffers after the first wrap: see :class:`ParallelModel`)."""
    return tuple(name for name, p in model.named_parameters() if p.requires_grad)


def mask_buffers(model: nn.Module) -> list[torch.Tensor]:
    """The mask buffers of the sparsified layers (empty ones included), in module order."""
    return [m.mask for m in model.modules() if isinstance(m, SparseWeight)]


def state_buffers(model: nn.Module) -> list[torch.Tensor]:
    """Every other non-empty buffer (BatchNorm running statistics): what drifts apart between
    processes during training."""
    masks = {id(b) for b in mask_buffers(model)}
    return [b for b in model.buffers() if b.numel() and id(b) not in masks]


_CHUNK = 2**16
_DDP_OPTIONS = inspect.signature(DistributedDataParallel.__init__).parameters


def _chunks(value: int, count: int) -> list[int]:
    return [(value >> (16 * i)) % _CHUNK for i in range(count)]


class ParallelModel:
    """Calls the model through DistributedDataParallel in a multi-process run (the model itself
    otherwise).

    **Buffers.** DDP is built with ``forward_sync_buffers=False``: nothing is broadcast before
    the forward passes. Masks are identical on every process by construction: every mask
    decision is computed from rank-identical weights and data (the controller's freeze, LTH,
    IMP and DiSparse's magnitudes) or shared from rank 0 before it is applied (DiSparse's
    gradient-based regrowth, :meth:`Distributed.broadcast_tensors`; scoring at initialisation
    travels with the first wrap). BatchNorm running statistics do drift apart; they are used
    only by evaluation and checkpoints, before which :meth:`sync_buffers` gives every process
    rank 0's, which are what a per-forward broadcast would have left there (rank 0's own
    statistics are never overwritten by one).

    **Re-wrapping.** DDP fixes its parameter list when it wraps a model, so the model is
    re-wrapped when :func:`structure` changes: after the controller freezes the masks the
    thresholds no longer receive gradients and DDP must stop waiting for them. A mask change
    needs no re-wrap. The first wrap broadcasts rank 0's parameters and buffers; later ones
    broadcast nothing (the weights are identical by construction).

    **Agreement.** :meth:`agreement` is a short vector (the trainable parameters' digest, the
    number of mask changes seen and the number of kept weights) that the trainer folds into its
    one per-step all-reduce; :meth:`disagreement` of the sum is zero exactly when every process
    holds the same vector. It is read with the step's health, or right after the all-reduce on
    a step that re-wrapped, before DDP's backward could hang on mismatched parameter lists."""

    def __init__(self, model: nn.Module, dist: Distributed, device: torch.device) -> None:
        self.model = model
        self.dist = dist
        self.device = device
        self.wraps = 0
        self.mask_changes = 0
        self.rewrapped = False
        """Whether the last call re-wrapped the model (its step reads the agreement early)."""
        self._structure: tuple[str, ...] | None = None
        self._masks: tuple[int, ...] | None = None
        self._kept: torch.Tensor | None = None
        self._digest = 0
        self._host: torch.Tensor | None = None
        self._ddp: Any = None

    def __call__(self, images: torch.Tensor) -> Any:
        if not self.dist.enabled:
            return self.model(images)
        current = structure(self.model)
        self.rewrapped = current != self._structure
        if self.rewrapped:
            self._ddp = self._wrap(first=self._structure is None)
            self._structure = current
            self._digest = int.from_bytes(
                hashlib.sha256(repr(current).encode()).digest()[:6], "big"
            )
            self._host = None
            self.wraps += 1
        self._note_masks()
        return self._ddp(images)

    def _wrap(self, *, first: bool) -> Any:
        options: dict[str, Any] = {"init_sync": first}
        if "forward_sync_buffers" in _DDP_OPTIONS:  # its init sync still sends the buffers
            options["forward_sync_buffers"] = False
        else:  # PyTorch < 2.13, where broadcast_buffers=False leaves them out of the init sync
            options["broadcast_buffers"] = False
            if first:
                self.dist.broadcast_into([b for b in self.model.buffers() if b.numel()])
        return DistributedDataParallel(
            self.model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            **options,
        )

    def _note_masks(self) -> None:
        """Count mask changes (a mask is replaced when it is set) and, on a change only, the
        kept weights, on the device and unread."""
        masks = mask_buffers(self.model)
        ids = tuple(id(m) for m in masks)
        if ids == self._masks:
            return
        if self._masks is not None:
            self.mask_changes += 1
        self._masks = ids
        self._host = None
        counts = [m.sum(dtype=torch.int64) for m in masks if m.numel()]
        device = next(self.model.parameters()).device
        self._kept = (
            torch.stack(counts).sum()
            if counts
            else torch.zeros((), dtype=torch.int64, device=device)
        )

    def agreement(self) -> torch.Tensor:
        """``[v, v * v]`` (float64, on the model's device) for the vector ``v`` every process
        must share; empty in a single-process run or before the first call."""
        if not self.dist.enabled or self._kept is None:
            return torch.zeros(0, dtype=torch.float64, device=self.device)
        kept = self._kept
        if self._host is None:  # copied to the device only when the structure or masks change
            host = [*_chunks(self._digest, 3), self.mask_changes % _CHUNK]
            self._host = torch.tensor(host, dtype=torch.float64, device=kept.device)
        counts = torch.stack([kept % _CHUNK, kept // _CHUNK % _CHUNK, kept // _CHUNK**2])
        values = torch.cat([self._host, counts.double()])
        return torch.cat([values, values * values])

    def disagreement(self, total: torch.Tensor) -> torch.Tensor:
        """Zero exactly when every process sent the same :meth:`agreement` (``total`` is their
        sum): ``N * sum(v^2) = (sum v)^2`` holds only for equal values, and the values are small
        integers, so float64 computes it exactly."""
        if not total.numel():
            return torch.zeros((), dtype=torch.float64, device=total.device)
        values, squares = total.chunk(2)
        return (self.dist.world_size * squares - values * values).abs().sum()

    def sync_buffers(self) -> None:
        """Give every rank rank 0's BatchNorm statistics (they drift apart between the forward
        passes of the processes); masks are identical everywhere already. One broadcast per
        dtype."""
        if self.dist.enabled:
            self.dist.broadcast_into(state_buffers(self.model))
