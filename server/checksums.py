"""A stored model version's checksum, and its row read back: verified, or StoreDamaged.

Every version the server writes carries a SHA-256 over each of its parts (``row_checksum``);
each one read is checked against it before it is served (``verified_snapshot``), and the
operators' check and a store's open check them all. The same rows on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .exceptions import StoreDamaged
from .snapshots import MINIBATCH_KMEANS, ModelSnapshot

# Streamed models keep the spelling stores have always had, so older servers still read them.
KIND_ON_DISK = {MINIBATCH_KMEANS: "minibatch_kmeans"}
_KIND_FROM_DISK = {disk: kind for kind, disk in KIND_ON_DISK.items()}


def row_checksum(name: str, version: int, meta: str | bytes, centers: bytes, state: bytes | None) -> str:
    """SHA-256 over every part of a stored version, each prefixed by its length."""
    digest = hashlib.sha256()
    meta_bytes = meta.encode() if isinstance(meta, str) else meta
    for part in (name.encode(), str(int(version)).encode(), meta_bytes, centers, state or b""):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return "sha256:" + digest.hexdigest()


def verified_snapshot(
    name: str, version: int, meta_json: bytes, centers_blob: bytes, state: bytes | None, checksum: str | None
) -> ModelSnapshot:
    if checksum != row_checksum(name, int(version), meta_json, centers_blob, state):
        raise StoreDamaged(
            f"stored model {name!r} version {version} fails its checksum: it is refused, not "
            "served; delete it, or restore the store from a backup"
        )
    meta = json.loads(meta_json)
    centers = np.frombuffer(centers_blob, dtype=np.dtype(meta["dtype"])).reshape(meta["shape"])
    return ModelSnapshot(
        name=name,
        version=int(version),
        centers=centers.astype(centers.dtype.newbyteorder("="), copy=True),
        config=meta["config"],
        inertia=float(meta["inertia"]),
        n_iter=int(meta["n_iter"]),
        n_samples_seen=int(meta["n_samples_seen"]),
        created_at=float(meta["created_at"]),
        updated_at=float(meta["updated_at"]),
        kind=_KIND_FROM_DISK.get(meta["kind"], meta["kind"]),
        extra=meta.get("extra", {}),
        state=state,
    )


def checksum_failures(rows: Iterable[Sequence[Any]]) -> tuple[int, list[tuple[str, int]]]:
    """Every stored version in ``rows`` (as integrity.VERSION_ROWS reads them) checked against its
    checksum: how many there are, and the (name, version) of each that fails. Rows written
    before checksums are skipped."""
    count, failures = 0, []
    for row in rows:
        count += 1
        if row[5] is None:
            continue  # written before checksums; the server gives it one when it opens
        try:
            verified_snapshot(*row)
        except StoreDamaged:
            failures.append((str(row[0]), int(row[1])))
    return count, failures


# Names whose current version has no row (damage); the same SQL on both stores.
MISSING_CURRENT = (
    "SELECT n.name FROM names n LEFT JOIN versions v ON v.name = n.name AND v.version = n.current_version "
    "WHERE n.current_version IS NOT NULL AND v.name IS NULL"
)


def verified_current(
    rows: Iterable[Sequence[Any]], missing: Iterable[Sequence[Any]], advice: str
) -> Iterator[ModelSnapshot]:
    """Each current version in ``rows`` verified, one at a time; once they are all read,
    StoreDamaged naming every one that failed its checksum, and every name in ``missing``
    (MISSING_CURRENT), followed by ``advice``."""
    damaged = [str(name) for (name, *_) in missing]
    for row in rows:
        try:
            snapshot = verified_snapshot(*row)
        except StoreDamaged:
            damaged.append(str(row[0]))
            continue
        yield snapshot
    if damaged:
        shown = ", ".join(repr(name) for name in sorted(damaged)[:20])
        more = f" and {len(damaged) - 20} more" if len(damaged) > 20 else ""
        raise StoreDamaged(
            f"{len(damaged)} stored models fail their checksum or are missing: {shown}{more}; {advice}",
            metadata={"models": ",".join(sorted(damaged)[:20])},
        )
