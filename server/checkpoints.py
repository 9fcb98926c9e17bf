"""What a stream's owner keeps in the store: checkpoints of its live models, and its leases.

A thread stores each changed model every ``checkpoint_interval`` seconds (and a stream's
close and the server's stop store it too). A checkpoint holds the model's state and its
producers' last sequences in one row, fenced by the stream's lease: it commits only
while the lease is still this replica's, and it renews the lease. The same thread
renews the leases of models with nothing new to store. An owner whose lease is gone
(it could not renew it in time, and another replica took the stream over) stores
nothing more of that model: its streams end with StreamMoved, and their producers
resend what is not durable to the new owner.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from .config import ServerConfig
from .leases import LeaseLost
from .live import LiveModel, is_stale
from .memory import TRIM_AFTER, trim
from .registry import Registry

log = logging.getLogger("centroidal.server")


class Checkpointer:
    """Stores and renews what the hub's live models hold; ``models`` lists them."""

    def __init__(self, config: ServerConfig, registry: Registry, models: Callable[[], list[LiveModel]]) -> None:
        self._config = config
        self._registry = registry
        self._models = models
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def checkpoint(self, live: LiveModel) -> None:
        """Store the model's current version if it changed since the last checkpoint."""
        with self._registry.writer_lock(live.name):
            if not live.dirty or live.state is None or live.snapshot is None:
                return
            if is_stale(self._registry, live):
                live.dirty = False  # deleted or refitted: nothing of ours to keep
                return
            snapshot = replace(live.snapshot, state=live.state.to_bytes())
            try:
                live.lease = self._registry.save_checkpoint(snapshot, dict(live.producers), live.lease)
            except LeaseLost as lost:
                raise live.moved(lost) from None
            live.renewed_at = time.monotonic()
            live.dirty = False
            live.durable_version = snapshot.version
        if len(snapshot.state or b"") >= TRIM_AFTER:
            del snapshot
            trim()  # the blob's copies go back to the system, not to malloc's heaps

    def checkpoint_all(self) -> list[str]:
        """Checkpoint every changed model; returns a line for each one left unsaved."""
        models = self._models()
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
        """Checkpoint every ``checkpoint_interval``; renew leases at least three times a TTL,
        however long the checkpoint interval."""
        config = self._config
        step = min(config.checkpoint_interval, config.lease_ttl / 3)
        due = time.monotonic() + config.checkpoint_interval
        while not self._stop.wait(step):
            if time.monotonic() >= due:
                self.checkpoint_all()
                due = time.monotonic() + config.checkpoint_interval
            self.renew_idle()

    def renew_idle(self) -> None:
        """Renew the leases a checkpoint did not (models with nothing new to store)."""
        due = time.monotonic() - self._config.lease_ttl / 3
        models = [live for live in self._models() if live.lease and not live.lost and live.renewed_at < due]
        for live in models:
            with self._registry.writer_lock(live.name):
                lease = live.lease
                if lease is None or live.lost:
                    continue
                try:
                    live.lease = self._registry.renew_lease(lease, lease.ceiling)
                    live.renewed_at = time.monotonic()
                except LeaseLost as lost:
                    live.lost = str(lost)
                    log.warning("stream of %s moved to another replica: %s", live.name, lost)
                except Exception as exc:  # noqa: BLE001 - tried again next round
                    log.warning("could not renew the stream lease of %s: %s", live.name,
                                getattr(exc, "message", None) or exc)

    def stop(self) -> list[str]:
        """Stop the checkpointer and store every model one last time; returns a line for each
        model whose newest version could not be stored."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        unsaved = self.checkpoint_all()
        for live in self._models():  # stored ones: another replica may take them over at once
            if not live.dirty:
                self.let_go(live)
        return unsaved

    def let_go(self, live: LiveModel) -> None:
        """Give up the model's lease (everything it published is stored), for any replica."""
        lease, live.lease = live.lease, None
        if lease is None or live.lost:
            return
        try:
            self._registry.give_up_lease(lease, self._registry.last_version(live.name))
        except Exception as exc:  # noqa: BLE001 - it lapses by itself
            log.warning("could not give up the stream lease of %s (it lapses in %.0f s): %s",
                        live.name, self._config.lease_ttl, getattr(exc, "message", None) or exc)
