"""Numba kernels for sparse direct convolution (imported only when numba is installed).

The inner loop is an output-stationary micro-kernel written as LLVM IR through
``numba.extending.intrinsic``: for a block of 1, 2 or 4 output rows and a column segment of 16,
32, 48 or 64 columns of one output channel it keeps the partial sums in registers (one 16-float
vector per 16 outputs and row) and, for each nonzero weight of the output channel, broadcasts the
weight once and multiply-adds the input segment it touches in every row of the block. Blocking
rows divides the number of passes over the nonzeros (their offsets and values, which come from
L2/L3 for large layers) by the block height, and gives the FMA units independent chains. Numba's
own loop vectorizer does not produce this: it cannot prove that the output and input arrays do not
alias, and vectorizes over the nonzeros instead.

Block-sparse weights, whose output channels share their nonzero positions in groups of
``GROUP``, have single-row variants that load each input vector once for all ``GROUP`` channels
(``GROUP`` FMAs per load instead of one), in their own kernel, ``sparse_conv_grouped``.

Work is split over threads by output channel, in chunks of balanced nonzero counts. Loop order:
row block, column tile, input-channel block, output channel, so the input segment that one
(row block, tile, channel block) needs stays in cache while every output channel of the chunk
reads it.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

LANES = 16
"""Floats per vector register (AVX-512; LLVM splits the vectors on narrower CPUs)."""
GROUP = 4
"""Output channels sharing every nonzero position in the block-sparse variants (single rows)."""

_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_VEC = ir.VectorType(_F32, LANES)


def _micro_kernel(nvec: int, rows: int, group: int = 1):
    """``tile(out, o, ostep, cstep, x, x0, xstep, offs, vals, k0, k1)``: for each row
    ``i < rows`` and output channel ``g < group``, ``out[o + i*ostep + g*cstep :][:16*nvec] +=
    sum_k vals[k*group + g] * x[x0 + offs[k] + i*xstep :][:16*nvec]`` over ``k`` in ``[k0, k1)``
    (float32, unchecked).

    With ``group > 1`` the ``group`` output channels share every nonzero position (block-sparse
    weights): each input vector is loaded once and multiply-added into all of their
    accumulators. The main loop takes ``sets`` nonzeros per iteration into separate accumulator
    sets, so that at least 8 independent FMA chains hide the FMA latency (two FMA units x four
    cycles); a tail loop takes the remainder one at a time.
    """
    chains = group * rows * nvec
    sets = max(1, -(-8 // chains))

    @intrinsic
    def tile(typingctx, out, o, ostep, cstep, x, x0, xstep, offs, vals, k0, k1):
        sig = types.void(out, o, ostep, cstep, x, x0, xstep, offs, vals, k0, k1)

        def codegen(context, builder, signature, args):
            out_t, _, _, _, x_t, _, _, offs_t, vals_t, _, _ = signature.args
            out_v, o_v, ostep_v, cstep_v, x_v, x0_v, xstep_v, offs_v, vals_v, k0_v, k1_v = args
            out_p = context.make_array(out_t)(context, builder, out_v).data
            x_p = context.make_array(x_t)(context, builder, x_v).data
            offs_p = context.make_array(offs_t)(context, builder, offs_v).data
            vals_p = context.make_array(vals_t)(context, builder, vals_v).data
            fma = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(_VEC, [_VEC, _VEC, _VEC]),
                f"llvm.fma.v{LANES}f32",
            )
            zero = ir.Constant(_VEC, [0.0] * LANES)
            # element offsets of every (row, vector) of the block, relative to a row start;
            # accumulators are ordered (channel, row, vector)
            x_shifts = [
                builder.add(builder.mul(xstep_v, _I64(i)), _I64(LANES * v))
                for i in range(rows)
                for v in range(nvec)
            ]
            o_shifts = [
                builder.add(
                    builder.add(builder.mul(cstep_v, _I64(g)), builder.mul(ostep_v, _I64(i))),
                    _I64(LANES * v),
                )
                for g in range(group)
                for i in range(rows)
                for v in range(nvec)
            ]

            def splat(value):
                return builder.shuffle_vector(
                    builder.insert_element(ir.Constant(_VEC, ir.Undefined), value, _I32(0)),
                    ir.Constant(_VEC, ir.Undefined),
                    ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES),
                )

            def multiply_add(k, accs):
                offset = builder.sext(builder.load(builder.gep(offs_p, [k])), _I64)
                base = builder.add(x0_v, offset)
                first = builder.mul(k, _I64(group))
                weights = [
                    splat(builder.load(builder.gep(vals_p, [builder.add(first, _I64(g))])))
                    for g in range(group)
                ]
                segments = []
                for shift in x_shifts:
                    ptr = builder.gep(x_p, [builder.add(base, shift)])
                    segments.append(builder.load(builder.bitcast(ptr, _VEC.as_pointer()), align=4))
                return [
                    builder.call(fma, [segments[j], weights[g], accs[g * len(segments) + j]])
                    for g in range(group)
                    for j in range(len(segments))
                ]

            entry = builder.basic_block
            main = builder.append_basic_block("tile.main")
            middle = builder.append_basic_block("tile.middle")
            tail = builder.append_basic_block("tile.tail")
            done = builder.append_basic_block("tile.done")
            main_end = builder.sub(k1_v, _I64(sets - 1))
            builder.cbranch(builder.icmp_signed("<", k0_v, main_end), main, middle)

            builder.position_at_end(main)
            k = builder.phi(_I64)
            accs = [[builder.phi(_VEC) for _ in range(chains)] for _ in range(sets)]
            new = [multiply_add(builder.add(k, _I64(s)), accs[s]) for s in range(sets)]
            k_next = builder.add(k, _I64(sets))
            main_last = builder.basic_block
            k.add_incoming(k0_v, entry)
            k.add_incoming(k_next, main_last)
            for set_phis, set_new in zip(accs, new, strict=True):
                for phi, value in zip(set_phis, set_new, strict=True):
                    phi.add_incoming(zero, entry)
                    phi.add_incoming(value, main_last)
            builder.cbranch(builder.icmp_signed("<", k_next, main_end), main, middle)

            builder.position_at_end(middle)
            k_mid = builder.phi(_I64)
            k_mid.add_incoming(k0_v, entry)
            k_mid.add_incoming(k_next, main_last)
            merged = []
            for s in range(sets):
                merged.append([])
                for i in range(chains):
                    phi = builder.phi(_VEC)
                    phi.add_incoming(zero, entry)
                    phi.add_incoming(new[s][i], main_last)
                    merged[s].append(phi)
            totals = merged[0]
            for s in range(1, sets):
                totals = [builder.fadd(a, b) for a, b in zip(totals, merged[s], strict=True)]
            middle_last = builder.basic_block
            builder.cbranch(builder.icmp_signed("<", k_mid, k1_v), tail, done)

            builder.position_at_end(tail)
            kt = builder.phi(_I64)
            tail_accs = [builder.phi(_VEC) for _ in range(chains)]
            tail_new = multiply_add(kt, tail_accs)
            kt_next = builder.add(kt, _I64(1))
            tail_last = builder.basic_block
            kt.add_incoming(k_mid, middle_last)
            kt.add_incoming(kt_next, tail_last)
            for phi, total, value in zip(tail_accs, totals, tail_new, strict=True):
                phi.add_incoming(total, middle_last)
                phi.add_incoming(value, tail_last)
            builder.cbranch(builder.icmp_signed("<", kt_next, k1_v), tail, done)

            builder.position_at_end(done)
            finals = []
            for total, value in zip(totals, tail_new, strict=True):
                final = builder.phi(_VEC)
                final.add_incoming(total, middle_last)
                final.add_incoming(value, tail_last)
                finals.append(final)
            for shift, final in zip(o_shifts, finals, strict=True):
                ptr = builder.gep(out_p, [builder.add(o_v, shift)])
                ptr = builder.bitcast(ptr, _VEC.as_pointer())
                builder.store(builder.fadd(builder.load(ptr, align=4), final), ptr, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tile


_r4w64, _r4w48, _r4w32, _r4w16 = (_micro_kernel(n, 4) for n in (4, 3, 2, 1))
_r2w64, _r2w48, _r2w32, _r2w16 = (_micro_kernel(n, 2) for n in (4, 3, 2, 1))
_r1w64, _r1w48, _r1w32, _r1w16 = (_micro_kernel(n, 1) for n in (4, 3, 2, 1))
_g4w64, _g4w48, _g4w32, _g4w16 = (_micro_kernel(n, 1, GROUP) for n in (4, 3, 2, 1))


@njit(inline="always")
def _tile(group, rows, width, out, o, ostep, cstep, x, x0, xstep, offs, vals, k0, k1):
    """The micro-kernel for ``rows`` x ``width`` outputs (``layers.ROW_BLOCKS`` x
    ``layers.TILE_WIDTHS``) of one output channel, or with ``group == GROUP`` of ``GROUP``
    channels ``cstep`` apart (single rows)."""
    a = (out, o, ostep, cstep, x, x0, xstep, offs, vals, k0, k1)
    if group == GROUP:
        if width == 64:
            _g4w64(*a)
        elif width == 48:
            _g4w48(*a)
        elif width == 32:
            _g4w32(*a)
        else:
            _g4w16(*a)
    elif rows == 4:
        if width == 64:
            _r4w64(*a)
        elif width == 48:
            _r4w48(*a)
        elif width == 32:
            _r4w32(*a)
        else:
            _r4w16(*a)
    elif rows == 2:
        if width == 64:
            _r2w64(*a)
        elif width == 48:
            _r2w48(*a)
        elif width == 32:
            _r2w32(*a)
        else:
            _r2w16(*a)
    elif width == 64:
        _r1w64(*a)
    elif width == 48:
        _r1w48(*a)
    elif width == 32:
        _r1w32(*a)
    else:
        _r1w16(*a)


@njit(parallel=True, cache=True)
def sparse_conv(
    x, ptr, offs, vals, bias, row_base, row_step, kh_lo, kh_hi, group_row, group_rows,
    tile_col, tile_width, kw_lo, kw_hi, kernel_w, out_h, out_stride, out, bounds,
):  # fmt: skip
    """Sparse direct convolution of one packed sample into ``out`` (``[out_channels, out_h,
    out_stride]``, flat; see ``layers.DirectGeometry``), one output channel per nonzero
    position; chunk ``c`` of threads' work is output channels ``[bounds[c], bounds[c + 1])``
    (:func:`_chunk`)."""
    for chunk in prange(bounds.shape[0] - 1):
        _chunk(
            1, bounds[chunk], bounds[chunk + 1], x, ptr, offs, vals, bias, row_base, row_step,
            kh_lo, kh_hi, group_row, group_rows, tile_col, tile_width, kw_lo, kw_hi, kernel_w,
            out_h, out_stride, out,
        )  # fmt: skip
    return out


@njit(parallel=True, cache=True)
def sparse_conv_grouped(
    x, ptr, offs, vals, bias, row_base, row_step, kh_lo, kh_hi, group_row, group_rows,
    tile_col, tile_width, kw_lo, kw_hi, kernel_w, out_h, out_stride, out, bounds,
):  # fmt: skip
    """:func:`sparse_conv` for block-sparse weights: ``GROUP`` output channels per nonzero
    position (single rows; ``bounds`` count groups). A separate kernel, so that the group size
    is a compile-time constant and neither kernel pays for the other's micro-kernel dispatch."""
    for chunk in prange(bounds.shape[0] - 1):
        _chunk(
            GROUP, bounds[chunk], bounds[chunk + 1], x, ptr, offs, vals, bias, row_base,
            row_step, kh_lo, kh_hi, group_row, group_rows, tile_col, tile_width, kw_lo, kw_hi,
            kernel_w, out_h, out_stride, out,
        )  # fmt: skip
    return out


