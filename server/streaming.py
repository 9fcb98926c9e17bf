"""Models fed by StreamMiniBatch: one owner per model, exactly-once batches, live snapshots.

Each streamed model lives in memory as a ``LiveModel`` (``live.py``) on the one replica
that holds its stream lease (``leases.py``); a stream that reaches another replica is
refused with StreamElsewhere, which names the owner's own address, and the SDK opens it
there. A batch is applied under the model's registry writer lock, so it is serialised
with other batches, fits and deletes. Every batch publishes a new snapshot at once, and
readers of this replica see it before it is on disk; ``checkpoints.py`` stores each
changed model every ``checkpoint_interval`` seconds, and again when a stream closes and
at shutdown. The producers' sequences travel in the same row as the centers, so after
a crash, or when another replica takes the stream over, the model and its dedup table
agree: a producer that resends everything above the durable version gets each batch
applied exactly once.
"""

from __future__ import annotations

import logging
import math
import threading
import time

import numpy as np

from centroidal import codec
from centroidal.engine.minibatch import MiniBatchParams, MiniBatchState

from .config import ServerConfig
from .exceptions import (
    InvalidRequest,
    LimitExceeded,
    ModelMismatch,
    ModelNotFound,
    ModelReplaced,
    StreamElsewhere,
)
from .checkpoints import Checkpointer
from .leases import CEILING_STEP, Holder, Lease, LeaseLost
from .live import CHECKPOINT_COPIES, BatchResult, LiveModel, Pending, held, is_stale, params_from_config
from .limits import check_matrix, check_shape, check_weights, echo
from .memory import MemoryBudget
from .metrics import Metrics
from .registry import Registry
from . import replicas
from .shared_rows import SharedPoints, StreamMaps, check_allowed, check_object
from .replicas import Owner
from .snapshots import MINIBATCH_KMEANS, ModelSnapshot

log = logging.getLogger("centroidal.server")

MAX_PRODUCER_ID = 128
# A batch's step of at most this many row-center-feature products runs on its stream
# thread in one compiled call (engine/ministep.py), which takes the GIL back from the event
# loop once instead of about ten times; a larger one is dealt out to the engine's threads,
# which then pays. At 8192x16 and k=64 (8.4 million), bench.streaming's streams took 0.97
# (1 producer) and 0.95 (4 producers) of the time they took with the step dealt out to two
# threads, and the server 0.89 and 0.80 of the CPU (medians of 12 rounds taking turns,
# Xeon host). Dealt out, a step took 0.83 of the one-thread time in process, with the
# machine to itself.
ONE_CALL_STEP_WORK = 16_000_000


