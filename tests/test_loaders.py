"""The run's data loaders feed a GPU without stalling it: pinned batches on CUDA, copies that do
not block the host, worker processes that persist across validations, and the prefetch depth
as an option."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from adapmtl.config import ConfigError, from_dict
from adapmtl.engine.distributed import Distributed
from adapmtl.engine.loaders import RunLoaders, to_device


def _loaders(tiny_settings, device: str, **data) -> RunLoaders:
    tiny_settings["data"].update(data)
    config = from_dict(tiny_settings)
    train = [(torch.full((3, 2, 2), float(i)), {"seg": torch.zeros(2, 2)}) for i in range(8)]
    val = train[:5]
    return RunLoaders(train, val, config, Distributed(), torch.device(device))


def test_batches_are_pinned_only_for_a_cuda_device(tiny_settings):
    assert _loaders(dict(tiny_settings), "cuda").val_loader().pin_memory
    assert not _loaders(tiny_settings, "cpu").val_loader().pin_memory


def test_workers_persist_and_the_validation_loader_is_reused(tiny_settings):
    loaders = _loaders(tiny_settings, "cpu", num_workers=1, prefetch_factor=3)
    loader = loaders.val_loader()
    assert loader.persistent_workers and loader.prefetch_factor == 3
    first = [images[:, 0, 0, 0].tolist() for images, _ in loader]
    assert loaders.val_loader() is loader  # its workers serve the next validation too
    second = [images[:, 0, 0, 0].tolist() for images, _ in loaders.val_loader()]
    assert first == second == [[0.0, 1.0, 2.0, 3.0, 4.0]]


def test_no_workers_means_no_persistence_and_no_prefetch_option(tiny_settings):
    loader = _loaders(tiny_settings, "cpu").val_loader()
    assert loader.num_workers == 0 and not loader.persistent_workers


def test_prefetch_needs_workers(tiny_settings):
    tiny_settings["data"]["prefetch_factor"] = 2
    with pytest.raises(ConfigError, match=r"data\.prefetch_factor.*num_workers 0"):
        from_dict(tiny_settings)


def test_device_copies_do_not_block_the_host():
    copies = []

    class Copies(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._to_copy.default:
                copies.append(kwargs.get("non_blocking", False))
            return func(*args, **(kwargs or {}))

    batch = (torch.zeros(2, 3), {"seg": torch.zeros(2), "depth": torch.ones(2)})
    with Copies():
        images, targets = to_device(batch, torch.device("meta"))
    assert images.device.type == "meta" and targets["depth"].device.type == "meta"
    assert copies == [True, True, True]
