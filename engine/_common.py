"""Kernel helpers the engine's compiled modules share: the decorators, chunking, tiles of
rows and a step's scratch for them, and the squared distance between two rows.

Work is split into chunks whose count depends only on the problem size, never on the number
of threads, and partial results are reduced in chunk order, so that a given input gives
bitwise the same output whatever the thread count.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Imported first: it chooses the vector width numba compiles for, which only counts before the
# first intrinsic (in _blocks) makes numba's code generator.
from . import threads  # noqa: F401
from ._blocks import LOWER, put_rows_transposed

_MIN_CHUNK_ROWS = 2048
MAX_CHUNKS = 128
# Per-chunk sums are zeroed every step and reduced after it: at 32 MiB a bounded step on
# 1e5x128 with k=1024 (32 chunks) spent more time on them than on its rows.
_PARTIAL_SUMS_BUDGET_BYTES = 8 * 1024 * 1024

# Every public kernel: a serial function of (first, stop, ...) doing chunks first..stop-1,
# callable without the GIL and cached on disk; ``chunks.run`` spreads it over threads.
kernel = njit(nogil=True, cache=True)
# The nearest-center scans run over a tile's rows with no branch, so LLVM vectorises them
# (or go by blocks written for it, _blocks). Only contraction into FMAs is allowed: no
# reassociation, so results still depend on nothing but the input. They are called, not
# inlined: inlining would drop their fastmath flags.
scan = njit(nogil=True, cache=True, fastmath={"contract"})


def n_chunks_for(n_samples: int, n_clusters: int = 1, n_features: int = 1) -> int:
    """How many chunks to split n_samples rows into; independent of thread count."""
    by_rows = math.ceil(n_samples / _MIN_CHUNK_ROWS)
    by_memory = _PARTIAL_SUMS_BUDGET_BYTES // max(1, n_clusters * n_features * 8)
    return int(max(1, min(by_rows, MAX_CHUNKS, by_memory)))


@njit(inline="always", nogil=True, cache=True)
def chunk_bounds(n_samples, chunk, n_chunks):
    """Rows start..stop of chunk ``chunk`` of ``n_chunks`` (n_chunks_for's count): equal runs
    but the last, so that a row's chunk depends on the problem, not the threads."""
    chunk_rows = (n_samples + n_chunks - 1) // n_chunks
    start = chunk * chunk_rows
    return start, min(start + chunk_rows, n_samples)


@njit(inline="always", nogil=True, cache=True)
def sq_distance(X, i, centers, j):
    """Squared Euclidean distance between row i of X and row j of centers, in float64.

    Four running sums, in a fixed order, so that wide rows do not wait on one chain of
    additions; the result depends on nothing but the two rows.
    """
    n_features = X.shape[1]
    s0 = s1 = s2 = s3 = 0.0
    wide = n_features - n_features % 4
    for f in range(0, wide, 4):
        d0 = np.float64(X[i, f]) - centers[j, f]
        d1 = np.float64(X[i, f + 1]) - centers[j, f + 1]
        d2 = np.float64(X[i, f + 2]) - centers[j, f + 2]
        d3 = np.float64(X[i, f + 3]) - centers[j, f + 3]
        s0 += d0 * d0
        s1 += d1 * d1
        s2 += d2 * d2
        s3 += d3 * d3
    for f in range(wide, n_features):
        diff = np.float64(X[i, f]) - centers[j, f]
        s0 += diff * diff
    return (s0 + s1) + (s2 + s3)


# Rows per GEMM tile: the tile and its k dot products stay in cache.
TILE_ROWS = 256


def n_tiles_for(n_samples: int) -> int:
    """How many tiles of TILE_ROWS rows n_samples rows make: the chunks of ``_lloyd.assign``."""
    return (n_samples + TILE_ROWS - 1) // TILE_ROWS

# Up to this many features a tile is not multiplied by BLAS but scanned directly
# (_nearest._scan_direct); narrower data is padded with zero features to this width.
NARROW = 4
# Past NARROW and up to this many, a tile is scanned directly too (_nearest._scan_direct),
# padded to MID features. Both keep a tile transposed: a row per feature, a column per row.
MID = 16


@njit(inline="always", nogil=True, cache=True)
def is_narrow(X):
    """Whether X's tiles are narrow: at most NARROW features."""
    return X.shape[1] <= NARROW


@njit(inline="always", nogil=True, cache=True)
def is_transposed(X):
    """Whether X's tiles hold a row per feature (at most MID features), scanned without BLAS."""
    return X.shape[1] <= MID


@njit(inline="always", nogil=True, cache=True)
def tile_width(n_features):
    """Columns of the shifted centers: NARROW or MID for data up to that wide, else d."""
    if n_features <= NARROW:
        return NARROW
    return MID if n_features <= MID else n_features


@njit(inline="always", nogil=True, cache=True)
def new_tile(X):
    """A zeroed tile for X's rows: (NARROW or MID, T), a row per feature, for data up to
    that wide; else (T, d), a row per data row.

    Wide tiles keep X's layout: filling a transposed one stored each value 1 KB past the
    last, and took as long as a third of the GEMM (2e5x64, k=256: 25 ms against 4 ms).
    """
    if is_transposed(X):
        return np.zeros((tile_width(X.shape[1]), TILE_ROWS), dtype=X.dtype)
    return np.zeros((TILE_ROWS, X.shape[1]), dtype=X.dtype)


@njit(inline="always", nogil=True, cache=True)
def tile_dots(X, centers_s, tile, dots):
    """dots (k, T) = centers_s . (the tile's rows of X, shifted) by one GEMM, either layout."""
    if is_transposed(X):
        np.dot(centers_s, tile, dots)
    else:
        np.dot(centers_s, tile.T, dots)


@njit(nogil=True, cache=True)
def shifted_centers(centers, shift, centers_s, half_sq_norms):
    """centers_s[:, :d] = centers - shift and half_sq_norms (k,) = |centers - shift|^2 / 2."""
    n_clusters, n_features = centers.shape
    for j in range(n_clusters):
        norm = 0.0
        for f in range(n_features):
            value = centers[j, f] - shift[f]
            centers_s[j, f] = value
            norm += value * value
        half_sq_norms[j] = 0.5 * norm


@njit(inline="always", nogil=True, cache=True)
def put_rows(X, start, rows, shift, tile):
    """Rows 0..rows-1 of a wide tile (T, d) = rows start.. of X - shift."""
    for r in range(rows):
        for f in range(X.shape[1]):
            tile[r, f] = X[start + r, f] - shift[f]


@njit(inline="always", nogil=True, cache=True)
def put_row(X, i, shift, tile, r):
    """Place r of either tile layout = row i of X - shift; returns its |.|^2 in float64."""
    transposed = is_transposed(X)
    norm = 0.0
    for f in range(X.shape[1]):
        value = X[i, f] - shift[f]
        if transposed:
            tile[f, r] = value
        else:
            tile[r, f] = value
        norm += np.float64(value) * value
    return norm


@njit(nogil=True, cache=True)
def put_narrow_tile(X, start, rows, shift, tile_t):
    """Columns 0..rows-1 of the (NARROW, T) tile = rows start.. of X - shift, for d <= NARROW.

    A tile row past the data's features repeats its last feature: the zero centers_s columns
    cancel it. The rows are read as one flat run of values, each width read with its own
    constant stride (_fill_narrow), so that LLVM loads them as vectors and deinterleaves:
    with X's row stride read at run time the loop stayed scalar, and filling every tile of
    1e6x3 took 2.1 ms on one thread against 0.55 ms (an AMD EPYC with AVX2).
    """
    flat = X[start:start + rows].reshape(-1)
    width = X.shape[1]
    if width == 3:
        _fill_narrow(flat, 3, rows, shift, tile_t)
    elif width == 2:
        _fill_narrow(flat, 2, rows, shift, tile_t)
    elif width == 4:
        _fill_narrow(flat, 4, rows, shift, tile_t)
    else:
        _fill_narrow(flat, 1, rows, shift, tile_t)


@njit(inline="always", nogil=True, cache=True)
def _fill_narrow(flat, width, rows, shift, tile_t):
    """put_narrow_tile for rows of ``width`` features, a constant where it is inlined."""
    last = width - 1
    f1 = min(1, last)
    f2 = min(2, last)
    f3 = min(3, last)
    s0 = shift[0]
    s1 = shift[f1]
    s2 = shift[f2]
    s3 = shift[f3]
    for r in range(rows):
        at = width * r
        tile_t[0, r] = flat[at] - s0
        tile_t[1, r] = flat[at + f1] - s1
        tile_t[2, r] = flat[at + f2] - s2
        tile_t[3, r] = flat[at + f3] - s3


@njit(nogil=True, cache=True)
def dot_t(a, b):
    """a . b.T for float64 matrices, through the BLAS the kernels use: single-threaded.

    The Lloyd driver's small products on the centers go through here rather than numpy's
    BLAS, whose idle threads spin for a while after each call and took a core from the
    next step (1e5x128, k=1024: 187 ms for a plain step after one, 123 ms otherwise).
    """
    return np.dot(a, b.T)


@njit(nogil=True, cache=True)
def put_mid_tile(X, start, rows, shift, tile_t):
    """Columns 0..rows-1 of the (MID, T) tile = rows start.. of X - shift, for
    NARROW < d <= MID: tile rows past the data's features repeat its last; at d <= 8 the
    upper 8 rows are left as they are (the scan leaves them out). Rows of exactly 8 or 16
    features go eight at a time through _blocks.put_rows_transposed (1e6x16 float32, every
    tile on one thread of the AMD EPYC: 5.2 ms against 9.1), the rest through _fill_mid:
    the same values."""
    width = X.shape[1]
    if width == LOWER or width == 2 * LOWER:
        transposed = rows - rows % LOWER
        for r in range(0, transposed, LOWER):
            put_rows_transposed(X, start + r, shift, tile_t, r)
        _fill_mid(X, start, transposed, rows, shift, tile_t)
    else:  # from 0 in a call of its own: from a start read at run time, filling 1e6 rows
        # of 9 or 12 features took 8.0 ms against 6.5 (one thread, one process, AMD EPYC)
        _fill_mid(X, start, 0, rows, shift, tile_t)


@njit(inline="always", nogil=True, cache=True)
def _fill_mid(X, start, first, rows, shift, tile_t):
    """Columns first..rows-1 of put_mid_tile, a value at a time: unrolled as
    put_narrow_tile."""
    last = X.shape[1] - 1
    upper = last >= 8
    f = (0, 1, 2, 3, 4, min(5, last), min(6, last), min(7, last), min(8, last), min(9, last),
         min(10, last), min(11, last), min(12, last), min(13, last), min(14, last), min(15, last))
    s = (shift[f[0]], shift[f[1]], shift[f[2]], shift[f[3]], shift[f[4]], shift[f[5]],
         shift[f[6]], shift[f[7]], shift[f[8]], shift[f[9]], shift[f[10]], shift[f[11]],
         shift[f[12]], shift[f[13]], shift[f[14]], shift[f[15]])
    for r in range(first, rows):
        i = start + r
        tile_t[0, r] = X[i, f[0]] - s[0]
        tile_t[1, r] = X[i, f[1]] - s[1]
        tile_t[2, r] = X[i, f[2]] - s[2]
        tile_t[3, r] = X[i, f[3]] - s[3]
        tile_t[4, r] = X[i, f[4]] - s[4]
        tile_t[5, r] = X[i, f[5]] - s[5]
        tile_t[6, r] = X[i, f[6]] - s[6]
        tile_t[7, r] = X[i, f[7]] - s[7]
        if upper:
            tile_t[8, r] = X[i, f[8]] - s[8]
            tile_t[9, r] = X[i, f[9]] - s[9]
            tile_t[10, r] = X[i, f[10]] - s[10]
            tile_t[11, r] = X[i, f[11]] - s[11]
            tile_t[12, r] = X[i, f[12]] - s[12]
            tile_t[13, r] = X[i, f[13]] - s[13]
            tile_t[14, r] = X[i, f[14]] - s[14]
            tile_t[15, r] = X[i, f[15]] - s[15]


@njit(nogil=True, cache=True)
def assign_setup(X, centers, shift):
    """The shifted centers and half their squared norms, in X's dtype."""
    n_clusters, n_features = centers.shape
    centers_s = np.zeros((n_clusters, tile_width(n_features)), dtype=X.dtype)
    half_sq_norms = np.empty(n_clusters, dtype=X.dtype)
    shifted_centers(centers, shift, centers_s, half_sq_norms)
    return centers_s, half_sq_norms


@njit(inline="always", nogil=True, cache=True)
def step_setup(X, centers, shift):
    """What every chunk of a step shares: the shifted centers, half their squared norms,
    and the center ids 0..k-1 in X's dtype."""
    centers_s, half_sq_norms = assign_setup(X, centers, shift)
    return centers_s, half_sq_norms, np.arange(centers.shape[0]).astype(X.dtype)


@njit(inline="always", nogil=True, cache=True)
def zeroed(sums, weights):
    """A chunk's sums and weights set to zero, for a step to add to."""
    sums[:, :] = 0.0
    weights[:] = 0.0


@njit(inline="always", nogil=True, cache=True)
def tile_buffers(X, n_clusters, exact_inertia):
    """Scratch for labelling tiles, kept from chunk to chunk of a call: the tile, its dots
    (k, T), each column's best value and center id, and (unless the inertia is exact) each
    row's |x - s|^2."""
    return (
        new_tile(X), np.empty((n_clusters, TILE_ROWS), dtype=X.dtype),
        np.empty(TILE_ROWS, dtype=X.dtype), np.empty(TILE_ROWS, dtype=X.dtype),
        np.empty(0 if exact_inertia else TILE_ROWS, dtype=X.dtype),
    )
