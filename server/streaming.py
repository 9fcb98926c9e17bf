"""Models fed by StreamMiniBatch: exactly-once batches, live snapshots, checkpoints.

Each streamed model lives in memory as a ``LiveModel``: the engine's
MiniBatchState and the last sequence applied for each producer. A batch is
applied under the model's registry writer lock, so it is serialised with other
batches, fits and deletes. Every batch publishes a new snapshot at once, and
readers see it before it is on disk. A checkpointer thread stores each changed
model every ``checkpoint_interval`` seconds, and again when a stream closes and
at shutdown. The producers' sequences travel in the same row as the centers,
so after a crash the model and its dedup table agree: a producer that resends
everything above the durable version gets each batch applied exactly once.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from centroidal.engine.kmeans import fresh_seed
from centroidal.engine.minibatch import MiniBatchParams, MiniBatchState
from centroidal import codec

from .config import ServerConfig
from .exceptions import (
    InvalidRequest,
    LimitExceeded,
    ModelMismatch,
    ModelNotFound,
    ModelReplaced,
)
from .limits import check_matrix, check_weights, echo
from .memory import TRIM_AFTER, MemoryBudget, trim
from .metrics import Metrics
from .registry import Registry
from .snapshots import MINIBATCH_KMEANS, ModelSnapshot

log = logging.getLogger("centroidal.server")

MAX_PRODUCER_ID = 128


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


def _held(state: MiniBatchState) -> int:
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
        # Batches of every stream waiting for the writer lock (deque appends are atomic).
        self.queue: deque[_Pending] = deque()

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


class _Pending:
    """A decoded batch waiting for its model's lock, and what became of it."""

    __slots__ = ("producer", "sequence", "points", "weights", "result", "error")

    def __init__(
        self, producer: str, sequence: int, points: np.ndarray, weights: np.ndarray | None
    ) -> None:
        self.producer = producer
        self.sequence = sequence
        self.points = points
        self.weights = weights
        self.result: BatchResult | None = None
        self.error: BaseException | None = None


@dataclass(frozen=True)
class BatchResult:
    """What the stream handler turns into an ack."""

    version: int
    batch_inertia: float
    n_samples_seen: int
    durable_version: int
    duplicate: bool


