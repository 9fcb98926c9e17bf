"""Vector code written out for LLVM, where its loop vectoriser left the kernels short of
the host's arithmetic: the direct scans' blocks of rows, eight rows transposed into a mid
tile, and a row added to its cluster's sums. Every array they take is C-contiguous (the
typing refuses any other).

Why by hand: the mid scan holds four centers of up to 16 coordinates, 64 vector constants,
against 16 vector registers without AVX-512. Vectorised from a scalar loop, LLVM kept them
on the stack and reloaded each for every use, and spilled the tile's columns too: two loads
for each multiply-add, and the scan ran at 41 GFLOP/s on one core of an AMD EPYC (AVX2)
whose GEMM reaches 95. A block here takes two vectors of rows at once and loads each center
coordinate once for both (loads in the block, so that LLVM cannot hoist them into spills):
0.75 loads a multiply-add, and 66 GFLOP/s on the same core (1e6x16, k=64: 31 ms against 50
to label every row). A block is straight-line code, with no loop for LLVM to vectorise:
the scans compile faster than the loops did.
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import config, types
from numba.core import cgutils
from numba.core.extending import intrinsic

# Imported first, as in _common: numba's CPU features are chosen as the engine is imported.
from . import threads  # noqa: F401

# The mid scan's lower features: from NARROW + 1 to this many, the tile's upper rows are
# left out. Rows of this many values are also what one transposed block holds.
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


VECTOR_BYTES = _vector_bytes()
# A block of a scan: two of the widest vectors of rows.
BLOCK_BYTES = 2 * VECTOR_BYTES


def _contiguous(*arrays: types.Type) -> bool:
    """Whether every one of these numba types is a C-contiguous array."""
    return all(isinstance(array, types.Array) and array.layout == "C" for array in arrays)


def _fmuladd_fn(builder: ir.IRBuilder, vector: ir.VectorType, bits: int) -> ir.Function:
    """LLVM's multiply-add of vectors of floats of ``bits``: fused on a host with FMA."""
    signature = ir.FunctionType(vector, [vector] * 3)
    return cgutils.get_or_insert_function(builder.module, signature, f"llvm.fmuladd.v{vector.count}f{bits}")


def make_scan_block(n_features: int, with_second: bool = False):  # type: ignore[no-untyped-def]
    """A scan's block over the first n_features rows of its tile: a mid tile's LOWER or MID,
    a narrow tile's 3 or 4; with_second, a group scan's, which keeps the second-smallest
    value too."""
    codegen = _scan_block_codegen(n_features, with_second)
    if with_second:

        @intrinsic
        def group_block(typingctx, tile_t, r, centers_s, rows_of, halves, ids, best_value, best_id,
                        second_value):
            """scan_block, also keeping second_value as _groups._best_and_second does."""
            if not _contiguous(tile_t, centers_s, best_value, best_id, second_value):
                return None
            return types.none(tile_t, r, centers_s, rows_of, halves, ids, best_value, best_id,
                              second_value), codegen

        return group_block

    @intrinsic
    def scan_block(typingctx, tile_t, r, centers_s, rows_of, halves, ids, best_value, best_id):
        """For BLOCK_BYTES of the tile's columns from r, the four centers rows_of (a 4-tuple
        of indices into centers_s), half their squared norms and their ids (4-tuples of the
        tile's dtype): best_value and best_id there updated as _nearest._nearest_of_four
        does. Each value half - (x - s).(c - s) is one chain of multiply-adds in feature
        order from half, the same in every block."""
        if not _contiguous(tile_t, centers_s, best_value, best_id):
            return None
        return types.none(tile_t, r, centers_s, rows_of, halves, ids, best_value, best_id), codegen

    return scan_block


