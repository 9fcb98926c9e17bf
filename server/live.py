"""A streamed model as its owner holds it in memory, the parameters it is created with, and a
batch on its way through it."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from centroidal import codec
from centroidal.engine.kmeans import fresh_seed
from centroidal.engine.minibatch import MiniBatchParams, MiniBatchState

from .config import ServerConfig
from .exceptions import InvalidRequest, LimitExceeded, StreamMoved
from .leases import Lease, LeaseLost
from .registry import Registry
from .shared_rows import SharedPoints
from .snapshots import ModelSnapshot


def params_from_config(config: codec.MiniBatchConfig, limits: ServerConfig) -> MiniBatchParams:
    """Validate a create_if_missing config; the engine's own checks name engine fields, which
    the errors table maps to wire fields."""
    prefix = "open.create_if_missing"
    if config.n_clusters < 1:
        raise InvalidRequest(f"{prefix}.n_clusters must be at least 1, got 0", field=f"{prefix}.n_clusters")
    if config.n_clusters > limits.max_clusters:
        raise LimitExceeded(
            f"{prefix}.n_clusters={config.n_clusters} exceeds the server's limit of {limits.max_clusters}",
            field=f"{prefix}.n_clusters",
        )
    if config.init_size > limits.max_points:
        raise LimitExceeded(
            f"{prefix}.init_size={config.init_size} exceeds the server's limit of {limits.max_points} points",
            field=f"{prefix}.init_size",
        )
    params = MiniBatchParams(
        n_clusters=config.n_clusters,
        init_size=config.init_size,
        reassignment_ratio=0.01 if config.reassignment_ratio is None else config.reassignment_ratio,
        half_life=config.half_life,
        half_life_unit=config.half_life_unit,
        # Drawn now and recorded with the model, as a fit's is, so the model reports its seed.
        seed=fresh_seed() if config.seed is None else config.seed,
        metric=config.metric,
    )
    return params.check()


# A checkpoint of a model still buffering its init points holds up to three more copies of
# them while it writes: the serialised state as it grows (by doubling), and the blob taken
# from it.
CHECKPOINT_COPIES = 3


def held(state: MiniBatchState) -> int:
    buffered = state.nbytes - state.centers.nbytes - state.counts.nbytes
    return state.nbytes + CHECKPOINT_COPIES * buffered


class LiveModel:
    """One streamed model in memory. Everything but ``durable_version`` changes under the
    model's writer lock."""

    def __init__(self, name: str, params: MiniBatchParams) -> None:
        self.name = name
        self.params = params
        self.state: MiniBatchState | None = None  # created by the first batch
        self.producers: dict[str, int] = {}
        self.snapshot: ModelSnapshot | None = None  # what this model last published
        self.durable_version = 0
        self.dirty = False
        self.checkpoint_failure: str | None = None  # the last failed checkpoint's message
        self.streams = 0  # open streams; guarded by the hub's lock
        self.lease: Lease | None = None  # this replica's ownership of the stream
        self.lost: str | None = None  # why the lease is no longer ours, once it is not
        self.renewed_at = 0.0
        # Batches of every stream waiting for the writer lock (deque appends are atomic).
        self.queue: deque[Pending] = deque()

    def withdraw(self, stream: object) -> None:
        """Take the batches of ``stream`` still waiting out of the queue: that stream has
        ended, and has no ack left to give them. One already taken by whoever applies the
        queue is applied (deque removal is atomic, as its appends are)."""
        for entry in tuple(self.queue):
            if entry.stream is stream:
                with contextlib.suppress(ValueError):  # taken meanwhile
                    self.queue.remove(entry)

    def moved(self, lost: LeaseLost | None = None) -> StreamMoved:
        """What this model's streams end with once its lease is gone (noted here from
        ``lost``, when given)."""
        if lost is not None:
            self.lost = str(lost)
        return StreamMoved(f"{self.lost}; reconnect and resend what is not durable", field="open.model")

    @classmethod
    def from_snapshot(cls, snapshot: ModelSnapshot) -> LiveModel:
        if snapshot.state is None:
            raise RuntimeError(f"stored model {snapshot.name!r} has no streaming state")
        state = MiniBatchState.from_bytes(snapshot.state)
        live = cls(snapshot.name, state.params)
        live.state = state
        live.producers = {str(k): int(v) for k, v in snapshot.extra.get("producers", {}).items()}
        live.snapshot = snapshot
        # Loaded snapshots come from disk; newer ones were published by this process and
        # are on disk only up to the last checkpoint, which the hub tracks from here on.
        live.durable_version = snapshot.version
        return live




def is_stale(registry: Registry, live: LiveModel) -> bool:
    """True when another writer changed the name since this model last published: a fit,
    a delete, or (for a model not created yet) a fit that took the name first."""
    published = live.snapshot.version if live.snapshot is not None else 0
    return registry.current_version(live.name) != published


class Pending:
    """A decoded batch waiting for its model's lock, and what became of it."""

    __slots__ = ("producer", "sequence", "points", "weights", "stream", "result", "error", "applied")

    def __init__(
        self, producer: str, sequence: int, points: np.ndarray | SharedPoints, weights: np.ndarray | None,
        stream: object,
    ) -> None:
        self.stream = stream  # the call it came on
        self.producer = producer
        self.sequence = sequence
        self.points = points
        self.weights = weights
        self.result: BatchResult | None = None
        self.error: BaseException | None = None
        # Called with this batch, on the thread that applied it, when another stream's job
        # applied it: its stream need not wait for its own job to run to send the ack.
        self.applied: Callable[[Pending], None] | None = None


@dataclass(frozen=True)
class BatchResult:
    """What the stream handler turns into an ack."""

    version: int
    batch_inertia: float
    n_samples_seen: int
    durable_version: int
    duplicate: bool
