"""Inference-only replacements for Conv2d/Linear layers with sparse (baked) weights.

* :class:`DirectSparseConv2d`: sparse direct convolution (numba kernel, any kernel size, stride,
  dilation, zero padding and groups). The input is copied once per kernel column into a buffer
  whose rows are as wide as the output's (a one-dimensional im2col), so every kernel tap reads
  contiguous, vector-aligned input; only the nonzero weights are visited, for blocks of output
  rows at once, and kernel rows/columns that fall entirely in the padding are skipped (which
  also removes the dense kernel's work on padding, large for the ASPP heads' dilations 12-24 on
  small feature maps).
* :class:`CSRConv1x1` and :class:`CSRLinear`: ``torch.sparse`` CSR matrix products (1x1 convs with
  stride 1 and no padding, and Linear layers).

All of them compute in float32 without autograd. Output columns are padded to a multiple of 16
internally; the returned tensor is a strided view without the padding. Large outputs of the
direct convolution come from :mod:`adapmtl.inference.buffers` (memory reused once no tensor
refers to it; its storage cannot grow in place).
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from adapmtl.inference import buffers as _buffers
from adapmtl.inference import threads as _threads

LANES = 16
"""Output columns are padded to a multiple of this (floats per vector of the kernels)."""
TILE_WIDTHS = (64, 48, 32, 16)
"""Output columns of one micro-kernel call (the kernels have a variant for each)."""
ROW_BLOCKS = (4, 2, 1)
"""Output rows of one micro-kernel call (the kernels have a variant for each)."""
FLAT_WIDTH = 64
"""A 1x1 convolution with stride 1 and no padding runs on its H*W outputs as rows of this many."""


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def direct_conv_supported(conv: nn.Module) -> str | None:
    """``None`` if :class:`DirectSparseConv2d` can replace ``conv``, else the reason it cannot."""
    if type(conv) is not nn.Conv2d:
        return "not a plain Conv2d"
    if conv.weight.dtype != torch.float32 or conv.weight.device.type != "cpu":
        return "weights are not float32 on the CPU"
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        return "padding is not explicit zero padding"
    return None


def shares_positions(weight: torch.Tensor, out_group: int) -> bool:
    """True if the output channels of ``weight`` (``[out, ...]``) come in consecutive groups of
    ``out_group`` with the same nonzero positions (block-sparse weights)."""
    out_channels = weight.shape[0]
    if out_channels % out_group:
        return False
    mask = (weight.detach() != 0).reshape(out_channels // out_group, out_group, -1)
    return bool((mask == mask[:, :1]).all())


@dataclass
class DirectGeometry:
    """Where every nonzero weight reads the packed input, for one input size.

    Packed input layout, per sample: ``[H, C, kernel_w, out_stride]`` float32, one row of the
    output's width per input row, channel and kernel column: element ``c`` of kernel column
    ``kw`` holds input column ``stride_w * c + kw * dilation_w - padding_w`` (zero where that is
    padding).
    So every tap reads its input for a tile of outputs as contiguous, vector-aligned vectors at
    the tile's own columns, whatever the stride, dilation and padding.
    """

    in_h: int
    out_h: int
    out_w: int
    out_stride: int
    row_stride: int
    ptr: np.ndarray
    offs: np.ndarray
    vals: np.ndarray
    row_base: np.ndarray
    row_step: int
    kh_lo: np.ndarray
    kh_hi: np.ndarray
    group_row: np.ndarray
    group_rows: np.ndarray
    tile_col: np.ndarray
    tile_width: np.ndarray
    kw_lo: np.ndarray
    kw_hi: np.ndarray

    @classmethod
    def build(
        cls,
        conv: nn.Conv2d,
        height: int,
        width: int,
        block: int,
        most_rows: int = ROW_BLOCKS[0],
        out_group: int = 1,
    ) -> DirectGeometry:
        """The geometry of ``conv`` on ``height`` x ``width`` inputs with input channels in
        blocks of ``block``, output rows in blocks of at most ``most_rows``, and nonzero
        positions shared by groups of ``out_group`` consecutive output channels (the union of
        their positions, with ``out_group`` values each, zeros included)."""
        weight = conv.weight.detach()
        out_channels, group_in, kernel_h, kernel_w = weight.shape
        sh, sw = _pair(conv.stride)
        dh, dw = _pair(conv.dilation)
        ph, pw = _pair(conv.padding)
        out_h = (height + 2 * ph - dh * (kernel_h - 1) - 1) // sh + 1
        out_w = (width + 2 * pw - dw * (kernel_w - 1) - 1) // sw + 1
        if out_h < 1 or out_w < 1:
            raise ValueError(f"input {height}x{width} is too small for {conv}")
        out_stride = -(-out_w // LANES) * LANES
        row_stride = conv.in_channels * kernel_w * out_stride

        blocks = -(-group_in // block)
        units = out_channels // out_group
        padded = F.pad(weight, (0, 0, 0, 0, 0, blocks * block - group_in))
        # nonzeros ordered by (input block, output channel group, kh, kw, input channel): the
        # kernel's loop over output channels for one block then reads them as one sequential
        # stream; the values of a group's channels are consecutive
        ordered = padded.reshape(units, out_group, blocks, block, kernel_h, kernel_w)
        ordered = ordered.permute(2, 0, 4, 5, 3, 1)
        nonzero = (ordered != 0).any(-1)
        counts = nonzero.sum(-1).reshape(blocks * units, kernel_h * kernel_w).numpy()
        ptr = np.zeros((blocks * units, kernel_h * kernel_w + 1), np.int64)
        np.cumsum(counts, axis=1, out=ptr[:, 1:])
        ptr += np.concatenate([[0], np.cumsum(ptr[:, -1])[:-1]])[:, None]
        b, unit, kh, kw, ic = (t.numpy().astype(np.int64) for t in nonzero.nonzero(as_tuple=True))
        vals = ordered[nonzero].reshape(-1).numpy().astype(np.float32)
        oc = unit * out_group
        channel = b * block + ic + (oc // (out_channels // conv.groups)) * group_in
        offs = kh * dh * row_stride + (channel * kernel_w + kw) * out_stride
        if offs.size and offs.max() > np.iinfo(np.int32).max:
            raise ValueError(f"input {height}x{width} is too large for {conv}")

        rows = np.arange(out_h)
        in_rows = sh * rows[:, None] + np.arange(kernel_h)[None, :] * dh - ph
        kh_lo, kh_hi = _valid_range((in_rows >= 0) & (in_rows < height))
        group_row, group_rows = _row_blocks(kh_lo, kh_hi, most_rows)

        tiles = []
        col = 0
        while col < out_stride:
            tile = next(w for w in TILE_WIDTHS if out_stride - col >= w)
            tiles.append((col, tile))
            col += tile
        tile_col = np.array([c for c, _ in tiles], np.int64)
        tile_width = np.array([w for _, w in tiles], np.int64)
        first = sw * tile_col
        last = sw * np.minimum(tile_col + tile_width, out_w) - sw
        taps = np.arange(kernel_w) * dw - pw
        inside = (first[:, None] + taps <= width - 1) & (last[:, None] + taps >= 0)
        kw_lo, kw_hi = _valid_range(inside)

        return cls(
            in_h=height,
            out_h=out_h,
            out_w=out_w,
            out_stride=out_stride,
            row_stride=row_stride,
            ptr=np.ascontiguousarray(ptr.reshape(blocks, units, -1).transpose(1, 0, 2)),
            offs=offs.astype(np.int32),
            vals=vals,
            row_base=((sh * rows - ph) * row_stride).astype(np.int64),
            row_step=sh * row_stride,
            kh_lo=kh_lo,
            kh_hi=kh_hi,
            group_row=group_row,
            group_rows=group_rows,
            tile_col=tile_col,
            tile_width=tile_width,
            kw_lo=kw_lo,
            kw_hi=kw_hi,
        )


def _valid_range(ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last True index per row of a boolean matrix whose True entries are
    contiguous in each row ((0, 0) for rows without any)."""
    anyok = ok.any(1)
    lo = np.where(anyok, ok.argmax(1), 0)
    hi = np.where(anyok, ok.shape[1] - ok[:, ::-1].argmax(1), 0)
    return lo.astype(np.int64), hi.astype(np.int64)


