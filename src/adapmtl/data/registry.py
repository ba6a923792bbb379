"""The dataset registry: ``build_dataset(name, split, tasks, **kwargs)``.

Names and options: ``scenes`` (n, size, seed, augment, cache), ``nyuv2_adashare`` (root, size,
augment, seed, normal_decoding, num_classes, listing), ``nyuv2_mtan`` (root, size, augment, seed,
num_classes), ``taskonomy`` (root, size, augment, seed, load_size, unlabelled, path_template,
listing, num_classes), ``fashion_pairs`` (n, root, seed, shift, holdout, normalise).
``tasks=None`` selects every task the dataset provides.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from adapmtl.data.errors import DataError
from adapmtl.registry import Registry, closest

DATASETS: Registry[Dataset] = Registry("dataset")


def dataset_class(name: str) -> type:
    """The class of the registered dataset ``name`` (its constructor's parameters are the
    dataset's options)."""
    if name == "scenes":
        from adapmtl.data.scenes import ScenesDataset

        return ScenesDataset
    if name == "fashion_pairs":
        from adapmtl.data.fashion import FashionPairs

        return FashionPairs
    if name == "taskonomy":
        from adapmtl.data.taskonomy import Taskonomy

        return Taskonomy
    from adapmtl.data import nyuv2

    return {"nyuv2_adashare": nyuv2.NYUv2AdaShare, "nyuv2_mtan": nyuv2.NYUv2MTAN}[name]


def _factory(name: str):
    def build(split: str, tasks: Sequence[str] | None, **kwargs: Any) -> Dataset:
        cls = dataset_class(name)
        accepted = [p for p in inspect.signature(cls).parameters if p not in ("split", "tasks")]
        for key in kwargs:
            if key not in accepted:
                raise DataError(
                    f"dataset {name!r}: unknown option {key!r}{closest(key, accepted)}; "
                    f"valid: {', '.join(accepted)}"
                )
        if tasks is not None:
            kwargs["tasks"] = tasks
        try:
            inspect.signature(cls).bind(split=split, **kwargs)
        except TypeError as err:
            raise DataError(f"dataset {name!r}: {err}") from None
        return cls(split=split, **kwargs)

    return build


for _name in ("scenes", "nyuv2_adashare", "nyuv2_mtan", "taskonomy", "fashion_pairs"):
    DATASETS.register(_name)(_factory(_name))


def build_dataset(
    name: str, split: str, tasks: Sequence[str] | None = None, **kwargs: Any
) -> Dataset:
    """Build a registered dataset; an unknown name or option is an error naming the valid ones."""
    try:
        factory = DATASETS.get(name)
    except KeyError as err:
        raise DataError(err.args[0]) from None
    return factory(split=split, tasks=tasks, **kwargs)
