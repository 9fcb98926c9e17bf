"""The PostgreSQL store's ears: one connection that LISTENs for other replicas' writes, and
tells whether the database can be reached.

Every write transaction sends ``NOTIFY centroidal_models, '<name> <version>'`` (with
`` deleted`` after a delete), delivered to every listening session when it commits. A notification is only a hint: the replica
then reads the names written since its feed position (``names.seq``, as on SQLite), so a
hint that was lost, or one for a write it already has, does no harm. The re-read on a
timer (``--store-poll-interval``) covers a replica that was not listening when the hint
went out: a listener that reconnects also asks for one re-read at once.

The same connection is the reachability probe, every PROBE_S: while it cannot be opened,
or a probe query fails, the store is unreachable (health NOT_SERVING); each probe that
succeeds says it is reachable (a write that failed meanwhile, on a connection the
restart broke, must not leave the replica NOT_SERVING while the database is back).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

log = logging.getLogger("centroidal.server")

CHANNEL = "centroidal_models"
# How often the listener probes the connection, and how often it looks whether to stop.
PROBE_S = 1.0
WAKE_S = 0.1
# Waits between attempts to reach the database again: from the first to the last.
RECONNECT_S = (0.2, 2.0)


class Listener:
    """A daemon thread LISTENing on CHANNEL; ``on_hint`` is called for every notification and
    after every (re)connection, ``on_reachable(True, "")`` after every probe that succeeded
    and ``on_reachable(False, why)`` when one failed."""

    def __init__(
        self, conninfo: str, settings: dict[str, Any], on_hint: Callable[[], None],
        on_reachable: Callable[[bool, str], None], notify: bool = True,
    ) -> None:
        """notify: LISTEN for hints; without, the connection only probes."""
        self._conninfo = conninfo
        self._settings = settings
        self._on_hint = on_hint
        self._on_reachable = on_reachable
        self._notify = notify
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="centroidal-store-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        wait = RECONNECT_S[0]
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, **self._settings) as connection:
                    if self._notify:
                        connection.execute(f"LISTEN {CHANNEL}")
                    self._on_reachable(True, "")
                    self._on_hint()  # whatever was written while nobody listened
                    wait = RECONNECT_S[0]
                    self._listen(connection)
            except psycopg.Error as exc:
                if self._stop.is_set():
                    break
                self._on_reachable(False, " ".join(str(exc).split()) or type(exc).__name__)
            self._stop.wait(wait)
            wait = min(wait * 2, RECONNECT_S[1])

    def _listen(self, connection: psycopg.Connection[Any]) -> None:
        probed = time.monotonic()
        while not self._stop.is_set():
            if self._notify:
                for _ in connection.notifies(timeout=WAKE_S):
                    self._on_hint()
            else:
                self._stop.wait(WAKE_S)
            if not self._stop.is_set() and time.monotonic() - probed >= PROBE_S:
                connection.execute("SELECT 1")  # a dead server, or a network gone quiet
                self._on_reachable(True, "")
                probed = time.monotonic()

    def stop(self) -> None:
        self._stop.set()  # seen within WAKE_S, or once a connection attempt gives up
        if self._thread.is_alive():
            self._thread.join(timeout=WAKE_S + 10.0)