def _row_blocks(
    kh_lo: np.ndarray, kh_hi: np.ndarray, most: int = ROW_BLOCKS[0]
) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive output rows grouped into blocks of ROW_BLOCKS rows (largest first, at most
    ``most``) that visit the same kernel rows: the first row and the row count of every block."""
    sizes = [size for size in ROW_BLOCKS if size <= most]
    starts, counts = [], []
    r = 0
    while r < len(kh_lo):
        run = 1
        while r + run < len(kh_lo) and (kh_lo[r + run], kh_hi[r + run]) == (kh_lo[r], kh_hi[r]):
            run += 1
        for rows in sizes:
            while run >= rows:
                starts.append(r)
                counts.append(rows)
                r += rows
                run -= rows
    return np.array(starts, np.int64), np.array(counts, np.int64)


_SCRATCH = threading.local()


def _scratch(size: int) -> torch.Tensor:
    """This thread's packed-input buffer: ``size`` floats, vector-aligned, grown (never shrunk)
    to the largest size asked for, so that a model's layers share one allocation."""
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is None or buffer.numel() < size:
        raw = torch.empty(size + LANES)
        skip = (-raw.data_ptr() // 4) % LANES
        buffer = _SCRATCH.buffer = raw[skip : skip + size]
    return buffer[:size]


def _balanced_bounds(ptr: np.ndarray, chunks: int) -> np.ndarray:
    """Split output channels into ``chunks`` contiguous ranges of about equal nonzero counts."""
    per_channel = (ptr[:, :, -1] - ptr[:, :, 0]).sum(1)
    cumulative = np.concatenate([[0], np.cumsum(per_channel)])
    targets = cumulative[-1] * np.arange(1, chunks) / chunks
    inner = np.searchsorted(cumulative, targets)
    return np.unique(np.concatenate([[0], inner, [len(per_channel)]])).astype(np.int64)


class DirectSparseConv2d(nn.Module):
    """Sparse direct convolution replacing ``conv`` (numba kernel; see module docstring).

    ``block``: input channels per block; nonzeros are visited block by block for every output
    channel of a row block, which keeps the input rows of one block in cache. ``rows``: most
    output rows per block (one of ``ROW_BLOCKS``); more rows visit the nonzeros fewer times but
    need more input in cache. ``out_group``: 1, or ``_kernels.GROUP`` for weights whose output
    channels share their nonzero positions in consecutive groups of that many
    (:func:`shares_positions`; any weights give correct results, others just do more work),
    which the kernel then visits once per group (single rows only).
    """

    def __init__(
        self, conv: nn.Conv2d, block: int = 128, rows: int = 2, out_group: int = 1
    ) -> None:
        super().__init__()
        reason = direct_conv_supported(conv)
        if reason:
            raise ValueError(f"cannot use a sparse direct convolution for {conv}: {reason}")
        if rows not in ROW_BLOCKS:
            raise ValueError(f"rows must be one of {ROW_BLOCKS}, got {rows}")
        from adapmtl.inference import _kernels  # numba is optional: import on use

        if out_group not in (1, _kernels.GROUP):
            raise ValueError(f"out_group must be 1 or {_kernels.GROUP}, got {out_group}")
        if out_group > 1 and (rows != 1 or (conv.out_channels // conv.groups) % out_group):
            raise ValueError(
                f"out_group {out_group} needs rows=1 and output channels per conv group "
                f"divisible by {out_group}"
            )
        self._kernel = _kernels.sparse_conv_grouped if out_group > 1 else _kernels.sparse_conv
        self.conv = conv
        self.block = min(block, conv.in_channels // conv.groups)
        self.rows = rows
        self.out_group = out_group
        self.flatten = (
            conv.kernel_size == (1, 1)
            and _pair(conv.stride) == (1, 1)
            and _pair(conv.padding) == (0, 0)
        )
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        self._bias = bias.detach().float().numpy().copy()
        self._geometries: dict[tuple[int, int], DirectGeometry] = {}
        self._bounds: dict[tuple[int, int, int], np.ndarray] = {}

    def geometry(self, height: int, width: int) -> DirectGeometry:
        key = (height, width)
        if key not in self._geometries:
            self._geometries[key] = DirectGeometry.build(
                self.conv, height, width, self.block, self.rows, self.out_group
            )
        return self._geometries[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        batch, _, height, width = x.shape
        out_channels = self.conv.out_channels
        if self.flatten:  # any row length will do for a 1x1 conv: full-width tiles, no padding
            rows = -(-(height * width) // FLAT_WIDTH)
            geo = self.geometry(rows, FLAT_WIDTH)
        else:
            geo = self.geometry(height, width)
        plane = out_channels * geo.out_h * geo.out_stride
        out = _buffers.empty(batch * plane)
        threads = _threads.sync()
        split = (geo.out_h, geo.out_w, threads)
        if split not in self._bounds:
            self._bounds[split] = _balanced_bounds(geo.ptr, min(threads, _threads.numba_max()))
        result = out.numpy()
        # one sample at a time: the packed input of a whole batch (kernel_w times the input)
        # would not stay in cache between packing and the kernel, and its padded copy of the
        # input would be a fresh allocation of that size on every call
        for n in range(batch):
            packed = self._packed(x[n], geo)
            self._kernel(
                packed.numpy(), geo.ptr, geo.offs, geo.vals, self._bias,
                geo.row_base, geo.row_step, geo.kh_lo, geo.kh_hi, geo.group_row, geo.group_rows,
                geo.tile_col, geo.tile_width, geo.kw_lo, geo.kw_hi, self.conv.kernel_size[1],
                geo.out_h, geo.out_stride, result[n * plane : (n + 1) * plane],
                self._bounds[split],
            )  # fmt: skip
            _threads.restore(threads)  # before the next sample's packing runs torch ops
        if self.flatten:
            flat = out.view(batch, out_channels, geo.out_h * geo.out_stride)
            return flat[..., : height * width].view(batch, out_channels, height, width)
        return out.view(batch, out_channels, geo.out_h, geo.out_stride)[..., : geo.out_w]

    def _packed(self, x: torch.Tensor, geo: DirectGeometry) -> torch.Tensor:
        """One sample ``x`` (``[C, H, W]``) packed for ``geo`` into this thread's scratch buffer
        (every element the kernel reads is written, padding as zeros, so all layers can share
        the buffer)."""
        channels, height, width = x.shape
        packed = _scratch(geo.in_h * geo.row_stride)
        kernel_w = self.conv.kernel_size[1]
        view = packed.view(geo.in_h, channels, kernel_w, geo.out_stride)
        if self.flatten:
            flat = x.reshape(channels, height * width)
            full, rest = divmod(height * width, FLAT_WIDTH)
            whole = flat[:, : full * FLAT_WIDTH].reshape(channels, full, FLAT_WIDTH)
            view[:full, :, 0].copy_(whole.transpose(0, 1))
            if rest:
                view[full, :, 0, :rest].copy_(flat[:, full * FLAT_WIDTH :])
                view[full, :, 0, rest:].zero_()
            return packed
        sw = _pair(self.conv.stride)[1]
        dw = _pair(self.conv.dilation)[1]
        pw = _pair(self.conv.padding)[1]
        # zero-padded so that every packed column reads the padded input: one copy per kernel
        # column, no separate zeroing (few operations: each is a parallel region)
        span = sw * (geo.out_stride - 1) + 1
        right = max(0, span + (kernel_w - 1) * dw - pw - width)
        rows = F.pad(x, (pw, right)).transpose(0, 1)
        for kw in range(kernel_w):
            view[:, :, kw].copy_(rows[..., kw * dw : kw * dw + span : sw])
        return packed

    def extra_repr(self) -> str:
        group = f", out_group={self.out_group}" if self.out_group > 1 else ""
        return f"{self.conv}, block={self.block}, rows={self.rows}{group}"


def _csr(weight: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support", category=UserWarning)
        return weight.detach().reshape(weight.shape[0], -1).float().to_sparse_csr()


class CSRConv1x1(nn.Module):
    """1x1 convolution (stride 1, no padding, no groups) as a CSR x dense matrix product."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not csr_conv_supported(conv):
            raise ValueError(f"{conv} is not a 1x1 conv with stride 1, no padding and no groups")
        self.out_channels = conv.out_channels
        self.weight = _csr(conv.weight)
        self.bias = None if conv.bias is None else conv.bias.detach().float().reshape(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        outs = []
        for sample in x.detach().reshape(batch, channels, height * width):
            y = self.weight @ sample
            outs.append(y if self.bias is None else y + self.bias)
        return torch.stack(outs).view(batch, self.out_channels, height, width)


def csr_conv_supported(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (1, 1)
        and _pair(conv.stride) == (1, 1)
        and not isinstance(conv.padding, str)
        and _pair(conv.padding) == (0, 0)
        and conv.groups == 1
        and conv.weight.dtype == torch.float32
    )


class CSRLinear(nn.Module):
    """Linear layer as a CSR x dense product: ``y = (W_csr @ x^T)^T + b``."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = _csr(linear.weight)
        self.bias = None if linear.bias is None else linear.bias.detach().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.detach().reshape(-1, x.shape[-1])
        y = (self.weight @ flat.T).T
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], -1)