@njit(inline="always")
def _chunk(
    group, lo, hi, x, ptr, offs, vals, bias, row_base, row_step, kh_lo, kh_hi, group_row,
    group_rows, tile_col, tile_width, kw_lo, kw_hi, kernel_w, out_h, out_stride, out,
):  # fmt: skip
    """Output channels (with ``group`` > 1: channel groups) ``[lo, hi)`` of one sample.

    ``ptr[oc, b, tap]`` delimits the nonzeros of output channel ``oc`` (with ``group`` > 1: of
    the ``group`` channels from ``group * oc``, which share their positions and have ``group``
    consecutive values each), input-channel block ``b`` and kernel tap
    ``tap = kh * kernel_w + kw`` in ``offs``/``vals``; ``offs`` are offsets into the packed
    input relative to the start of an output row (``row_base[r]``; the next output row starts
    ``row_step`` later). Rows ``r`` only visit the kernel rows ``[kh_lo[r], kh_hi[r])`` that
    fall inside the image; row block ``g`` is the ``group_rows[g]`` rows from ``group_row[g]``,
    which share that range. Column tiles only visit the kernel columns ``[kw_lo[t], kw_hi[t])``.
    """
    blocks = ptr.shape[1]
    out_plane = out_h * out_stride
    for oc in range(group * lo, group * hi):
        start = oc * out_plane
        value = bias[oc]
        for p in range(out_plane):
            out[start + p] = value
    for g in range(group_row.shape[0]):
        r = group_row[g]
        rows = group_rows[g]
        x_row = row_base[r]
        k_first = kh_lo[r] * kernel_w
        k_last = kh_hi[r] * kernel_w
        for t in range(tile_col.shape[0]):
            c = tile_col[t]
            width = tile_width[t]
            x_tile = x_row + c
            o_tile = r * out_stride + c
            whole_rows = kw_lo[t] == 0 and kw_hi[t] == kernel_w
            for b in range(blocks):
                for oc in range(lo, hi):
                    taps = ptr[oc, b]
                    o = o_tile + group * oc * out_plane
                    if whole_rows:
                        _tile(
                            group, rows, width, out, o, out_stride, out_plane, x, x_tile,
                            row_step, offs, vals, taps[k_first], taps[k_last],
                        )  # fmt: skip
                    else:
                        for kh in range(kh_lo[r], kh_hi[r]):
                            _tile(
                                group, rows, width, out, o, out_stride, out_plane, x,
                                x_tile, row_step, offs, vals,
                                taps[kh * kernel_w + kw_lo[t]],
                                taps[kh * kernel_w + kw_hi[t]],
                            )  # fmt: skip
