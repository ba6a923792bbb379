"""Keep a dataset's samples in memory after their first read.

Meant for datasets whose item ``i`` never changes (the synthetic scenes without augmentation,
small real datasets evaluated at a fixed size): rendering or decoding then happens once per item
instead of once per epoch. A dataset with random augmentation cannot be cached: the cache would
freeze one draw of it.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from adapmtl.errors import UserError


class InMemoryCache(Dataset):
    """Wraps ``dataset``; item ``i`` is read once, then served from memory (per process)."""

    def __init__(self, dataset: Dataset) -> None:
        if getattr(dataset, "augment", False):
            raise UserError(
                "data.cache: a dataset with random augmentation cannot be cached "
                "(set augment: false or cache: false)"
            )
        self.dataset = dataset
        self.items: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        if index not in self.items:
            self.items[index] = self.dataset[index]
        return self.items[index]
