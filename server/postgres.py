"""ModelStore in PostgreSQL: the store replicas on many hosts share (``--store postgresql://…``).

- **The same writes as SQLite** (``writes.py``): each is one transaction with the
  compare-and-swap on the name's versions, the new row, the counter, the pruning and the
  stream lease it touches, in the same SQL. Every write transaction first bumps the one
  row of ``commits``; the row's lock makes writers take turns as ``BEGIN IMMEDIATE`` does
  on SQLite, and under READ COMMITTED each statement after it sees every write committed
  before, so the numbering is the same. Leases run on the database's clock, one for every
  host.
- **Every row carries the same SHA-256 as on SQLite**, verified on every read.
- **The schema** is created and migrated at open, under an advisory lock so replicas
  starting together take turns, and recorded in ``schema_version``; a newer schema than
  this server knows is refused, naming both versions.
- **The change feed**: ``names.seq`` as on SQLite, read when a NOTIFY hints that another
  replica wrote, and on a timer (``pgfeed.py``).
- **Failures**: an unreachable database is UNAVAILABLE (a connection that broke is
  replaced and the transaction tried again, as long as nothing of it was sent); a full
  disk or a limit is RESOURCE_EXHAUSTED; corruption is DATA_LOSS. A transaction whose
  COMMIT got no answer is reported as failed, never as stored.
- **Connections** come from psycopg's pool (``pgconnect.py`` makes the first, and says
  what an error means). The password comes from the URL, libpq's ``PGPASSFILE`` or
  ``--store-password-file``, and is never logged; ``sslmode`` and the other libpq
  settings go in the URL.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import psycopg_pool

from .conditions import WriteConditions, refusal, shutting_down
from .exceptions import StoreDamaged, StoreUnavailable
from .checksums import MISSING_CURRENT, checksum_failures, verified_current, verified_snapshot
from .integrity import StoreCondition
from .leases import Connection
from .pgconnect import POOL_WAIT_S, START_WAIT_S, classify, first_connection, redacted, settings_of
from .pgfeed import CHANNEL, Listener
from .snapshots import Catalog, ModelSnapshot, NameState, StoredModels
from .writes import VersionedWrites

log = logging.getLogger("centroidal.server")
T = TypeVar("T")

SCHEMA_VERSION = 1
# Each schema version's statements, applied in order from the database's version up.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE names (name text PRIMARY KEY, last_version bigint NOT NULL, current_version bigint, "
        "seq bigint NOT NULL DEFAULT 0)",
        "CREATE INDEX names_by_seq ON names (seq)",
        "CREATE TABLE versions (name text NOT NULL, version bigint NOT NULL, meta text NOT NULL, "
        "centers bytea NOT NULL, state bytea, checksum text NOT NULL, PRIMARY KEY (name, version))",
        # Centers are float bits, which compression cannot shrink: store them as they are.
        "ALTER TABLE versions ALTER COLUMN centers SET STORAGE EXTERNAL",
        "CREATE TABLE commits (id integer PRIMARY KEY CHECK (id = 1), count bigint NOT NULL)",
        "INSERT INTO commits (id, count) VALUES (1, 0)",
        "CREATE TABLE leases (name text PRIMARY KEY, owner text NOT NULL, address text NOT NULL, "
        "epoch bigint NOT NULL, expires double precision NOT NULL, ceiling bigint NOT NULL)",
    ),
}
# pg_advisory_xact_lock's key for schema changes: "centroid" in ASCII.
SCHEMA_LOCK = 0x63656E74726F6964
MAX_CONNECTIONS = 8
# Attempts at a transaction whose connection broke before any of it was sent.
ATTEMPTS = MAX_CONNECTIONS + 2

_VERSION_ROWS = (
    "SELECT name, version, convert_to(meta, 'UTF8'), centers, state, checksum FROM versions"
)
_CURRENT_ROWS = (
    "SELECT v.name, v.version, convert_to(v.meta, 'UTF8'), v.centers, v.state, v.checksum FROM versions v "
    "JOIN names n ON n.name = v.name AND n.current_version = v.version"
)


class _Broken(Exception):
    """A pooled connection broke before the call's work was done: try it on a fresh one."""


class _Translated:
    """A psycopg connection taking writes.py's ``?`` parameters, in a transaction that
    began at ``now`` on the database's clock."""

    def __init__(self, connection: psycopg.Connection[Any], now: float) -> None:
        self._connection = connection
        self.now = now

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[Any]:
        return self._connection.execute(sql.replace("?", "%s"), parameters)


