"""What makes a server one replica among several over a shared store.

- **Its identity** (``Owner``): the name it takes stream leases under (host, pid and a
  nonce, so a restarted worker is a new owner) and its own address, where producers
  that reached another replica are sent. Under ``--workers`` the public port is shared
  by every worker (``SO_REUSEPORT``), so each also listens on a port of its own.
- **The change feed** (``Feed``): a thread that applies, every ``--store-poll-interval``,
  what the other replicas wrote. On SQLite, asking costs one ``PRAGMA data_version``
  while nothing changed, and reads only the names written since when something did.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .exceptions import DomainError
from .registry import Registry
from .store import SQLiteStore

log = logging.getLogger("centroidal.server")

# Set by the supervisor in each worker's environment.
LOCK_FD_ENV = "CENTROIDAL_WORKER_LOCK_FD"
INDEX_ENV = "CENTROIDAL_WORKER_INDEX"
# A pipe the worker writes one byte to once it serves.
READY_FD_ENV = "CENTROIDAL_WORKER_READY_FD"


@dataclass(frozen=True)
class Owner:
    """A replica as stream leases name it."""

    identity: str
    address: str


def owner_prefix(pid: int) -> str:
    """What every lease identity of process ``pid`` on this host starts with."""
    return f"{socket.gethostname()}/{pid}/"


def owner_alive(identity: str) -> bool:
    """Whether the replica a lease names still runs, as far as this host can tell: a
    process of this host that is gone is not; one of another host is taken to be."""
    host, _, rest = identity.partition("/")
    pid = rest.partition("/")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    try:  # killed, but not yet reaped by its parent: a zombie holds nothing
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def this_replica(address: str) -> Owner:
    return Owner(owner_prefix(os.getpid()) + uuid.uuid4().hex[:8], address)


def end_stale_leases(store: SQLiteStore) -> None:
    """End every stream lease an earlier run left (the caller alone holds the directory, so
    none can be live). A store that refuses writes (a full disk, a read-only directory)
    still serves reads: the leases then lapse by themselves."""
    if store.read_only:
        return
    try:
        ended = store.revoke_leases("")
    except DomainError as exc:
        log.warning("could not end the stream leases left by an earlier run (they lapse in their own "
                    "time): %s", exc.message)
        return
    if ended:
        log.info("ended %d stream leases left by an earlier run", ended)


def inherited_lock() -> int | None:
    """The directory lock's descriptor a supervisor handed this worker, if it is one."""
    value = os.environ.get(LOCK_FD_ENV)
    return int(value) if value else None


def tell_supervisor_ready() -> None:
    """Tell the supervisor, if there is one, that this worker serves: from here on it may
    hold acknowledged work, and its exit status says whether it stored it."""
    value = os.environ.pop(READY_FD_ENV, None)
    if value:
        try:
            os.write(int(value), b"1")
            os.close(int(value))
        except OSError as exc:  # the supervisor is gone; the worker serves on regardless
            log.warning("could not tell the supervisor this worker is ready: %s", exc)


def worker_index() -> int | None:
    value = os.environ.get(INDEX_ENV)
    return int(value) if value else None


def advertised(host: str, port: int, advertise_host: str) -> str:
    """The address other replicas' producers reach this one at."""
    if advertise_host:
        host = advertise_host
    elif host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Feed:
    """Applies other replicas' writes to the registry, every ``interval`` seconds, and at
    once when the store hears of one (a PostgreSQL NOTIFY)."""

    def __init__(self, registry: Registry, interval: float, on_change: Callable[[], None]) -> None:
        self._registry = registry
        self._interval = interval
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="centroidal-feed", daemon=True)
        self._failure: str | None = None

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        hinted = self._registry.store_changed
        while not self._stop.is_set():
            if hinted is None:
                self._stop.wait(self._interval)
            else:
                hinted.wait(self._interval)
                hinted.clear()  # before reading, so that a hint arriving meanwhile is kept
            if self._stop.is_set():
                break
            try:
                changed = self._registry.refresh(force=True)
            except Exception as exc:  # noqa: BLE001 - the store may come back; try next round
                failure = getattr(exc, "message", None) or repr(exc)
                if failure != self._failure:
                    log.error("could not read the store's change feed: %s", failure)
                self._failure = failure
                continue
            if self._failure is not None:
                log.warning("reading the store's change feed again")
                self._failure = None
            if changed:
                self._on_change()

    def stop(self) -> None:
        self._stop.set()
        if self._registry.store_changed is not None:
            self._registry.store_changed.set()
        if self._thread.is_alive():
            self._thread.join()
