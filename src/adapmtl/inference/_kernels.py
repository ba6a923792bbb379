"""Numba kernels for sparse direct convolution (imported only when numba is installed).

The inner loop is an output-stationary micro-kernel written as LLVM IR through
``numba.extending.intrinsic``: for one output row segment of 8, 16 or 32 columns it keeps the
partial sums in 1, 2 or 4 vector registers and, for each nonzero weight of the output channel,
broadcasts the weight and multiply-adds the input segment it touches (one vector load and one
FMA per 8 outputs). Numba's own loop vectorizer does not produce this: it cannot prove that the
output and input arrays do not alias, and vectorizes over the nonzeros instead.

Work is split over threads by output channel, in chunks of balanced nonzero counts. Loop order:
output row, column tile, input-channel block, output channel, so the input segment that one
(row, tile, block) needs stays in cache while every output channel of the chunk reads it.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_VEC = ir.VectorType(_F32, 8)


def _micro_kernel(width: int):
    """``tile(out, o, x, x0, offs, vals, k0, k1)``: ``out[o:o+width] += sum_k vals[k] *
    x[x0 + offs[k] : x0 + offs[k] + width]`` for ``k`` in ``[k0, k1)`` (float32, unchecked).

    The main loop takes ``sets`` nonzeros per iteration into separate accumulator sets, so that
    8 independent FMA chains hide the FMA latency (two FMA units x four cycles); a tail loop
    takes the remainder one at a time.
    """
    nvec = width // 8
    sets = max(1, 8 // nvec)

    @intrinsic
    def tile(typingctx, out, o, x, x0, offs, vals, k0, k1):
        sig = types.void(out, o, x, x0, offs, vals, k0, k1)

        def codegen(context, builder, signature, args):
            out_t, _, x_t, _, offs_t, vals_t, _, _ = signature.args
            out_v, o_v, x_v, x0_v, offs_v, vals_v, k0_v, k1_v = args
            out_p = context.make_array(out_t)(context, builder, out_v).data
            x_p = context.make_array(x_t)(context, builder, x_v).data
            offs_p = context.make_array(offs_t)(context, builder, offs_v).data
            vals_p = context.make_array(vals_t)(context, builder, vals_v).data
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_VEC, [_VEC, _VEC, _VEC]), "llvm.fma.v8f32"
            )
            zero = ir.Constant(_VEC, [0.0] * 8)

            def multiply_add(k, accs):
                base = builder.add(x0_v, builder.load(builder.gep(offs_p, [k])))
                weight = builder.load(builder.gep(vals_p, [k]))
                splat = builder.shuffle_vector(
                    builder.insert_element(ir.Constant(_VEC, ir.Undefined), weight, _I32(0)),
                    ir.Constant(_VEC, ir.Undefined),
                    ir.Constant(ir.VectorType(_I32, 8), [0] * 8),
                )
                updated = []
                for i, acc in enumerate(accs):
                    ptr = builder.gep(x_p, [builder.add(base, _I64(8 * i))])
                    segment = builder.load(builder.bitcast(ptr, _VEC.as_pointer()), align=4)
                    updated.append(builder.call(fma, [segment, splat, acc]))
                return updated

            entry = builder.basic_block
            main = builder.append_basic_block("tile.main")
            middle = builder.append_basic_block("tile.middle")
            tail = builder.append_basic_block("tile.tail")
            done = builder.append_basic_block("tile.done")
            main_end = builder.sub(k1_v, _I64(sets - 1))
            builder.cbranch(builder.icmp_signed("<", k0_v, main_end), main, middle)

            builder.position_at_end(main)
            k = builder.phi(_I64)
            accs = [[builder.phi(_VEC) for _ in range(nvec)] for _ in range(sets)]
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
                for i in range(nvec):
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
            tail_accs = [builder.phi(_VEC) for _ in range(nvec)]
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
            for i, final in enumerate(finals):
                ptr = builder.gep(out_p, [builder.add(o_v, _I64(8 * i))])
                ptr = builder.bitcast(ptr, _VEC.as_pointer())
                builder.store(builder.fadd(builder.load(ptr, align=4), final), ptr, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tile


_tile8 = _micro_kernel(8)
_tile16 = _micro_kernel(16)
_tile32 = _micro_kernel(32)


@njit(inline="always")
def _tile(width, out, o, x, x0, offs, vals, k0, k1):
    if width == 32:
        _tile32(out, o, x, x0, offs, vals, k0, k1)
    elif width == 16:
        _tile16(out, o, x, x0, offs, vals, k0, k1)
    else:
        _tile8(out, o, x, x0, offs, vals, k0, k1)


@njit(parallel=True, cache=True)
def sparse_conv(
    x, plane, batch, in_channels, ptr, offs, vals, bias, row_base, kh_lo, kh_hi,
    tile_col, tile_width, kw_lo, kw_hi, kernel_w, out_h, out_stride, out, bounds,
):  # fmt: skip
    """Sparse direct convolution of a packed input into ``out`` (see ``layers.DirectGeometry``).

    ``ptr[oc, b, tap]`` delimits the nonzeros of output channel ``oc``, input-channel block ``b``
    and kernel tap ``tap = kh * kernel_w + kw`` in ``offs``/``vals``; ``offs`` are offsets into the
    packed input relative to the start of an output row (``row_base[r]``). Rows ``r`` only visit
    the kernel rows ``[kh_lo[r], kh_hi[r])`` that fall inside the image, column tiles only the
    kernel columns ``[kw_lo[t], kw_hi[t])``.
    """
    out_channels = ptr.shape[0]
    blocks = ptr.shape[1]
    out_plane = out_h * out_stride
    for chunk in prange(bounds.shape[0] - 1):
        lo = bounds[chunk]
        hi = bounds[chunk + 1]
        for n in range(batch):
            for oc in range(lo, hi):
                start = (n * out_channels + oc) * out_plane
                value = bias[oc]
                for p in range(out_plane):
                    out[start + p] = value
            x_n = n * in_channels * plane
            for r in range(out_h):
                x_row = x_n + row_base[r]
                k_first = kh_lo[r] * kernel_w
                k_last = kh_hi[r] * kernel_w
                for t in range(tile_col.shape[0]):
                    c = tile_col[t]
                    width = tile_width[t]
                    whole_rows = kw_lo[t] == 0 and kw_hi[t] == kernel_w
                    for b in range(blocks):
                        for oc in range(lo, hi):
                            taps = ptr[oc, b]
                            o = (n * out_channels + oc) * out_plane + r * out_stride + c
                            if whole_rows:
                                _tile(
                                    width, out, o, x, x_row + c, offs, vals,
                                    taps[k_first], taps[k_last],
                                )  # fmt: skip
                            else:
                                for kh in range(kh_lo[r], kh_hi[r]):
                                    _tile(
                                        width, out, o, x, x_row + c, offs, vals,
                                        taps[kh * kernel_w + kw_lo[t]],
                                        taps[kh * kernel_w + kw_hi[t]],
                                    )  # fmt: skip
    return out
