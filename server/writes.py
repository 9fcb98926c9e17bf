"""The store's writes, one transaction each, the same SQL on SQLite and PostgreSQL.

A write's transaction holds the compare-and-swap on the name's versions (its number is
chosen inside it, above anything any replica wrote or a stream's owner published), the
new version's row, the name's version counter, the pruning of versions past
``keep_versions``, and the stream lease it touches (``leases.py``). A name's counter
survives a delete, so versions never go backwards.

``VersionedWrites`` is what both stores share; each gives it a transaction. The SQL here
is the common subset of the two dialects, with ``?`` parameters (the PostgreSQL store
translates them).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace

import numpy as np

from . import leases
from .exceptions import ModelNotFound, StoreFull, VersionConflict
from .conditions import WriteConditions, shutting_down
from .checksums import KIND_ON_DISK, row_checksum
from .integrity import StoreCondition
from .leases import Connection, Holder, Lease
from .snapshots import ModelSnapshot


class VersionedWrites:
    """put, checkpoint, delete and the lease calls of a ModelStore, over ``_writing``; and
    whether writes are refused now (each store keeps its ``_conditions``)."""

    lease_ttl = 10.0
    _closed: bool
    _conditions: WriteConditions

    def check_writable(self) -> None:
        """Raise StoreFull or StoreUnavailable when a write would be refused now; cheap enough
        to call before accepting a request's data."""
        if self._closed:
            raise shutting_down()
        self._conditions.check()

    @property
    def condition(self) -> StoreCondition | None:
        """Why writes are refused, or None while they work."""
        return self._conditions.current

    # ---- What each store provides ---------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self) -> Iterator[tuple[Connection, int]]:
        """One write transaction: the connection and the transaction's commit number (the
        change feed's position of what it writes). A failure rolls it back and becomes a
        store error (StoreFull, StoreUnavailable, StoreDamaged)."""
        raise NotImplementedError
        yield  # a generator, as each store's is

    def _now(self, db: Connection) -> float:
        """The lease clock: one clock for every replica of the store."""
        raise NotImplementedError

    def _wrote(self, db: Connection, name: str, version: int, deleted: bool = False) -> None:
        """``name`` is now at ``version`` (a delete's, when ``deleted``), once the transaction
        commits."""

    def _check_room(self, db: Connection, nbytes: int) -> None:
        """Raise StoreFull when a new row of ``nbytes`` would take the store past its quota."""

    def _refuse_delete(self) -> None:
        """Raise when even a delete cannot be written."""

    def _free_space(self) -> bool:
        """Give up some space so a delete can get through a full store; False when none."""
        return False

    # ---- Writes ---------------------------------------------------------------------------

    def put(
        self, snapshot: ModelSnapshot, *, keep_versions: int, expected_version: int | None = None,
        writer: str = "", published: int = 0,
    ) -> ModelSnapshot:
        """Store ``snapshot`` and return it as stored.

        With version 0 the store numbers it, in the write's transaction, above every version
        of the name any replica wrote or published under a stream's lease, and timestamps it
        (created_at carried over from the current version). A fit or palette replaces a
        streamed model: the stream's lease ends. ``expected_version`` is checked against the
        current version in the same transaction (VersionConflict). ``writer`` is the calling
        replica's lease identity and ``published`` the newest version it published of the
        name: when it owns the name's stream, that is what the new version goes above.
        """
        return self._write(snapshot, keep_versions, expected_version=expected_version,
                           writer=writer, published=published)

    def checkpoint(
        self, snapshot: ModelSnapshot, producers: Mapping[str, int], *, keep_versions: int,
        lease: Lease | None = None,
    ) -> Lease | None:
        """Store a streamed model with each producer's last sequence, in the same row. Under a
        lease the write is fenced (LeaseLost when the lease is no longer the caller's) and
        renews it; returns the renewed lease."""
        extra = {**snapshot.extra, "producers": dict(producers)}
        renewed: list[Lease] = []
        self._write(replace(snapshot, extra=extra), keep_versions, lease=lease, renewed=renewed)
        return renewed[0] if renewed else None

    def _write(
        self,
        snapshot: ModelSnapshot,
        keep_versions: int,
        *,
        expected_version: int | None = None,
        lease: Lease | None = None,
        renewed: list[Lease] | None = None,
        writer: str = "",
        published: int = 0,
    ) -> ModelSnapshot:
        self.check_writable()  # before the row is serialised
        centers = np.ascontiguousarray(snapshot.centers).tobytes()
        name = snapshot.name
        with self._writing() as (db, seq):
            last, current = _name_row(db, name)
            if expected_version is not None:
                _check_expected(db, name, expected_version, current)
            if lease is not None:
                renewed_lease = leases.renew(db, lease, self._now(db) + self.lease_ttl,
                                             snapshot.version + leases.CEILING_STEP)
                if renewed is not None:
                    renewed.append(renewed_lease)
            if snapshot.version:
                _check_newer(name, snapshot.version, last)
            else:  # numbered here: above every version written or published under a lease
                now = self._now(db)
                created = _created_at(db, name, current)
                snapshot = replace(
                    snapshot, version=max(last, leases.published_up_to(db, name, writer, published)) + 1,
                    created_at=now if created is None else created, updated_at=now,
                )
            if lease is None:
                leases.revoke(db, name, snapshot.version)
            meta = meta_json(snapshot)
            self._check_room(db, len(centers) + len(snapshot.state or b"") + len(meta))
            digest = row_checksum(name, snapshot.version, meta, centers, snapshot.state)
            db.execute(
                "INSERT INTO versions (name, version, meta, centers, state, checksum) VALUES (?, ?, ?, ?, ?, ?)",
                (name, snapshot.version, meta, centers, snapshot.state, digest),
            )
            db.execute(
                "INSERT INTO names (name, last_version, current_version, seq) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET last_version = excluded.last_version, "
                "current_version = excluded.current_version, seq = excluded.seq",
                (name, snapshot.version, snapshot.version, seq),
            )
            db.execute("DELETE FROM versions WHERE name = ? AND version <= ?", (name, snapshot.version - keep_versions))
            self._wrote(db, name, snapshot.version)
        return snapshot

    def delete(
        self, name: str, version: int = 0, *, expected_version: int | None = None, writer: str = "",
        published: int = 0,
    ) -> int:
        """Delete a name's versions; returns the version the delete wrote (numbered by the
        store when ``version`` is 0). Runs even while writes are refused, to free space; on a
        full store it frees what it can once and tries again."""
        try:
            return self._delete(name, version, expected_version, writer, published)
        except StoreFull:
            if not self._free_space():
                raise
            return self._delete(name, version, expected_version, writer, published)

    def _delete(self, name: str, version: int, expected_version: int | None, writer: str, published: int) -> int:
        self._refuse_delete()
        with self._writing() as (db, seq):
            last, current = _name_row(db, name)
            ceiling = leases.published_up_to(db, name, writer, published)
            if not version and current is None and ceiling <= last:
                # Nothing stored and no stream publishing it (a live one's lease lifts the ceiling).
                raise ModelNotFound(f"model {name!r} does not exist", field="name")
            if expected_version is not None:
                _check_expected(db, name, expected_version, current)
            if version:
                _check_newer(name, version, last)
            else:
                version = max(last, ceiling) + 1
            leases.revoke(db, name, version)
            # An upsert: a streamed model deleted before its first checkpoint has no row yet,
            # and its version counter must still not go backwards.
            db.execute(
                "INSERT INTO names (name, last_version, current_version, seq) VALUES (?, ?, NULL, ?) "
                "ON CONFLICT(name) DO UPDATE SET last_version = excluded.last_version, "
                "current_version = NULL, seq = excluded.seq",
                (name, version, seq),
            )
            db.execute("DELETE FROM versions WHERE name = ?", (name,))
            self._wrote(db, name, version, deleted=True)
        return version

    # ---- Stream leases (leases.py) --------------------------------------------------------

    def take_lease(
        self, name: str, owner: str, address: str, alive: Callable[[str], bool] = lambda holder: True
    ) -> Lease | Holder:
        """Take ``name``'s stream lease, or learn who holds it (``alive``: see leases.take)."""
        self.check_writable()
        with self._writing() as (db, _):
            last, _ = _name_row(db, name)
            return leases.take(db, name, owner, address, self._now(db), self.lease_ttl, last, alive)

    def renew_lease(self, lease: Lease, ceiling: int) -> Lease:
        """Keep holding ``lease`` (LeaseLost when it is gone), raising its ceiling to ``ceiling``."""
        with self._writing() as (db, _):
            return leases.renew(db, lease, self._now(db) + self.lease_ttl, ceiling)

    def give_up_lease(self, lease: Lease, published: int) -> None:
        with self._writing() as (db, _):
            last, _ = _name_row(db, lease.name)
            leases.give_up(db, lease, published, last)

    def revoke_leases(self, owner_prefix: str) -> int:
        """End every lease of owners whose identity starts with ``owner_prefix``."""
        with self._writing() as (db, _):
            return leases.revoke_owners(db, owner_prefix)


