"""The sparse direct convolution's register-blocked kernels against torch's dense convolution:
every tile width and row block, borders, strides, dilations, groups, batches, densities."""

import numpy as np
import pytest
import torch
from torch import nn

from adapmtl.inference.layers import (
    LANES,
    ROW_BLOCKS,
    TILE_WIDTHS,
    DirectGeometry,
    DirectSparseConv2d,
    _row_blocks,
    _scratch,
    shares_positions,
)
from adapmtl.inference.optimize import relative_error
from adapmtl.inference.pruning import magnitude_prune
from adapmtl.inference.threads import numba_available

needs_numba = pytest.mark.skipif(not numba_available(), reason="numba is not installed")


def random_sparse_conv(cin, cout, k, density, seed=0, **kwargs) -> nn.Conv2d:
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, **kwargs)
    with torch.no_grad():
        conv.weight[torch.rand_like(conv.weight) >= density] = 0
    return conv


SHAPES = [
    # (in, out, kernel, kwargs, batch, H, W): chosen for the tiles and row blocks they produce
    (8, 12, 3, {"padding": 1}, 1, 23, 37),  # 37 -> 48 columns: one 48 tile; rows 4+4+..+2+1
    (8, 12, 3, {"padding": 1}, 3, 9, 129),  # 129 -> 144: 64+64+16; batch 3
    (5, 7, 3, {"padding": 6, "dilation": 6}, 2, 41, 41),  # ASPP d6: border rows and columns
    (6, 9, 3, {"padding": 2, "dilation": 2}, 2, 17, 100),  # 100 -> 112: 64+48
    (4, 6, 3, {"stride": 2, "padding": 1}, 2, 31, 67),  # stride 2: 34 columns -> 48
    (4, 6, 3, {"stride": (2, 1), "dilation": (1, 3), "padding": (0, 2)}, 1, 19, 40),
    (3, 10, 7, {"stride": 2, "padding": 3}, 1, 65, 65),  # stem-like 7x7
    (6, 6, 3, {"padding": 1, "groups": 3}, 2, 13, 50),
    (8, 8, 3, {"padding": 1, "groups": 8, "bias": False}, 1, 20, 20),  # depthwise
    (12, 5, 2, {"padding": 1}, 1, 10, 10),  # even kernel, output larger than the input
    (16, 20, 1, {}, 2, 8, 8),  # 1x1 flattened: exactly one 64-column row
    (16, 20, 1, {}, 2, 41, 41),  # 1x1 flattened: 1681 = 26 x 64 + 17
    (16, 20, 1, {"stride": 2}, 2, 15, 15),  # strided 1x1: not flattened
    (4, 4, 5, {"padding": 30, "dilation": 15}, 1, 12, 12),  # almost every tap in the padding
]


