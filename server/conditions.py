"""Whether the store takes writes now, and why not: a full disk, a read-only directory, a
failed write, a database that cannot be reached; and the small reserve file given up to
let a delete through a full disk (SQLite's, whose directory is on this host).

While the disk has less than ``min_free_bytes`` free, or for ``RETRY_AFTER_S`` after a
write failed, writes are refused before any work is done; deletes always run. Every
change between "writes work" and "writes are refused" is logged and reported to
``on_condition`` (health and metrics).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from .exceptions import ShuttingDown, StoreDamaged, StoreFull, StoreUnavailable
from .integrity import StoreCondition

log = logging.getLogger("centroidal.server")

RESERVE_FILE = "reserve"
RESERVE_BYTES = 8 * 1024 * 1024
DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024
# After a failed write, writes are refused this long before the store tries again.
RETRY_AFTER_S = 5.0


class WriteConditions:
    """The store's condition for writes, kept by the store as its writes succeed or fail."""

    def __init__(
        self, directory: Path | None, store_path: Path | str, min_free_bytes: int, read_only: bool,
        on_condition: Callable[[StoreCondition | None], None] | None,
    ) -> None:
        """directory: the store's folder on this host, whose free space is watched (None for a
        database elsewhere)."""
        self.dir = directory
        self._store_path = store_path
        self.min_free_bytes = min_free_bytes
        self.read_only = read_only
        self._on_condition = on_condition
        self.current: StoreCondition | None = None
        self._failed_at = 0.0
        if read_only:
            self.current = StoreCondition(
                "STORE_READ_ONLY",
                f"the data directory {directory} is read-only: the server answers reads, and "
                "refuses every write; make it writable and restart to take writes",
            )
            log.warning("%s", self.current.message)

    def check(self) -> None:
        """Raise StoreFull or StoreUnavailable when a write would be refused now."""
        failed = self.current
        if failed is not None and (self.read_only or time.monotonic() - self._failed_at < RETRY_AFTER_S):
            raise refusal(failed)
        if self.dir is None:
            return
        free = free_bytes(self.dir)
        if free is not None and free < self.min_free_bytes:
            condition = StoreCondition(
                "STORE_FULL",
                f"the disk of the data directory {self.dir} has {free} bytes free, under the "
                f"{self.min_free_bytes} bytes --min-free-disk keeps; nothing was written. Delete "
                "models (deletes still work) or free disk space",
            )
            self.set(condition)
            raise refusal(condition)

    def set(self, condition: StoreCondition | None) -> None:
        """A write failed for ``condition``, or (None) one succeeded."""
        previous = self.current
        if condition is not None:
            self._failed_at = time.monotonic()
        self.current = condition
        if (previous is None) == (condition is None):
            return
        if condition is None:
            log.warning("store writes work again: %s", self._store_path)
            self.keep_reserve()
        else:
            log.error("store writes refused: %s", condition.message)
        if self._on_condition is not None:
            self._on_condition(condition)

    # ---- The reserve: a little disk space given up to let a delete through ------------

    def keep_reserve(self) -> None:
        if self.dir is None:
            return
        reserve = self.dir / RESERVE_FILE
        free = free_bytes(self.dir)
        if reserve.exists() or free is None or free < self.min_free_bytes + 2 * RESERVE_BYTES:
            return
        try:
            with open(reserve, "wb") as handle:
                os.posix_fallocate(handle.fileno(), 0, RESERVE_BYTES)
        except OSError as exc:  # a filesystem without fallocate, or no room after all
            log.warning("could not keep a %d-byte reserve file in %s: %s", RESERVE_BYTES, self.dir, exc)
            reserve.unlink(missing_ok=True)

    def release_reserve(self) -> bool:
        if self.dir is None:
            return False
        reserve = self.dir / RESERVE_FILE
        try:
            reserve.unlink()
        except FileNotFoundError:
            return False
        log.warning("the disk is full: gave up the %d-byte reserve file to let a delete through", RESERVE_BYTES)
        return True


def refusal(condition: StoreCondition) -> StoreUnavailable | StoreDamaged:
    """The error a write refused for ``condition`` raises."""
    if condition.reason == "STORE_FULL":
        return StoreFull(condition.message, retry_after=RETRY_AFTER_S)
    if condition.reason == "STORE_DAMAGED":
        return StoreDamaged(condition.message)
    return StoreUnavailable(condition.message, reason=condition.reason, retry_after=RETRY_AFTER_S)


def shutting_down() -> ShuttingDown:
    return ShuttingDown("the server is shutting down; nothing was written, retry on another replica or later")


def free_bytes(directory: Path) -> int | None:
    try:
        stats = os.statvfs(directory)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize
