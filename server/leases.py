"""Stream ownership: one replica applies a streamed model's batches, by holding its lease.

A lease is a row of the store's ``leases`` table: the model's name, its owner (a
replica's identity, ``''`` while nobody holds it), the owner's own address (where
producers are sent), an epoch, an expiry, and a version ceiling.

- **Taking**: a replica may take a lease nobody holds, one that expired, or its own.
  Taking it from anyone else bumps the epoch, so whatever the old owner does next is
  fenced out: a checkpoint commits only while the row still names the checkpointing
  replica with the epoch it took, checked in the checkpoint's own transaction.
- **Renewing**: the owner moves the expiry forward while it holds the lease (the
  checkpointer does so on every round), and gives the lease up when its last stream
  closes.
- **The ceiling**: an owner publishes versions to its readers before they are stored
  (every batch makes one; a checkpoint stores the latest). It may publish up to the
  ceiling, which it raises in the store before it gets there. Any other writer of the
  name (a fit, a delete, the next owner) numbers its version above the ceiling, so a
  name's versions never go backwards, whoever wrote the last one and whether or not it
  was stored.
- **Revoking**: a fit or a delete of the name ends the lease (owner ``''``, epoch + 1),
  as within one server a fit or a delete replaces a streamed model; the supervisor
  revokes a dead worker's leases at once, so that its models move without waiting for
  the expiry.

Every function here runs inside the caller's write transaction, on a DB-API connection
with ``?`` parameters, in SQL that SQLite and PostgreSQL both speak; ``now`` is the
store's clock (the database server's, for PostgreSQL), one for every replica.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """A DB-API connection inside a transaction, taking ``?`` parameters: SQLite's, or the
    PostgreSQL store's translation of psycopg's."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...


# SQLite's table (the PostgreSQL store declares the same columns in its own types).
SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    address TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    expires REAL NOT NULL,
    ceiling INTEGER NOT NULL
);
"""

# Versions an owner may publish ahead of what it has stored, before it raises the ceiling.
CEILING_STEP = 1000


@dataclass(frozen=True)
class Lease:
    """A lease as its owner holds it."""

    name: str
    owner: str
    address: str
    epoch: int
    ceiling: int
    # The name's newest version anywhere when the lease was taken: the owner numbers on from here.
    floor: int


@dataclass(frozen=True)
class Holder:
    """Who holds a lease another replica asked for."""

    name: str
    owner: str
    address: str
    expires_in: float


class LeaseLost(Exception):
    """The lease is no longer this owner's (taken over, or revoked by a fit or a delete)."""


def take(
    db: Connection, name: str, owner: str, address: str, now: float, ttl: float, last_version: int,
    alive: Callable[[str], bool] = lambda holder: True,
) -> Lease | Holder:
    """Take ``name``'s lease for ``owner``, or return who holds it. ``alive`` tells whether a
    holder still runs, where the caller can know (a process of its own host): one that
    does not is passed over without waiting for its lease to lapse."""
    row = db.execute(
        "SELECT owner, address, epoch, expires, ceiling FROM leases WHERE name = ?", (name,)
    ).fetchone()
    if row is None:
        epoch, ceiling = 1, 0
    else:
        held_by, held_at, epoch, expires, ceiling = row
        if held_by and held_by != owner and float(expires) > now and alive(str(held_by)):
            return Holder(name, str(held_by), str(held_at), float(expires) - now)
        if held_by != owner:
            epoch = int(epoch) + 1
    floor = max(int(last_version), int(ceiling))
    lease = Lease(name, owner, address, int(epoch), floor + CEILING_STEP, floor)
    db.execute(
        "INSERT INTO leases (name, owner, address, epoch, expires, ceiling) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, address = excluded.address, "
        "epoch = excluded.epoch, expires = excluded.expires, ceiling = excluded.ceiling",
        (name, owner, address, lease.epoch, now + ttl, lease.ceiling),
    )
    return lease


def _holder(db: Connection, lease: Lease) -> tuple[tuple[str, int, int] | None, bool]:
    """The lease's row (owner, epoch, ceiling), and whether it still names ``lease``'s owner
    and epoch."""
    row = db.execute("SELECT owner, epoch, ceiling FROM leases WHERE name = ?", (lease.name,)).fetchone()
    return row, row is not None and row[0] == lease.owner and int(row[1]) == lease.epoch


def check(db: Connection, lease: Lease) -> tuple[str, int, int]:
    """Raise LeaseLost unless the row still names ``lease``'s owner and epoch (the fence)."""
    row, held = _holder(db, lease)
    if not held:
        raise LeaseLost(
            f"this replica no longer owns the stream of model {lease.name!r}: "
            + ("its lease was revoked by a fit or a delete" if row is None or not row[0]
               else f"another replica took it over (epoch {row[1]})")
        )
    assert row is not None
    return row


def renew(db: Connection, lease: Lease, expires: float, ceiling: int) -> Lease:
    """Move the expiry forward to ``expires`` and raise the ceiling to ``ceiling``; fenced like
    a checkpoint."""
    ceiling = max(ceiling, int(check(db, lease)[2]))
    db.execute("UPDATE leases SET expires = ?, ceiling = ? WHERE name = ?", (expires, ceiling, lease.name))
    return Lease(lease.name, lease.owner, lease.address, lease.epoch, max(ceiling, lease.ceiling), lease.floor)


def give_up(db: Connection, lease: Lease, published: int, last_version: int) -> None:
    """Let the lease go (its owner's streams closed); the ceiling falls to what was published.
    When the store's own counter already covers that (everything published was stored, or
    nothing was), the row goes: stream opens leave no rows behind, however many names they
    tried. (Owners are unique to their process, so a new row's epoch 1 fences an old owner
    as well as any higher epoch would.)"""
    if not _holder(db, lease)[1]:
        return  # already someone else's, or revoked
    if published <= last_version:
        db.execute("DELETE FROM leases WHERE name = ?", (lease.name,))
        return
    db.execute(
        "UPDATE leases SET owner = '', address = '', expires = 0, ceiling = ? WHERE name = ?",
        (published, lease.name),
    )


def published_up_to(db: Connection, name: str, writer: str, published: int) -> int:
    """The highest version of ``name`` anyone may have published under a lease. A writer that
    owns the lease itself knows exactly (``published``); of anyone else's, the ceiling."""
    row = db.execute("SELECT owner, ceiling FROM leases WHERE name = ?", (name,)).fetchone()
    if row is None:
        return 0
    return published if writer and row[0] == writer else int(row[1])


def revoke(db: Connection, name: str, version: int) -> None:
    """End whoever's lease on ``name``: a fit or a delete wrote ``version``, above anything
    published under it, which becomes the ceiling."""
    db.execute(
        "UPDATE leases SET owner = '', address = '', expires = 0, ceiling = ?, "
        "epoch = epoch + CASE WHEN owner <> '' THEN 1 ELSE 0 END WHERE name = ?",
        (version, name),
    )


def revoke_owners(db: Connection, prefix: str) -> int:
    """End every lease whose owner starts with ``prefix`` (a dead worker, or every owner at a
    fresh start); returns how many ended."""
    held = db.execute("SELECT name, owner FROM leases WHERE owner <> ''").fetchall()
    ended = [str(name) for name, owner in held if str(owner).startswith(prefix)]
    for name in ended:
        db.execute(
            "UPDATE leases SET owner = '', address = '', expires = 0, epoch = epoch + 1 WHERE name = ?", (name,)
        )
    return len(ended)