class StreamHub:
    """All live models, and the thread that checkpoints them."""

    def __init__(
        self, config: ServerConfig, registry: Registry, metrics: Metrics, memory: MemoryBudget, owner: Owner,
    ) -> None:
        self._config = config
        self.owner = owner
        self._registry = registry
        self._metrics = metrics
        self._memory = memory
        self._lock = threading.Lock()
        self._live: dict[str, LiveModel] = {}
        self.checkpoints = Checkpointer(config, registry, self._models)

    def resident_bytes(self) -> int:
        """Memory of every live model's learning state, buffered init points included, each
        buffered point counted again for each copy a checkpoint makes of it. Without the
        hub's lock: the budget asks while a stream's open, which holds it, loads a model
        (copying a dict's values is one step for the interpreter)."""
        models = list(self._live.values())
        return sum(held(live.state) for live in models if live.state is not None)

    # ---- Streams ------------------------------------------------------------------

    def open(self, name: str, create: codec.MiniBatchConfig | None) -> LiveModel:
        """The live model for a new stream; created (lazily, at the first batch) if missing."""
        params = params_from_config(create, self._config) if create is not None else None
        self._registry.check_writable()
        with self._lock:
            live = self._live.get(name)
            if live is None or is_stale(self._registry, live) or live.lost:
                lease = self._take_lease(name)
                try:
                    live = self._load_or_new(name, params)
                except BaseException:
                    self._registry.give_up_lease(lease, self._registry.last_version(name))
                    raise
                live.lease, live.renewed_at = lease, time.monotonic()
                self._live[name] = live
            live.streams += 1
            return live

    def _take_lease(self, name: str) -> Lease:
        """Become the stream's owner, or raise StreamElsewhere naming the replica that is."""
        taken = self._registry.take_lease(name, self.owner.identity, self.owner.address, replicas.owner_alive)
        if isinstance(taken, Holder):
            raise StreamElsewhere(
                f"the stream of model {name!r} is owned by the replica at {taken.address}; open it "
                "there (the SDK does so by itself)",
                field="open.model",
                metadata={"owner": taken.address, "lease_expires_in_s": f"{taken.expires_in:.1f}"},
            )
        # Whatever the last owner stored is the starting point: catch up with it first.
        self._registry.refresh(force=True)
        self._registry.start_numbering(name, taken.floor)
        return taken

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
        if snapshot.state is None:  # as published by a stream here: its state is in the store
            stored = self._registry.stored(name, snapshot.version)
            if stored is None:
                raise ModelReplaced(f"model {name!r} changed while this stream was opening; open a new stream",
                                    field="open.model")
            snapshot = stored
        return LiveModel.from_snapshot(snapshot)

    def close(self, live: LiveModel) -> int:
        """A stream ended: checkpoint its model, and forget a model that never started.

        Returns the model's durable version, the one the stream's close reports. A
        checkpoint that fails raises (StoreUnavailable, StoreFull, ShuttingDown): the
        stream ends with that status, so its producer keeps what is not stored, and the
        periodic checkpoint tries again.
        """
        try:
            self.checkpoints.checkpoint(live)
        finally:
            with self._lock:
                live.streams -= 1
                if live.streams == 0 and self._live.get(live.name) is live and (not live.dirty or live.lost):
                    # Everything published is stored: the lease goes, for any replica to take.
                    del self._live[live.name]
                    self.checkpoints.let_go(live)
        if live.snapshot is None:
            return 0
        # A model deleted or refitted meanwhile will never be stored: nothing is left to keep.
        return live.snapshot.version if is_stale(self._registry, live) else live.durable_version

    def queue(
        self, live: LiveModel, batch: codec.MiniBatch, stream: object, peer: str, maps: StreamMaps,
    ) -> Pending:
        """Check one batch of ``stream`` (from ``peer``) and queue it for its model, on the
        event loop as it arrives: every stream's batches wait in one queue, in the order they
        came, and whoever applies one applies those ahead of it too. Raises a domain error
        for a batch the ack refuses, and SharedMemoryRefused or SharedMemoryMissing for rows
        in shared memory the server may not or cannot read; ``maps`` are the stream's
        mappings of the objects its batches name."""
        producer = batch.producer_id
        if not producer or len(producer) > MAX_PRODUCER_ID:
            raise InvalidRequest(
                f"batch.producer_id must be 1-{MAX_PRODUCER_ID} characters, got {echo(producer)}",
                field="batch.producer_id",
            )
        if batch.sequence < 1:
            raise InvalidRequest("batch.sequence must be at least 1, got 0", field="batch.sequence")
        limits = self._config
        points: np.ndarray | SharedPoints
        if batch.shared is not None:
            points = self._shared_points(batch, peer, maps)
            rows = batch.shared.rows
        elif batch.points is None:
            raise InvalidRequest("batch.points is required", field="batch.points")
        else:
            points = check_matrix(
                batch.points, "batch.points", max_rows=limits.max_points, max_cols=limits.max_features
            )
            rows = points.shape[0]
        weights = batch.sample_weight
        if weights is not None:
            weights = check_weights(weights, "batch.sample_weight", rows)
        entry = Pending(producer, batch.sequence, points, weights, stream)
        live.queue.append(entry)
        return entry

    def _shared_points(self, batch: codec.MiniBatch, peer: str, maps: StreamMaps) -> SharedPoints:
        """A batch's rows in shared memory, once the server may read them and has found them."""
        shared = batch.shared
        assert shared is not None
        if batch.points is not None:
            raise InvalidRequest("batch.points.data must be empty when batch.points_shared names the rows",
                                 field="batch.points.data")
        limits = self._config
        check_shape((shared.rows, shared.cols), "batch.points", max_rows=limits.max_points,
                    max_cols=limits.max_features)
        path = check_allowed(shared, peer, limits.shared_memory, "batch.points")
        return SharedPoints(shared, path, check_object(shared, path, "batch.points"), maps)

    def apply(self, live: LiveModel, entry: Pending) -> BatchResult:
        """Apply a queued batch exactly once; raises a domain or engine error for a batch the
        ack refuses. Runs on a worker thread: it may wait for the model's writer lock.

        Flat combining: whoever holds the model's lock applies the batches queued ahead of
        its own, from any stream, then its own, one step each; their streams find them done
        and are told at once (``Pending.applied``). Under many producers this saves a lock
        hand-over (and a GIL switch) per batch, and the batches of streams still waiting for
        a pool thread are applied with the rest. It stops at its own batch: those queued
        after it wait for their own jobs, so that its ack goes out while they are applied.
        Applying them too held back a lone stream's acks until the queue was empty, and the
        server then read no batch until its acks were sent: one producer's stream (bench
        streaming, 8192x16, k=64) took 0.88 and 0.89 of the time stopping here, through
        shared memory and with the rows sent, and four producers 1.00 and 0.96 (medians of 8
        rounds' ratios, taking turns, on an AMD EPYC without AVX-512).
        """
        if entry.result is None and entry.error is None:
            with self._registry.writer_lock(live.name):
                while entry.result is None and entry.error is None:
                    try:
                        pending = live.queue.popleft()
                    except IndexError:  # the queue is empty (or a stream withdrew the last one)
                        break
                    try:
                        pending.result = self._apply_locked(live, pending)
                    except BaseException as exc:  # noqa: BLE001 - belongs to that batch's stream
                        pending.error = exc
                    if pending is not entry and pending.applied is not None:
                        pending.applied(pending)
        if entry.error is not None:
            raise entry.error
        assert entry.result is not None, "a batch was applied by nobody"
        return entry.result

    def _apply_locked(self, live: LiveModel, entry: Pending) -> BatchResult:
        """Apply one queued batch; the caller holds the model's writer lock. Rows in shared
        memory are read in place, through the stream's mapping of their object."""
        points = entry.points
        if isinstance(points, SharedPoints):
            with points.maps.rows(points.shared, points.path, points.inode, "batch.points") as rows:
                return self._apply_rows(live, entry, rows)
        return self._apply_rows(live, entry, points)

    def _apply_rows(self, live: LiveModel, entry: Pending, points: np.ndarray) -> BatchResult:
        # While the store cannot take writes, no batch is applied: one that could not be
        # checkpointed would only be lost, so StoreUnavailable ends the stream instead.
        self._registry.check_writable()
        producer, weights = entry.producer, entry.weights
        if live.lost:
            raise live.moved()
        if is_stale(self._registry, live):
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
        self._raise_ceiling(live)
        creating = live.snapshot is None
        if creating:
            self._registry.reserve(live.name)
        try:
            outcome = state.partial_fit(points, weights, in_one_call=_in_one_call(points, live.params.n_clusters))
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

    def _raise_ceiling(self, live: LiveModel) -> None:
        """Before publishing past the lease's ceiling, raise it in the store (once every
        CEILING_STEP versions between checkpoints); the caller holds the writer lock."""
        lease = live.lease
        following = self._registry.last_version(live.name) + 1
        if lease is None or following <= lease.ceiling:
            return
        try:
            live.lease = self._registry.renew_lease(lease, following + CEILING_STEP)
        except LeaseLost as lost:
            raise live.moved(lost) from None

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

    def _models(self) -> list[LiveModel]:
        with self._lock:
            return list(self._live.values())

    def start(self) -> None:
        """Start checkpointing and renewing leases."""
        self.checkpoints.start()

    def stop(self) -> list[str]:
        """Store every model one last time and give up the leases of those stored; returns a
        line for each model whose newest version could not be stored."""
        return self.checkpoints.stop()


def _in_one_call(points: np.ndarray, n_clusters: int) -> bool | None:
    """Whether a batch's step runs in one call on its thread (see ONE_CALL_STEP_WORK); None
    leaves it to the engine."""
    return True if points.shape[0] * points.shape[1] * n_clusters <= ONE_CALL_STEP_WORK else None