def _scan_block_codegen(n_features: int, with_second: bool):  # type: ignore[no-untyped-def]
    """The code of make_scan_block's blocks."""

    def codegen(context, builder, signature, args):
        tile_a, column, centers_a, rows_a, halves_a, ids_a, best_a, id_a = args[:8]
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
        # The centers' base through an empty statement LLVM cannot see into: their loads then
        # stay in the block, next to their two uses, instead of hoisted into stack slots.
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

        def smaller(a, b):  # numba's min(a, b) of floats: b if b < a, else a
            return builder.select(builder.fcmp_ordered("<", b, a), b, a)

        starts = [builder.mul(builder.extract_value(rows_a, c), width) for c in range(4)]
        # Each value half - (x - s).(c - s), from half down by a negated multiply-add per
        # feature (vfnmadd): no product of its own for the first feature, nor a subtraction
        # at the end (the narrow scan of 1e6x3 at k=16 took 6-8% less time).
        values = [splat(builder.extract_value(halves_a, c)) for c in range(4)]
        for f in range(n_features):
            offset = builder.add(builder.mul(ir.Constant(index, f), n_columns), column)
            x = builder.fneg(builder.load(at(tile.data, offset), align=itemsize))
            for c in range(4):
                coordinate = builder.load(builder.gep(base, [builder.add(starts[c], ir.Constant(index, f))]))
                values[c] = builder.call(fused, [splat(coordinate), x, values[c]])
        best_at, id_at = at(best_arr.data, column), at(id_arr.data, column)
        best = builder.load(best_at, align=itemsize)
        current = builder.load(id_at, align=itemsize)
        if with_second:
            second_arr = context.make_array(signature.args[8])(context, builder, args[8])
            second_at = at(second_arr.data, column)
            second = builder.load(second_at, align=itemsize)
        for c in range(4):
            value = values[c]
            if with_second:  # as _best_and_second: min(second, max(value, best)) first
                larger = builder.select(builder.fcmp_ordered(">", best, value), best, value)
                second = smaller(second, larger)
            # As _nearest_of_four: the id if strictly smaller, then min(value, best).
            current = builder.select(builder.fcmp_ordered("<", value, best),
                                     splat(builder.extract_value(ids_a, c)), current)
            best = smaller(value, best)
        builder.store(best, best_at, align=itemsize)
        builder.store(current, id_at, align=itemsize)
        if with_second:
            builder.store(second, second_at, align=itemsize)
        return context.get_dummy_value()

    return codegen


# An 8 x 8 transpose in three rounds of two-vector shuffles, each one instruction with AVX:
# pairs of rows interleaved, then pairs of pairs, then the halves.
_TRANSPOSE_ROUNDS = (
    ([0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15], ((0, 1), (2, 3), (4, 5), (6, 7))),
    ([0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15], ((0, 2), (1, 3), (4, 6), (5, 7))),
    ([0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15], ((0, 4), (1, 5), (2, 6), (3, 7))),
)
# A round's outputs are each pair's low and high shuffles, in order; after the third,
# feature f's values across the eight rows are output _FEATURE_AT[f].
_FEATURE_AT = (0, 2, 4, 6, 1, 3, 5, 7)


