"""The sparse kernels' output buffer pool: reuse only of memory no tensor refers to, and a cap on
the memory it keeps."""

import torch

from adapmtl.inference import buffers


def fresh_pool(monkeypatch, cap=2**20):
    monkeypatch.setattr(buffers, "MIN_POOLED_BYTES", 1024)
    monkeypatch.setattr(buffers, "MAX_FREE_BYTES", cap)
    monkeypatch.setattr(buffers, "_FREE", {})
    monkeypatch.setattr(buffers, "_STATE", {"free_bytes": 0})


def test_small_outputs_bypass_the_pool(monkeypatch):
    fresh_pool(monkeypatch)
    small = buffers.empty(100)
    assert small.shape == (100,) and small.dtype == torch.float32
    del small
    assert buffers.free_bytes() == 0


def test_memory_returns_when_the_last_view_dies(monkeypatch):
    fresh_pool(monkeypatch)
    out = buffers.empty(1000)
    assert out.shape == (1000,) and out.dtype == torch.float32
    view = out.view(10, 100)[:, :50]
    address = out.data_ptr()
    del out
    assert buffers.free_bytes() == 0  # the view still uses the memory
    other = buffers.empty(1000)
    assert other.data_ptr() != address
    view.fill_(1.0)
    other.fill_(2.0)
    assert bool((view == 1.0).all())
    del view
    assert buffers.free_bytes() == 4000
    assert buffers.empty(1000).data_ptr() == address
    assert buffers.free_bytes() == 4000  # the temporary above returned at once


def test_pool_keeps_at_most_its_cap(monkeypatch):
    fresh_pool(monkeypatch, cap=6000)
    first, second = buffers.empty(1000), buffers.empty(1000)
    del first, second
    assert buffers.free_bytes() == 4000
