"""The rows a Fit, Evaluate or SuggestK uploads, gathered into one array as they arrive.

Each chunk is checked against the first and against the server's limits as it comes, so an
upload past a limit is refused at the chunk that crosses it; the call's memory reservation
grows with the rows (all at once when the spec declared how many). When it did, each chunk
is copied into place on a worker thread while the event loop takes the next, and its values
are checked for NaN, Inf and magnitude there too, so a k-means fit need not read them again.
Otherwise values (and zero rows for cosine) and the rules of the fit's parameters are the
engine's to check, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from centroidal.engine import kmeans
from centroidal.engine.validation import values_fine

from .admission import STREAM_WINDOW_BYTES, CallWork, Incoming
from .config import ServerConfig
from .exceptions import InvalidRequest, LimitExceeded
from .limits import check_matrix, check_weights
from .memory import Reservation
from .runtime import Runtime
from .spare import NO_ROWS, SpareRows

T = TypeVar("T")
# Room left in a message for everything but the bulk payload.
ENVELOPE_BYTES = 64 * 1024
# What an upload holds beyond its rows while it arrives: each message exists as gRPC's
# buffer and the request's bytes before its rows are kept (a chunk that protobuf reads,
# under 64 KiB or past the usual shape, has a parsed copy too), the message before it may
# still be on its way into the buffer, and the stream's window may hold the next.
COPIES_IN_FLIGHT = 4


@dataclass(frozen=True)
class RowsPlan:
    """What a call's rows are checked against while they arrive.

    declared : the spec's n_samples, 0 when not declared
    n_clusters : the most centers the rows will be clustered into (their memory and message
        size are checked at the first chunk); n_clusters_field names where the spec sets it
    max_rows : the server's limit, or a spectral fit's (max_rows_why says which)
    init_centers : given initial centers, whose width the rows must have
    """

    declared: int
    n_clusters: int
    n_clusters_field: str
    weights_allowed: bool = True
    max_rows: int = 0
    max_rows_why: str = ""
    init_centers: np.ndarray | None = None


@dataclass
class FitData:
    """The rows of a call, gathered into one C-contiguous array, and their weights."""

    points: np.ndarray
    sample_weight: np.ndarray | None
    # Every value was found finite and small enough to square as its chunk arrived.
    values_checked: bool = False


def check_width(limits: ServerConfig, n_clusters: int, n_clusters_field: str, init_centers: np.ndarray | None,
                n_features: int, dtype: np.dtype, described: str) -> None:
    """Rows of ``n_features`` columns of ``dtype`` against a fit's spec: its n_clusters centers
    fit in one message, and given initial centers have as many columns (``described`` says
    what the rows have, in the refusal)."""
    if n_clusters * n_features * dtype.itemsize > limits.max_message_bytes - ENVELOPE_BYTES:
        raise LimitExceeded(
            f"{n_clusters} centers of {n_features} features would not fit in one "
            f"message under the server's limit of {limits.max_message_bytes} bytes",
            field=n_clusters_field,
        )
    if init_centers is not None and init_centers.shape[1] != n_features:
        raise InvalidRequest(
            f"spec.config.init_centers has {init_centers.shape[1]} columns but {described}",
            field="spec.config.init_centers.cols",
        )


class Gatherer:
    """Collects the chunks of one call's upload, checking every one against the first."""

    def __init__(self, limits: ServerConfig, plan: RowsPlan, memory: Reservation, work: CallWork,
                 pool: ThreadPoolExecutor, spare: SpareRows) -> None:
        self._limits = limits
        self._spare = spare
        self._plan = plan
        self._work, self._pool = work, pool
        # A declared upload's last chunk being copied into the buffer and its values checked
        # on ``pool``, while the event loop takes the next (numpy lets go of the GIL).
        self._copying: asyncio.Future[bool] | None = None
        self._values_fine = True  # of every chunk copied so far
        self._max_rows = min(limits.max_points, plan.max_rows or limits.max_points)
        # The call's memory: the rows as they arrive, then the engine's working arrays.
        self._memory = memory
        self._buffer: np.ndarray | None = None
        self._chunks: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []
        self._rows = 0
        self._dtype: np.dtype | None = None
        self._cols = 0
        self._weighted: bool | None = None
        self._in_flight = 0  # bytes reserved for messages on their way in

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def complete(self) -> bool:
        """Every declared row has arrived: the call goes on without waiting for the client
        to close its side."""
        return bool(self._plan.declared) and self._rows == self._plan.declared

    async def add(self, points: np.ndarray | None, sample_weight: np.ndarray | None, index: int) -> None:
        """Message ``index``'s rows (or none) and their weights (or none); while the budget
        has no room for them, waits for it without reading further."""
        if points is None:
            if sample_weight is not None:
                raise InvalidRequest(f"message {index} has sample_weight but no points", field="sample_weight")
            return
        limits = self._limits
        points = check_matrix(
            points, "points", max_rows=limits.max_points, max_cols=limits.max_features, allow_empty=True,
        )
        if self._dtype is None:
            await self._start(points)
        elif points.dtype != self._dtype or points.shape[1] != self._cols:
            raise InvalidRequest(
                f"message {index} has {points.shape[1]} columns of {points.dtype.name} but the "
                f"stream started with {self._cols} columns of {self._dtype.name}",
                field="points",
            )
        weighted = sample_weight is not None
        if weighted and not self._plan.weights_allowed:
            raise InvalidRequest("a spectral fit takes no sample_weight", field="sample_weight")
        rows = points.shape[0]
        if rows and self._weighted is None:
            self._weighted = weighted
        if rows and weighted != self._weighted:
            raise InvalidRequest(
                f"message {index}: sample_weight must be given for every chunk or for none",
                field="sample_weight",
            )
        if self._rows + rows > self._max_rows:
            why = self._plan.max_rows_why or "the server's limit"
            raise LimitExceeded(
                f"the stream carries more than the {self._max_rows} points {why} allows",
                field="points.rows",
            )
        data_bytes = (self._rows + rows) * self._cols * points.dtype.itemsize
        if data_bytes > limits.max_fit_bytes:
            raise LimitExceeded(
                f"the stream's data reached {data_bytes} bytes, over the server's limit of "
                f"{limits.max_fit_bytes} bytes per fit",
                field="points",
            )
        # Checked, the message's room is asked for: its copies on the way in, then its rows.
        await self._allow_in_flight(points.nbytes + (sample_weight.nbytes if sample_weight is not None else 0))
        if sample_weight is not None:
            weights = check_weights(sample_weight, "sample_weight", rows)
            if self._buffer is None:
                await self._memory.wait_for(rows * 8, self._limits.idle_timeout)
            self._weights.append(weights)
        if self._buffer is not None:
            if self._rows + rows > self._plan.declared:
                raise InvalidRequest(
                    f"the stream carries more rows than spec.n_samples={self._plan.declared}",
                    field="spec.n_samples",
                )
            await self._copied()
            self._copying = self._work.start(self._pool, _copy_rows, self._buffer, self._rows, points)
        else:
            await self._memory.wait_for(points.nbytes, self._limits.idle_timeout)
            self._chunks.append(points)
        self._rows += rows

    async def _copied(self) -> None:
        """Wait for the chunk being copied, if any."""
        copying, self._copying = self._copying, None
        if copying is not None:
            self._values_fine &= await copying

    async def _allow_in_flight(self, message_bytes: int) -> None:
        """Reserve room for messages like this one on their way in (held until the upload ends)."""
        needed = COPIES_IN_FLIGHT * message_bytes + STREAM_WINDOW_BYTES
        if needed > self._in_flight:
            await self._memory.wait_for(needed - self._in_flight, self._limits.idle_timeout)
            self._in_flight = needed

    async def _start(self, points: np.ndarray) -> None:
        self._dtype = points.dtype
        self._cols = points.shape[1]
        itemsize = points.dtype.itemsize
        plan, limits = self._plan, self._limits
        # Refused at the first chunk rather than after the whole upload.
        check_width(limits, plan.n_clusters, plan.n_clusters_field, plan.init_centers, self._cols, points.dtype,
                    f"points have {self._cols}")
        if plan.declared:
            if plan.declared * self._cols * itemsize > limits.max_fit_bytes:
                raise LimitExceeded(
                    f"spec.n_samples={plan.declared} rows of {self._cols} {points.dtype.name} "
                    f"exceed the server's limit of {limits.max_fit_bytes} bytes per fit",
                    field="spec.n_samples",
                )
            # Declared: the whole call's memory is asked for before the first row is kept.
            whole = plan.declared * (self._cols * itemsize + 8) + self._working_bytes(plan.declared)
            await self._memory.wait_for(whole, limits.idle_timeout)
            self._buffer = self._spare.take((plan.declared, self._cols), points.dtype)

    def _working_bytes(self, rows: int) -> int:
        assert self._dtype is not None
        return kmeans.working_bytes(rows, self._plan.n_clusters, self._cols, self._dtype)

    def discard(self) -> None:
        """Let go of every row gathered, and of their reservation, at once: before a refusal
        waits for the client to stop writing, and because a refused call's traceback keeps
        this object alive until the garbage collector finds it, which may be long after."""
        self._chunks.clear()
        self._weights.clear()
        self._buffer = None
        self._memory.release()

    async def finish(self, work: CallWork, pool: ThreadPoolExecutor) -> FitData:
        """The gathered rows, joined on ``pool``; an undeclared upload's working arrays are
        reserved first (waiting for room like its rows)."""
        if self._rows == 0:
            raise InvalidRequest("the stream carried no points", field="points")
        await self._copied()
        self._memory.give_back(self._in_flight)  # the upload has ended
        self._in_flight = 0
        if self._buffer is None:
            await self._memory.wait_for(self._working_bytes(self._rows), self._limits.idle_timeout)
        return await work.run(pool, self._join)

    def _join(self) -> FitData:
        """CPU work on the whole dataset, run off the event loop."""
        if self._buffer is not None:
            if self._rows != self._plan.declared:
                raise InvalidRequest(
                    f"spec.n_samples={self._plan.declared} but the stream carried {self._rows} rows",
                    field="spec.n_samples",
                )
            points = self._buffer
        else:
            # Each chunk is let go of once copied, so the upload is held about once, not twice.
            points = np.empty((self._rows, self._cols), dtype=self._chunks[0].dtype)
            chunks, at = self._chunks, 0
            for index, chunk in enumerate(chunks):
                points[at : at + chunk.shape[0]] = chunk
                at += chunk.shape[0]
                chunks[index] = NO_ROWS
            del chunk
        self._chunks.clear()
        weights = np.concatenate(self._weights).astype(np.float64) if self._weighted else None
        return FitData(points, weights, values_checked=self._buffer is not None and self._values_fine)