class StreamHub:
    """All live models, and the thread that checkpoints them."""

    def __init__(self, config: ServerConfig, registry: Registry, metrics: Metrics, memory: MemoryBudget) -> None:
        self._config = config
        self._registry = registry
        self._metrics = metrics
        self._memory = memory
        self._lock = threading.Lock()
        self._live: dict[str, LiveModel] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def resident_bytes(self) -> int:
        """Memory of every live model's learning state, buffered init points included, each
        buffered point counted again for each copy a checkpoint makes of it."""
        with self._lock:
            models = list(self._live.values())
        return sum(_held(live.state) for live in models if live.state is not None)

    # ---- Streams ------------------------------------------------------------------

    def open(self, name: str, create: codec.MiniBatchConfig | None) -> LiveModel:
        """The live model for a new stream; created (lazily, at the first batch) if missing."""
        params = params_from_config(create, self._config) if create is not None else None
        self._registry.check_writable()
        with self._lock:
            live = self._live.get(name)
            if live is None or self._is_stale(live):
                live = self._load_or_new(name, params)
                self._live[name] = live
            live.streams += 1
            return live

    def _load_or_new(self, name: str, params: MiniBatchParams | None) -> LiveModel:
        try:
            snapshot = self._registry.get(name, "open.model")
        except ModelNotFound:
            if params is None:
                raise ModelNotFound(
                    f"model {name!r} does not exist; set open.create_if_missing.n_clusters to "
                    "create it",
                    field="open.model",
                ) from None
            return LiveModel(name, params)
        if snapshot.kind != MINIBATCH_KMEANS:
            raise ModelMismatch(
                f"model {name!r} is a {snapshot.kind} model; StreamMiniBatch feeds mini-batch "
                "models only (delete it or stream into another name)",
                field="open.model",
                reason="WRONG_MODEL_KIND",
            )
        return LiveModel.from_snapshot(snapshot)

    def _is_stale(self, live: LiveModel) -> bool:
        """True when another writer changed the name since this model last published: a fit,
        a delete, or (for a model not created yet) a fit that took the name first."""
        try:
            current = self._registry.get(live.name)
        except ModelNotFound:
            return live.snapshot is not None
        return current is not live.snapshot

    def close(self, live: LiveModel) -> int:
        """A stream ended: checkpoint its model, and forget a model that never started.

        Returns the model's durable version, the one the stream's close reports. A
        checkpoint that fails raises (StoreUnavailable, StoreFull, ShuttingDown): the
        stream ends with that status, so its producer keeps what is not stored, and the
        periodic checkpoint tries again.
        """
        try:
            self.checkpoint(live)
        finally:
            with self._lock:
                live.streams -= 1
                unused = live.state is None or self._is_stale(live)
                if live.streams == 0 and unused and self._live.get(live.name) is live:
                    del self._live[live.name]  # never started, or deleted or refitted since
        if live.snapshot is None:
            return 0
        # A model deleted or refitted meanwhile will never be stored: nothing is left to keep.
        return live.snapshot.version if self._is_stale(live) else live.durable_version

    def apply(self, live: LiveModel, batch: codec.MiniBatch) -> BatchResult:
        """Apply one batch exactly once; raises a domain or engine error for a batch the ack
        refuses. Runs on a worker thread: it may wait for the model's writer lock.

        While the store cannot take writes, no batch is applied: one that could not be
        checkpointed would only be lost, so StoreUnavailable ends the stream instead.
        """
        self._registry.check_writable()
        producer = batch.producer_id
        if not producer or len(producer) > MAX_PRODUCER_ID:
            raise InvalidRequest(
                f"batch.producer_id must be 1-{MAX_PRODUCER_ID} characters, got {echo(producer)}",
                field="batch.producer_id",
            )
        if batch.sequence < 1:
            raise InvalidRequest("batch.sequence must be at least 1, got 0", field="batch.sequence")
        if batch.points is None:
            raise InvalidRequest("batch.points is required", field="batch.points")
        limits = self._config
        points = check_matrix(
            batch.points, "batch.points", max_rows=limits.max_points, max_cols=limits.max_features
        )
        weights = batch.sample_weight
        if weights is not None:
            weights = check_weights(weights, "batch.sample_weight", points.shape[0])
        entry = _Pending(producer, batch.sequence, points, weights)
        # Flat combining: whoever holds the model's lock applies every batch queued by
        # then, from any stream, one step each; the others find theirs done. Under many
        # producers this saves a lock hand-over (and a GIL switch) per batch.
        live.queue.append(entry)
        with self._registry.writer_lock(live.name):
            while live.queue:
                pending = live.queue.popleft()
                try:
                    pending.result = self._apply_locked(live, pending)
                except BaseException as exc:  # noqa: BLE001 - belongs to that batch's stream
                    pending.error = exc
        if entry.error is not None:
            raise entry.error
        assert entry.result is not None
        return entry.result

    def _apply_locked(self, live: LiveModel, entry: _Pending) -> BatchResult:
        """Apply one queued batch; the caller holds the model's writer lock."""
        producer, points, weights = entry.producer, entry.points, entry.weights
        if self._is_stale(live):
            raise ModelReplaced(
                f"model {live.name!r} was deleted or refitted while this stream was open; "
                "open a new stream",
                field="open.model",
            )
        last = live.producers.get(producer, 0)
        if entry.sequence <= last:
            return self._result(live, math.nan, duplicate=True)
        if producer not in live.producers and len(live.producers) >= self._config.max_producers:
            raise LimitExceeded(
                f"model {live.name!r} already remembers {len(live.producers)} producers, "
                f"the server's limit of {self._config.max_producers}",
                field="batch.producer_id",
            )
        state = live.state
        if state is None:
            buffered = live.params.init_size * points.shape[1] * points.dtype.itemsize
            if buffered > self._config.max_fit_bytes:
                raise LimitExceeded(
                    f"init_size={live.params.init_size} points of {points.shape[1]} "
                    f"{points.dtype.name} features would buffer {buffered} bytes, over the "
                    f"server's limit of {self._config.max_fit_bytes}",
                    field="open.create_if_missing.init_size",
                )
            state = MiniBatchState(live.params, points.shape[1], points.dtype)
        points, weights = state.check_batch(points, weights)
        # Buffered for init, and copied by every checkpoint until then.
        growth = 0 if state.initialized else (points.nbytes + weights.nbytes) * (1 + CHECKPOINT_COPIES)
        if live.state is None:  # a new model: its state, and the centers it will publish
            growth += live.params.n_clusters * points.shape[1] * points.dtype.itemsize * 2
        if growth:
            self._memory.check(growth, f"model {live.name!r} buffering this batch", "batch.points")
        creating = live.snapshot is None
        if creating:
            self._registry.reserve(live.name)
        try:
            outcome = state.partial_fit(points, weights)
            live.state = state
            live.producers[producer] = entry.sequence
            live.snapshot = self._registry.publish_unsaved(
                self._snapshot_of(live, outcome.batch_inertia)
            )
        except BaseException:
            if creating:
                self._registry.release(live.name)
            raise
        live.dirty = True
        if creating:
            self._metrics.models.set(len(self._registry))
            log.info("streamed model created model=%s", live.name)
        self._metrics.points.inc(points.shape[0])
        return self._result(live, outcome.batch_inertia, duplicate=False)

    def _snapshot_of(self, live: LiveModel, batch_inertia: float) -> ModelSnapshot:
        state = live.state
        assert state is not None
        return ModelSnapshot(
            name=live.name,
            version=0,
            centers=state.centers.copy(),
            # The init size the first batch decided, when the stream left it to the default.
            config={**state.params.as_dict(), "init_size": state.init_target},
            inertia=batch_inertia,
            n_iter=0,
            n_samples_seen=state.n_samples_seen,
            created_at=0.0,
            updated_at=0.0,
            kind=MINIBATCH_KMEANS,
            extra={
                "n_batches": state.n_batches,
                "init_points_buffered": state.pending_points,
            },
        )

    @staticmethod
    def _result(live: LiveModel, batch_inertia: float, *, duplicate: bool) -> BatchResult:
        snapshot = live.snapshot
        assert snapshot is not None and live.state is not None
        return BatchResult(
            version=snapshot.version,
            batch_inertia=batch_inertia,
            n_samples_seen=live.state.n_samples_seen,
            durable_version=live.durable_version,
            duplicate=duplicate,
        )

    def durable_version(self, name: str, version: int) -> int:
        """The newest stored version of ``name``, given that ``version`` is published."""
        live = self._live.get(name)
        if live is None or live.snapshot is None or live.snapshot.version < version:
            return version
        return live.durable_version

    # ---- Checkpoints ----------------------------------------------------------------

    def checkpoint(self, live: LiveModel) -> None:
        """Store the model's current version if it changed since the last checkpoint."""
        with self._registry.writer_lock(live.name):
            if not live.dirty or live.state is None or live.snapshot is None:
                return
            if self._is_stale(live):
                live.dirty = False  # deleted or refitted: nothing of ours to keep
                return
            snapshot = replace(live.snapshot, state=live.state.to_bytes())
            self._registry.save_checkpoint(snapshot, dict(live.producers))
            live.dirty = False
            live.durable_version = snapshot.version
        if len(snapshot.state or b"") >= TRIM_AFTER:
            del snapshot
            trim()  # the blob's copies go back to the system, not to malloc's heaps

    def checkpoint_all(self) -> list[str]:
        """Checkpoint every changed model; returns a line for each one left unsaved."""
        with self._lock:
            models = list(self._live.values())
        unsaved = []
        for live in models:
            try:
                self.checkpoint(live)
            except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the others
                failure = getattr(exc, "message", None) or repr(exc)
                if failure != live.checkpoint_failure:  # once per failure, not every second
                    log.error("checkpoint of %s failed: %s", live.name, failure)
                live.checkpoint_failure = failure
            else:
                live.checkpoint_failure = None
            if live.dirty and live.snapshot is not None:
                unsaved.append(
                    f"model {live.name!r}: version {live.snapshot.version} in memory, "
                    f"{live.durable_version or 'none'} stored"
                )
        return unsaved

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="centroidal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._config.checkpoint_interval):
            self.checkpoint_all()

    def stop(self) -> list[str]:
        """Stop the checkpointer and store every model one last time; returns a line for each
        model whose newest version could not be stored."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.checkpoint_all()
