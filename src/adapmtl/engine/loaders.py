"""The data loaders of a run: this process's slice of every training batch (resumable at any
iteration), the scoring batches of the methods, and the validation batches dealt to the ranks.

On CUDA the loaders pin their batches in page-locked memory, so :func:`to_device` copies them
without blocking the host; worker processes (``data.num_workers``) persist across validations.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from adapmtl.config import Config
from adapmtl.engine.distributed import Distributed
from adapmtl.engine.sampling import EpochIndexed, ResumableBatchSampler, ShardedEvalSampler


def to_device(batch: Any, device: torch.device) -> Any:
    """An ``(images, targets)`` batch on ``device``. The copies do not wait for the device
    (``non_blocking``; asynchronous from pinned memory, an ordinary copy otherwise)."""
    images, targets = batch
    return images.to(device, non_blocking=True), {
        name: t.to(device, non_blocking=True) for name, t in targets.items()
    }


class RunLoaders:
    """The loaders of one run over its training and validation sets."""

    def __init__(
        self,
        train_set: Any,
        val_set: Any,
        config: Config,
        dist: Distributed,
        device: torch.device,
    ) -> None:
        self.train_set, self.val_set = train_set, val_set
        self.config, self.dist, self.device = config, dist, device
        self._val_loader: DataLoader | None = None

    def loader(self, dataset: Any, sampler: Any) -> DataLoader:
        # A generator of its own: creating an iterator must not draw from the global RNG, or a
        # resumed run's dropout would differ from an uninterrupted run's.
        generator = torch.Generator().manual_seed(self.config.train.seed)
        workers = self.config.data.num_workers
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=workers,
            generator=generator,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=self.config.data.prefetch_factor if workers > 0 else None,
        )

    def train_batches(self, start_iteration: int) -> Iterator[Any]:
        """This process's slice of every global batch from ``start_iteration`` on."""
        sampler = ResumableBatchSampler(
            len(self.train_set),
            self.config.data.batch_size,
            seed=self.config.train.seed,
            start_iteration=start_iteration,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        return iter(self.loader(EpochIndexed(self.train_set), sampler))

    def scoring_batches(self) -> Iterator[Any]:
        """Batches for scoring at initialisation (SNIP, DiSparse), from their own seed stream.
        Every process gets the whole global batch, so methods decide from identical data."""
        sampler = ResumableBatchSampler(
            len(self.train_set),
            self.config.data.batch_size,
            seed=self.config.train.seed + 7919,
        )
        for batch in self.loader(EpochIndexed(self.train_set), sampler):
            yield to_device(batch, self.device)

    def val_loader(self) -> DataLoader:
        """This process's validation batches; one loader for the run, so its workers persist
        from one validation to the next."""
        if self._val_loader is None:
            sampler = ShardedEvalSampler(
                len(self.val_set),
                self.config.data.eval_batch_size,
                max_batches=self.config.eval.max_batches,
                rank=self.dist.rank,
                world_size=self.dist.world_size,
            )
            self._val_loader = self.loader(self.val_set, sampler)
        return self._val_loader