class PostgresStore(VersionedWrites):
    """ModelStore in a PostgreSQL database shared by every replica.

    url : a libpq URL (``postgresql://user@host:port/db?sslmode=verify-full``)
    password_file : a file whose first line is the password (else the URL's, or PGPASSFILE)
    max_bytes : the most the stored models may take, all versions counted (0: no quota)
    on_condition : called with the new StoreCondition, or None when writes work again
    listen : follow the database (reachability, and other replicas' writes); a supervisor,
        which only migrates the schema and ends its dead workers' leases, does not
    notify : LISTEN for other replicas' writes, besides the probe (off: the poll alone)
    """

    read_only = False
    discarded = None

    def __init__(
        self, url: str, *, password_file: str = "", max_bytes: int = 0,
        on_condition: Callable[[StoreCondition | None], None] | None = None, listen: bool = True,
        notify: bool = True,
    ) -> None:
        self.location = redacted(url)
        self._max_bytes = max_bytes
        self._closed = False
        settings = settings_of(url, password_file)
        self._conditions = WriteConditions(None, self.location, 0, False, on_condition)
        # Set when another replica may have written: a NOTIFY, a reconnection, or the timer.
        self._changed = threading.Event()
        self._pool = psycopg_pool.ConnectionPool(
            url, kwargs={**settings, "autocommit": True}, min_size=1, max_size=MAX_CONNECTIONS, open=False, timeout=POOL_WAIT_S,
            name="centroidal-store", reconnect_timeout=24 * 3600.0,
        )
        first_connection(url, settings, self.location)
        try:
            self._pool.open(wait=True, timeout=START_WAIT_S)
        except psycopg_pool.PoolTimeout as exc:
            self._pool.close()
            raise StoreUnavailable(
                f"the PostgreSQL store {self.location} could not be reached in {START_WAIT_S:.0f} s",
                reason="STORE_UNREACHABLE",
            ) from exc
        self._listener: Listener | None = None
        try:
            self._migrate()
        except BaseException:
            self._pool.close()
            raise
        if listen:
            self._listener = Listener(url, settings, self._changed.set, self._reachable, notify)
            self._listener.start()

    @property
    def changed(self) -> threading.Event:
        return self._changed

    # ---- Schema ----------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._session() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (id integer PRIMARY KEY CHECK (id = 1), "
                "version integer NOT NULL)"
            )
            row = connection.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
            found = int(row[0]) if row else 0
            if found > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"the PostgreSQL store {self.location} has schema version {found}, newer than the "
                    f"{SCHEMA_VERSION} this server knows: a newer centroidal migrated it. Run that "
                    "version (or a newer one); this one would misread it",
                    reason="STORE_SCHEMA_NEWER",
                )
            for version in range(found + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    connection.execute(statement)
                log.info("PostgreSQL store %s: schema migrated to version %d", self.location, version)
            connection.execute(
                "INSERT INTO schema_version (id, version) VALUES (1, %s) "
                "ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                (SCHEMA_VERSION,),
            )

    # ---- Reads -----------------------------------------------------------------------------

    def load_all(self) -> StoredModels:
        """Every current version, each verified; raises StoreDamaged naming every bad one."""
        def read(connection: psycopg.Connection[Any]) -> tuple[list[Any], list[Any], list[Any]]:
            with connection.transaction():
                connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                return (connection.cursor(binary=True).execute(_CURRENT_ROWS).fetchall(),
                        connection.execute("SELECT name, last_version FROM names").fetchall(),
                        connection.execute(MISSING_CURRENT).fetchall())

        rows, names, missing = self._read(read)
        advice = f"in the PostgreSQL store {self.location}: delete them, or restore the database from a backup"
        snapshots = list(verified_current(rows, missing, advice))
        return StoredModels(snapshots, {str(name): int(version) for name, version in names})

    def verify_all(self) -> tuple[int, int, list[tuple[str, int]]]:
        """Every stored version checked against its checksum, one row in memory at a time
        (``centroidal store check``): names, versions, and the (name, version) of each that fails."""
        def read(connection: psycopg.Connection[Any]) -> tuple[int, int, list[tuple[str, int]]]:
            with connection.transaction():
                connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                counted = connection.execute("SELECT count(*) FROM names WHERE current_version IS NOT NULL").fetchone()
                with connection.cursor(name="centroidal_check", binary=True) as rows:
                    versions, failures = checksum_failures(rows.execute(_VERSION_ROWS))
            return int(counted[0]) if counted else 0, versions, failures

        return self._read(read)

    def load_version(self, name: str, version: int) -> ModelSnapshot | None:
        row = self._read(lambda connection: connection.cursor(binary=True).execute(
            f"{_VERSION_ROWS} WHERE name = %s AND version = %s", (name, version)
        ).fetchone())
        return verified_snapshot(*row) if row else None

    def load_catalog(self) -> Catalog:
        """Every name's version numbers, and the feed position they are as of."""
        return self._feed("SELECT name, last_version, current_version FROM names", ())

    def changes(self, since: int, force: bool = False) -> Catalog | None:
        """Names written since feed position ``since``. Without ``force`` this never reaches
        the database (it is asked before every read of a model, on the event loop): the
        change feed's thread reads it when ``changed`` is set, or on the timer."""
        if not force:
            return None
        return self._feed(
            "SELECT name, last_version, current_version FROM names WHERE seq > %s", (since,)
        )

    def _feed(self, query: str, parameters: tuple[int, ...]) -> Catalog:
        def read(connection: psycopg.Connection[Any]) -> tuple[Any, list[Any]]:
            with connection.transaction():  # the position and the names as of one snapshot
                connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                return (connection.execute("SELECT count FROM commits WHERE id = 1").fetchone(),
                        connection.execute(query, parameters).fetchall())

        row, rows = self._read(read)
        return Catalog(
            int(row[0]) if row else 0,
            [NameState(str(n), int(last), None if cur is None else int(cur)) for n, last, cur in rows],
        )

    # ---- Writes ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self) -> Iterator[tuple[Connection, int]]:
        """A write transaction, tried again on a fresh connection when the one it had broke
        before anything of the transaction reached the database."""
        for attempt in range(ATTEMPTS):
            with self._session() as connection:
                try:  # one round trip: the transaction, its commit number and the lease clock
                    begun = connection.execute(
                        "BEGIN; UPDATE commits SET count = count + 1 WHERE id = 1 "
                        "RETURNING count, extract(epoch FROM clock_timestamp())::float8"
                    )
                    begun.nextset()  # past BEGIN's empty result
                    row = begun.fetchone()
                except psycopg.OperationalError:
                    if connection.broken and attempt + 1 < ATTEMPTS and not self._closed:
                        continue  # the pool replaces the broken connection
                    raise
                committing = False
                try:
                    if row is None:
                        raise StoreDamaged(f"the PostgreSQL store {self.location} has lost the row of its commits table")
                    yield _Translated(connection, float(row[1])), int(row[0])
                    committing = True
                    connection.execute("COMMIT")
                except psycopg.Error as exc:
                    if committing:  # the outcome is not known: never report it as stored
                        condition = classify(exc, self.location)
                        self._conditions.set(condition)
                        raise StoreUnavailable(
                            f"{condition.message}; the database gave no answer to the COMMIT, so this write "
                            "may or may not be stored: read the model before writing it again",
                            reason=condition.reason,
                        ) from exc
                    raise
                finally:
                    if not committing and not connection.broken:
                        with contextlib.suppress(psycopg.Error):
                            connection.execute("ROLLBACK")
            self._conditions.set(None)
            return

    def _check_room(self, db: Connection, nbytes: int) -> None:
        if not self._max_bytes:
            return
        row = db.execute(
            "SELECT coalesce(sum(octet_length(centers) + coalesce(octet_length(state), 0) + octet_length(meta)), 0) "
            "FROM versions"
        ).fetchone()
        held = int(row[0])
        if held + nbytes > self._max_bytes:
            condition = StoreCondition(
                "STORE_FULL",
                f"the PostgreSQL store {self.location} holds {held} bytes of models; {nbytes} more would pass "
                f"its --max-store-bytes of {self._max_bytes}. Nothing was written: delete models (deletes "
                "still work) or raise the quota",
            )
            self._conditions.set(condition)
            raise refusal(condition)

    def _now(self, db: Connection) -> float:
        assert isinstance(db, _Translated)  # the transaction's start, read with its commit number
        return db.now

    def _wrote(self, db: Connection, name: str, version: int, deleted: bool = False) -> None:
        db.execute("SELECT pg_notify(?, ?)", (CHANNEL, f"{name} {version}" + (" deleted" if deleted else "")))

    # ---- Connections and failures ----------------------------------------------------------

    @contextlib.contextmanager
    def _session(self, retry: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; a database error becomes the store error it means. While
        the listener finds the database unreachable, calls fail at once rather than each
        wait POOL_WAIT_S for a connection (it finds the database again within a second).
        With ``retry``, a connection that broke (the database restarted since the pool
        opened it) raises _Broken instead, for the caller to try again on a fresh one."""
        if self._closed:
            raise shutting_down()
        current = self._conditions.current
        if self._listener is not None and current is not None and current.reason == "STORE_UNREACHABLE":
            raise refusal(current)
        held: psycopg.Connection[Any] | None = None
        try:
            with self._pool.connection() as connection:
                held = connection
                yield connection
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            if retry and held is not None and held.broken and not self._closed:
                raise _Broken() from exc
            condition = classify(exc, self.location)
            self._conditions.set(condition)
            raise refusal(condition) from exc

    def _read(self, reading: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``reading`` on a pooled connection, tried again on a fresh one when the connection
        broke (a read repeats safely)."""
        for attempt in range(ATTEMPTS):
            try:
                with self._session(retry=attempt + 1 < ATTEMPTS) as connection:
                    return reading(connection)
            except _Broken:
                continue
        raise AssertionError("the last attempt raises its own error")

    def _reachable(self, reachable: bool, why: str) -> None:
        """What the listener's probe found (every PROBE_S, from its thread)."""
        current = self._conditions.current
        if reachable:
            if current is not None and current.reason == "STORE_UNREACHABLE":
                log.warning("the PostgreSQL store %s is reachable again", self.location)
                self._conditions.set(None)
        elif current is None or current.reason != "STORE_UNREACHABLE":
            self._conditions.set(StoreCondition(
                "STORE_UNREACHABLE",
                f"the PostgreSQL store {self.location} cannot be reached ({why}); nothing is written "
                "until it can be, and models not in memory cannot be read",
            ))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            self._listener.stop()
        self._pool.close()