# ---- Inside a write's transaction ----------------------------------------------------------


def _name_row(db: Connection, name: str) -> tuple[int, int | None]:
    row = db.execute("SELECT last_version, current_version FROM names WHERE name = ?", (name,)).fetchone()
    if row is None:
        return 0, None
    return int(row[0]), None if row[1] is None else int(row[1])


def _created_at(db: Connection, name: str, current: int | None) -> float | None:
    if current is None:
        return None
    row = db.execute("SELECT meta FROM versions WHERE name = ? AND version = ?", (name, current)).fetchone()
    if row is None:
        return None
    created = json.loads(row[0]).get("created_at")
    return None if created is None else float(created)


def _check_expected(db: Connection, name: str, expected: int, current: int | None) -> None:
    """expected_version against the stored current version; a version a stream's owner
    published but has not stored yet (under its ceiling) counts as current too."""
    stored = current or 0
    if expected == stored:
        return
    row = db.execute("SELECT owner, ceiling FROM leases WHERE name = ?", (name,)).fetchone()
    if row is not None and row[0] and stored < expected <= int(row[1]):
        return
    raise VersionConflict(
        f"model {name!r} is at version {stored} in the store, not the expected_version {expected}",
        field="expected_version",
        metadata={"current_version": str(stored)},
    )


def _check_newer(name: str, version: int, last: int) -> None:
    """The compare-and-swap: refuse a version at or below one already written for name."""
    if last >= version:
        raise VersionConflict(
            f"model {name!r} already has version {last} in the store; version {version} was not written",
            field="version",
            metadata={"current_version": str(last)},
        )


def meta_json(snapshot: ModelSnapshot) -> str:
    """A stored version's metadata: everything but its centers and state."""
    return json.dumps(
        {
            "kind": KIND_ON_DISK.get(snapshot.kind, snapshot.kind),
            "config": snapshot.config,
            "inertia": snapshot.inertia,
            "n_iter": snapshot.n_iter,
            "n_samples_seen": snapshot.n_samples_seen,
            "created_at": snapshot.created_at,
            "updated_at": snapshot.updated_at,
            "dtype": snapshot.centers.dtype.str,
            "shape": list(snapshot.centers.shape),
            "extra": snapshot.extra,
        }
    )

