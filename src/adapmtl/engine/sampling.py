"""A resumable, deterministic, infinite batch sampler.

Epoch ``e`` visits a permutation drawn from ``seed`` and ``e`` only, so the batch at any iteration
is a pure function of (seed, iteration). Keys are ``e * len(dataset) + index``; wrap the dataset in
:class:`EpochIndexed` to read them: a resumed run sees exactly the batches an uninterrupted
run would. Under DDP each process takes its contiguous slice of every global batch, so N processes
train on the same global batches as one process.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        *,
        seed: int,
        start_iteration: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if dataset_size < batch_size:
            raise ValueError(
                f"the training set has {dataset_size} samples, fewer than one batch ({batch_size})"
            )
        if batch_size % world_size:
            raise ValueError(
                f"batch size {batch_size} is not divisible by the number of processes {world_size}"
            )
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.seed = seed
        self.start_iteration = start_iteration
        self.rank = rank
        self.world_size = world_size
        self._cached: tuple[int, torch.Tensor] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return self.dataset_size // self.batch_size

    def global_batch(self, iteration: int) -> list[int]:
        epoch, index = divmod(iteration, self.batches_per_epoch)
        offset = epoch * self.dataset_size
        if self._cached is None or self._cached[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._cached = (
                epoch,
                torch.randperm(self.dataset_size, generator=generator, device="cpu"),
            )
        order = self._cached[1]
        batch = order[index * self.batch_size : (index + 1) * self.batch_size]
        return (batch + offset).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        per_rank = self.batch_size // self.world_size
        iteration = self.start_iteration
        while True:
            batch = self.global_batch(iteration)
            yield batch[self.rank * per_rank : (self.rank + 1) * per_rank]
            iteration += 1

    def __len__(self) -> int:
        return 2**62


class ShardedEvalSampler(Sampler[list[int]]):
    """Sequential evaluation batches (``0..B-1``, ``B..2B-1``, ...), the first ``max_batches`` of
    them, dealt round-robin to the processes: together they evaluate exactly the batches a
    single process would, so summed statistics (and per-batch losses) are the same."""

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        *,
        max_batches: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        count = -(-dataset_size // batch_size)
        if max_batches is not None:
            count = min(count, max_batches)
        self.batches = [
            list(range(i * batch_size, min((i + 1) * batch_size, dataset_size)))
            for i in range(rank, count, world_size)
        ]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class EpochIndexed(torch.utils.data.Dataset):
    """Wraps a dataset for :class:`ResumableBatchSampler` keys ``epoch * len + index``: each item
    is read after ``dataset.set_epoch(epoch)`` (when the dataset has it), so augmentation varies
    by epoch yet stays a pure function of (seed, epoch, index) in any worker process."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset
        self.size = len(dataset)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: int) -> object:
        epoch, index = divmod(key, self.size)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[index]