@needs_numba
@pytest.mark.parametrize(("cin", "cout", "k", "kwargs", "batch", "h", "w"), SHAPES)
@pytest.mark.parametrize("density", [0.05, 0.1, 0.5])
def test_direct_conv_matches_torch(cin, cout, k, kwargs, batch, h, w, density):
    conv = random_sparse_conv(cin, cout, k, density, **kwargs)
    x = torch.randn(batch, cin, h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = conv(x)
        for block in (3, 64):
            for rows in ROW_BLOCKS:
                got = DirectSparseConv2d(conv, block=block, rows=rows)(x)
                assert got.shape == expected.shape
                assert relative_error(got, expected) < 1e-5, (block, rows)


@needs_numba
def test_direct_conv_magnitude_pruned_aspp_layer_batches():
    """A pruned ASPP-like layer as the benchmark makes it, batch 1 and 4 on one module (separate
    buffers), and the same input again (the buffers' padding must still be zero)."""
    conv = magnitude_prune(nn.Sequential(nn.Conv2d(32, 48, 3, padding=6, dilation=6)), 0.9)[0]
    layer = DirectSparseConv2d(conv, block=16)
    with torch.no_grad():
        for batch in (1, 4, 1):
            x = torch.randn(batch, 32, 21, 21)
            assert relative_error(layer(x), conv(x)) < 1e-5


@needs_numba
def test_direct_conv_threads_split_output_channels(monkeypatch):
    """Two chunks of output channels (as with two threads) give the same result as one."""
    from adapmtl.inference import layers

    conv = random_sparse_conv(8, 33, 3, 0.2, padding=1)
    x = torch.randn(2, 8, 14, 30)
    one = layers._balanced_bounds
    monkeypatch.setattr(layers, "_balanced_bounds", lambda ptr, chunks: one(ptr, 3))
    with torch.no_grad():
        assert relative_error(DirectSparseConv2d(conv)(x), conv(x)) < 1e-5


def test_row_blocks_cover_every_row_once_with_shared_kernel_rows():
    conv = nn.Conv2d(2, 2, 3, padding=6, dilation=6)
    geo = DirectGeometry.build(conv, 41, 41, block=2)
    covered = []
    for start, rows in zip(geo.group_row, geo.group_rows, strict=True):
        assert rows in ROW_BLOCKS
        block = range(start, start + rows)
        assert len({(geo.kh_lo[r], geo.kh_hi[r]) for r in block}) == 1
        covered.extend(block)
    assert covered == list(range(geo.out_h))
    lo, hi = np.array([0, 0, 0, 1, 1, 1, 1, 1]), np.array([3] * 8)
    starts, counts = _row_blocks(lo, hi)
    assert starts.tolist() == [0, 2, 3, 7] and counts.tolist() == [2, 1, 4, 1]
    starts, counts = _row_blocks(lo, hi, 2)
    assert starts.tolist() == [0, 2, 3, 5, 7] and counts.tolist() == [2, 1, 2, 2, 1]
    with pytest.raises(ValueError, match="rows"):
        DirectSparseConv2d(nn.Conv2d(2, 2, 3), rows=3)


def test_geometry_tiles_and_alignment():
    for width in (1, 16, 17, 41, 100, 129, 161):
        geo = DirectGeometry.build(nn.Conv2d(2, 2, 3, padding=1), 4, width, block=2)
        assert geo.out_stride % LANES == 0 and geo.out_stride - geo.out_w < LANES
        assert set(geo.tile_width) <= set(TILE_WIDTHS)
        assert geo.tile_col.tolist() == np.cumsum([0, *geo.tile_width[:-1]]).tolist()
        assert geo.tile_col[-1] + geo.tile_width[-1] == geo.out_stride
        # every nonzero reads vector-aligned input: offsets are multiples of the vector width
        assert (geo.offs % LANES == 0).all() and geo.row_step % LANES == 0


@needs_numba
@pytest.mark.parametrize(
    ("k", "kwargs", "h", "w"), [(3, {"padding": 2, "dilation": 2}, 9, 21), (1, {}, 7, 11)]
)
def test_packed_buffer_is_shared_aligned_and_fully_rewritten(k, kwargs, h, w):
    """Layers share one scratch buffer per thread: a call must not rely on zeros left by an
    earlier one (here: the buffer is full of NaN before the call)."""
    conv = random_sparse_conv(3, 4, k, 0.5, **kwargs)
    layer = DirectSparseConv2d(conv)
    x = torch.randn(2, 3, h, w)
    _scratch(10**6).fill_(float("nan"))
    with torch.no_grad():
        assert relative_error(layer(x), conv(x)) < 1e-5
    packed = _scratch(10)
    assert packed.data_ptr() % (4 * LANES) == 0


@needs_numba
def test_direct_conv_pooled_outputs_batches_match_torch(monkeypatch):
    """Outputs from the buffer pool (every output pooled here): a batch of 3 equals torch's, an
    output still held is never handed out again, and a dropped one is reused."""
    from adapmtl.inference import buffers

    monkeypatch.setattr(buffers, "MIN_POOLED_BYTES", 0)
    monkeypatch.setattr(buffers, "_FREE", {})
    monkeypatch.setattr(buffers, "_STATE", {"free_bytes": 0})
    conv = magnitude_prune(nn.Sequential(nn.Conv2d(16, 24, 3, padding=2, dilation=2)), 0.9)[0]
    layer = DirectSparseConv2d(conv, block=8)
    x, y = torch.randn(3, 16, 19, 23), torch.randn(3, 16, 19, 23)
    with torch.no_grad():
        held = layer(x)
        other = layer(y)
        assert relative_error(held, conv(x)) < 1e-5
        assert relative_error(other, conv(y)) < 1e-5
        assert held.data_ptr() != other.data_ptr()
        address = other.data_ptr()
        del other
        again = layer(y)
        assert again.data_ptr() == address
        assert relative_error(again, conv(y)) < 1e-5
        assert relative_error(held, conv(x)) < 1e-5


def block_sparse_conv(cin, cout, k, density, seed=0, **kwargs) -> nn.Conv2d:
    """A conv whose output channels share their nonzero positions in groups of 4."""
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, **kwargs)
    with torch.no_grad():
        keep = torch.rand(cout // 4, *conv.weight.shape[1:]) < density
        conv.weight.mul_(keep.repeat_interleave(4, 0))
    return conv


BLOCK_SHAPES = [s for s in SHAPES if (s[1] // s[3].get("groups", 1)) % 4 == 0] + [
    (4, 8, 3, {"stride": 2, "padding": 1}, 2, 31, 67),
    (8, 16, 3, {"padding": 1, "groups": 2}, 2, 13, 50),  # groups of 4 inside each conv group
]


@needs_numba
@pytest.mark.parametrize(("cin", "cout", "k", "kwargs", "batch", "h", "w"), BLOCK_SHAPES)
@pytest.mark.parametrize("density", [0.1, 0.5])
def test_block_direct_conv_matches_torch(cin, cout, k, kwargs, batch, h, w, density):
    conv = block_sparse_conv(cin, cout, k, density, **kwargs)
    assert shares_positions(conv.weight, 4)
    x = torch.randn(batch, cin, h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = conv(x)
        for block in (3, 64):
            got = DirectSparseConv2d(conv, block=block, rows=1, out_group=4)(x)
            assert got.shape == expected.shape
            assert relative_error(got, expected) < 1e-5, block


@needs_numba
def test_block_direct_conv_on_unstructured_weights_is_still_exact():
    """Groups visit the union of their channels' positions (zeros included): slower on
    unstructured weights, but correct."""
    conv = random_sparse_conv(8, 12, 3, 0.2, padding=1)
    assert not shares_positions(conv.weight, 4)
    x = torch.randn(2, 8, 15, 33)
    with torch.no_grad():
        got = DirectSparseConv2d(conv, rows=1, out_group=4)(x)
        assert relative_error(got, conv(x)) < 1e-5


def test_shares_positions_and_block_arguments():
    assert shares_positions(block_sparse_conv(4, 8, 3, 0.3).weight, 4)
    assert not shares_positions(block_sparse_conv(4, 8, 3, 0.3).weight[1:], 4)  # 7 channels
    assert not shares_positions(random_sparse_conv(4, 8, 3, 0.3).weight, 4)
    if numba_available():
        with pytest.raises(ValueError, match="out_group"):
            DirectSparseConv2d(block_sparse_conv(4, 8, 3, 0.3), rows=2, out_group=4)
        with pytest.raises(ValueError, match="out_group"):
            DirectSparseConv2d(nn.Conv2d(4, 6, 3), rows=1, out_group=4)
        with pytest.raises(ValueError, match="out_group"):
            DirectSparseConv2d(nn.Conv2d(4, 8, 3), rows=1, out_group=3)