def _copy_rows(buffer: np.ndarray, at: int, points: np.ndarray) -> bool:
    """Copy a chunk's rows into their place; whether their values are fine (the engine's
    full check describes a chunk's bad values, should there be any)."""
    rows = buffer[at : at + points.shape[0]]
    rows[...] = points
    return values_fine(rows)


async def gather(
    runtime: Runtime, chunks: Incoming[T], first: T, rows: RowsPlan, memory: Reservation, work: CallWork,
    rows_of: Callable[[T], tuple[np.ndarray | None, np.ndarray | None]],
) -> FitData:
    """Every chunk of a call's upload, the first included, gathered and finished off the event
    loop. A refusal is sent once the client has stopped writing (``Incoming.drain``).

    With n_samples declared, reading stops at the last declared row: a client that sends its
    rows and waits without closing its side gets its answer (``no_rows_after`` checks, once
    the work is done, that nothing followed)."""
    gatherer = Gatherer(runtime.config, rows, memory, work, runtime.workers.fits, runtime.spare)
    try:
        async with chunks.drained_on_refusal(gatherer.discard):
            await gatherer.add(*rows_of(first), 0)
            index = 1
            while not gatherer.complete and (chunk := await chunks.next()) is not None:
                await gatherer.add(*rows_of(chunk), index)
                index += 1
            return await gatherer.finish(work, runtime.workers.fits)
    except BaseException:
        gatherer.discard()
        raise


# How long a call whose declared rows have all arrived waits for the client's next message
# (usually its half-close) before it commits its result.
LAST_LOOK_S = 0.05


async def no_rows_after(
    chunks: Incoming[T], rows: RowsPlan, rows_of: Callable[[T], tuple[np.ndarray | None, np.ndarray | None]],
) -> None:
    """Refuse a call whose client sent rows past its declared n_samples while it ran."""
    if not rows.declared:
        return  # the upload was read to its end
    message = await chunks.poll(LAST_LOOK_S)
    if message is None:
        return
    points, weights = rows_of(message)
    if (points is not None and points.shape[0]) or weights is not None:
        raise InvalidRequest(
            f"the stream carries more rows than spec.n_samples={rows.declared}", field="spec.n_samples"
        )