@intrinsic
def put_rows_transposed(typingctx, X, row, shift, tile_t, column):
    """tile_t[:d, column:column + 8] = (X[row:row + 8] - shift).T for X of d = LOWER or 2 *
    LOWER features (C-contiguous): eight rows loaded as vectors and transposed by shuffles,
    each value X[i, f] - shift[f] as the scalar loop subtracts it.

    The scalar loop filled every (16, 256) tile of 1e6x16 in 8.5 ms on one thread of an AMD
    EPYC, a value at a time; reading the 64 MB alone takes 3.2 ms there."""
    if not _contiguous(X, shift, tile_t):
        return None
    sig = types.none(X, row, shift, tile_t, column)

    def codegen(context, builder, signature, args):
        X_a, row_v, shift_a, tile_a, column_v = args
        dtype = signature.args[0].dtype
        itemsize = dtype.bitwidth // 8
        vector = ir.VectorType(context.get_value_type(dtype), LOWER)
        index = ir.IntType(64)
        rows = context.make_array(signature.args[0])(context, builder, X_a)
        shift = context.make_array(signature.args[2])(context, builder, shift_a)
        tile = context.make_array(signature.args[3])(context, builder, tile_a)
        width = builder.extract_value(rows.shape, 1)
        n_columns = builder.extract_value(tile.shape, 1)
        undef = ir.Constant(vector, ir.Undefined)
        lane_zero = ir.Constant(ir.IntType(32), 0)
        everywhere = ir.Constant(ir.VectorType(ir.IntType(32), LOWER), [0] * LOWER)

        def at(pointer, offset):
            return builder.bitcast(builder.gep(pointer, [offset]), vector.as_pointer())

        def transpose_half(first_feature):
            values = []
            for q in range(LOWER):
                offset = builder.add(builder.mul(builder.add(row_v, ir.Constant(index, q)), width),
                                     ir.Constant(index, first_feature))
                values.append(builder.load(at(rows.data, offset), align=itemsize))
            for low, high, pairs in _TRANSPOSE_ROUNDS:
                mixed = []
                for a, b in pairs:
                    mixed.append(builder.shuffle_vector(values[a], values[b], ir.Constant(
                        ir.VectorType(ir.IntType(32), LOWER), low)))
                    mixed.append(builder.shuffle_vector(values[a], values[b], ir.Constant(
                        ir.VectorType(ir.IntType(32), LOWER), high)))
                values = mixed
            for f, held in enumerate(_FEATURE_AT):
                feature = first_feature + f
                value = builder.load(builder.gep(shift.data, [ir.Constant(index, feature)]))
                splat = builder.shuffle_vector(builder.insert_element(undef, value, lane_zero), undef, everywhere)
                offset = builder.add(builder.mul(ir.Constant(index, feature), n_columns), column_v)
                builder.store(builder.fsub(values[held], splat), at(tile.data, offset), align=itemsize)

        transpose_half(0)
        with builder.if_then(builder.icmp_signed(">", width, ir.Constant(index, LOWER))):
            transpose_half(LOWER)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def add_row(typingctx, X, i, w, sums, best):
    """sums[best, :] += w * X[i, :] for X (n, d) and sums (k, d) float64, both C-contiguous:
    each value widened to float64, multiplied, then added, as a scalar loop does (no fused
    multiply-add), so the sums are the same to the bit. Rows of 8 or 16 values go as
    vectors, others a value at a time.

    With the width read at run time, LLVM kept a numba loop scalar: each value loaded,
    widened, added and stored alone, and adding 1e6 rows of 16 float32 values took 6.6 ms
    on one thread of the AMD EPYC. One call, whatever the width: numba then keeps no
    reference counts on the arrays around it, which, in a branch for each width, cost
    three atomic operations a row."""
    if not _contiguous(X, sums):
        return None
    sig = types.none(X, i, w, sums, best)

    def codegen(context, builder, signature, args):
        dtype = signature.args[0].dtype
        rows = context.make_array(signature.args[0])(context, builder, args[0])
        totals = context.make_array(signature.args[3])(context, builder, args[3])
        row = context.cast(builder, args[1], signature.args[1], types.int64)
        weight = context.cast(builder, args[2], signature.args[2], types.float64)
        cluster = context.cast(builder, args[4], signature.args[4], types.int64)
        width = builder.extract_value(rows.shape, 1)
        values_at = builder.gep(rows.data, [builder.mul(row, width)])
        totals_at = builder.gep(totals.data, [builder.mul(cluster, width)])
        align = dtype.bitwidth // 8

        def add(values_ptr, totals_ptr, lanes):
            value_type = context.get_value_type(dtype)
            if lanes:
                value_type = ir.VectorType(value_type, lanes)
                values_ptr = builder.bitcast(values_ptr, value_type.as_pointer())
                totals_ptr = builder.bitcast(totals_ptr, ir.VectorType(ir.DoubleType(), lanes).as_pointer())
            values = builder.load(values_ptr, align=align)
            if dtype.bitwidth != 64:
                values = builder.fpext(values, ir.VectorType(ir.DoubleType(), lanes) if lanes else ir.DoubleType())
            scale = weight
            if lanes:
                undef = ir.Constant(ir.VectorType(ir.DoubleType(), lanes), ir.Undefined)
                scale = builder.shuffle_vector(
                    builder.insert_element(undef, weight, ir.Constant(ir.IntType(32), 0)), undef,
                    ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))
            builder.store(builder.fadd(builder.load(totals_ptr, align=8), builder.fmul(scale, values)), totals_ptr,
                          align=8)

        index = ir.IntType(64)
        switch_on = builder.icmp_signed("==", width, ir.Constant(index, 16))
        with builder.if_else(switch_on) as (sixteen, other):
            with sixteen:
                add(values_at, totals_at, 16)
            with other:
                with builder.if_else(builder.icmp_signed("==", width, ir.Constant(index, 8))) as (eight, rest):
                    with eight:
                        add(values_at, totals_at, 8)
                    with rest:
                        with cgutils.for_range(builder, width) as loop:
                            add(builder.gep(values_at, [loop.index]), builder.gep(totals_at, [loop.index]), 0)
        return context.get_dummy_value()

    return sig, codegen
