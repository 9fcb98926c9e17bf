"""Vector code written out for LLVM, where its loop vectoriser left a scan short of the
host's arithmetic: the mid scan's block of rows, and the fused multiply-add every form of
that scan's values shares.

Why by hand: the mid scan holds four centers of up to 16 coordinates, 64 vector constants,
against 16 vector registers without AVX-512. Vectorised from the scalar loop, LLVM keeps
them on the stack and reloads each for every use, and spills the tile's columns too: two
loads for each multiply-add, and the scan ran at 41 GFLOP/s on one core of an AMD EPYC
(AVX2) whose GEMM reaches 95. A block here takes two vectors of rows at once and loads
each center coordinate once for both (loads in the loop, so that LLVM cannot hoist them
into spills): 0.75 loads a multiply-add, and 66 GFLOP/s on the same core (1e6x16, k=64:
31 ms against 50 to label every row).
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import config, types
from numba.core import cgutils
from numba.core.extending import intrinsic

from ._common import MID

# The mid scan's lower features: from NARROW + 1 to this many, the tile's upper rows are
# left out.
LOWER = 8


def _vector_bytes() -> int:
    """The widest vector the kernels are compiled for: 64 bytes with AVX-512, 32 with AVX,
    else 16. From NUMBA_CPU_FEATURES when set (numba compiles for those), else the host's."""
    features = config.CPU_FEATURES  # type: ignore[attr-defined]
    if features is not None:
        enabled = {name[1:] for name in features.split(",") if name.startswith("+")}
    else:
        try:
            enabled = {name for name, on in llvm.get_host_cpu_features().items() if on}
        except RuntimeError:
            enabled = set()
    if "avx512f" in enabled:
        return 64
    return 32 if "avx" in enabled else 16


# A block of the mid scan: two of the widest vectors of rows.
BLOCK_BYTES = 2 * _vector_bytes()


def _fmuladd_fn(builder: ir.IRBuilder, value_type: ir.Type, bits: int) -> ir.Function:
    """LLVM's multiply-add of value_type (floats of ``bits``, or vectors of them): fused on
    a host with FMA, as contraction would."""
    name = f"v{value_type.count}f{bits}" if isinstance(value_type, ir.VectorType) else f"f{bits}"
    signature = ir.FunctionType(value_type, [value_type] * 3)
    return cgutils.get_or_insert_function(builder.module, signature, f"llvm.fmuladd.{name}")


@intrinsic
def fmuladd(typingctx, a, b, c):
    """a * b + c for floats of one type, as one fused operation on a host with FMA.

    Every form of the mid scan's values (the block, the scalar loop after it, the bounded
    step's group scan) builds them from this, in the same order, so that all give the same
    value to the bit: left to contraction, LLVM fused a sum's first two products in
    whichever order it chose."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        return builder.call(_fmuladd_fn(builder, args[0].type, a.bitwidth), list(args))

    return a(a, b, c), codegen


def _make_mid_block(n_features: int):  # type: ignore[no-untyped-def]
    """The mid scan's block over the first n_features rows of a mid tile (LOWER or MID)."""

    @intrinsic
    def mid_block(typingctx, tile_t, r, centers_s, rows_of, halves, ids, best_value, best_id):
        """For BLOCK_BYTES of the tile's columns from r, the four centers rows_of (a 4-tuple
        of indices into centers_s), half their squared norms and their ids (4-tuples of the
        tile's dtype): best_value and best_id there updated as _nearest._nearest_of_four
        does, each value half - (x - s).(c - s) formed as _nearest._mid_value forms it."""
        sig = types.none(tile_t, r, centers_s, rows_of, halves, ids, best_value, best_id)

        def codegen(context, builder, signature, args):
            tile_a, column, centers_a, rows_a, halves_a, ids_a, best_a, id_a = args
            dtype = signature.args[0].dtype
            itemsize = dtype.bitwidth // 8
            lanes = BLOCK_BYTES // itemsize
            vector = ir.VectorType(context.get_value_type(dtype), lanes)
            index = ir.IntType(64)
            tile = context.make_array(signature.args[0])(context, builder, tile_a)
            centers = context.make_array(signature.args[2])(context, builder, centers_a)
            best_arr = context.make_array(signature.args[6])(context, builder, best_a)
            id_arr = context.make_array(signature.args[7])(context, builder, id_a)
            n_columns = builder.extract_value(tile.shape, 1)
            width = builder.extract_value(centers.shape, 1)
            # The centers' base through an empty statement LLVM cannot see into: their
            # loads then stay in the block, next to their two uses, instead of hoisted.
            opaque = ir.InlineAsm(ir.FunctionType(centers.data.type, [centers.data.type]), "", "=r,0",
                                  side_effect=True)
            base = builder.call(opaque, [centers.data])
            fused = _fmuladd_fn(builder, vector, dtype.bitwidth)
            undef = ir.Constant(vector, ir.Undefined)
            lane_zero = ir.Constant(ir.IntType(32), 0)
            everywhere = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)

            def splat(value):
                return builder.shuffle_vector(builder.insert_element(undef, value, lane_zero), undef, everywhere)

            def at(pointer, offset):
                return builder.bitcast(builder.gep(pointer, [offset]), vector.as_pointer())

            starts = [builder.mul(builder.extract_value(rows_a, c), width) for c in range(4)]
            sums = [None] * 4
            for f in range(n_features):
                offset = builder.add(builder.mul(ir.Constant(index, f), n_columns), column)
                x = builder.load(at(tile.data, offset), align=itemsize)
                for c in range(4):
                    coordinate = builder.load(builder.gep(base, [builder.add(starts[c], ir.Constant(index, f))]))
                    if sums[c] is None:
                        sums[c] = builder.fmul(splat(coordinate), x)
                    else:
                        sums[c] = builder.call(fused, [splat(coordinate), x, sums[c]])
            best_at, id_at = at(best_arr.data, column), at(id_arr.data, column)
            best = builder.load(best_at, align=itemsize)
            current = builder.load(id_at, align=itemsize)
            for c in range(4):
                value = builder.fsub(splat(builder.extract_value(halves_a, c)), sums[c])
                # As _nearest_of_four: the id if strictly smaller, then min(value, best).
                current = builder.select(builder.fcmp_ordered("<", value, best),
                                         splat(builder.extract_value(ids_a, c)), current)
                best = builder.select(builder.fcmp_ordered("<", best, value), best, value)
            builder.store(best, best_at, align=itemsize)
            builder.store(current, id_at, align=itemsize)
            return context.get_dummy_value()

        return sig, codegen

    return mid_block


mid_block_lower = _make_mid_block(LOWER)
mid_block_all = _make_mid_block(MID)
