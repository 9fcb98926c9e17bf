"""A model version as the registry holds it, and the storage protocol the registry writes through."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from .leases import Holder, Lease

KMEANS = "kmeans"
MINIBATCH_KMEANS = "minibatch-kmeans"
PALETTE = "palette"
SPECTRAL = "spectral"


@dataclass(frozen=True, eq=False)
class ModelSnapshot:
    """One version of a model; compared and hashed by identity, as each is published once.

    centers : ndarray of shape (n_clusters, n_features), float32 or float64, read-only
    config : the fit's parameters with defaults filled in (init, n_init, max_iter, tol, seed)
    kind : KMEANS, MINIBATCH_KMEANS, PALETTE or SPECTRAL
    """

    name: str
    version: int
    centers: np.ndarray
    config: dict[str, Any]
    inertia: float
    n_iter: int
    n_samples_seen: int
    created_at: float
    updated_at: float
    kind: str = KMEANS
    extra: dict[str, Any] = field(default_factory=dict)
    # A streamed model's learning state (MiniBatchState.to_bytes), for checkpoints.
    state: bytes | None = None

    @property
    def nbytes(self) -> int:
        """Memory the snapshot holds: its centers, and its state (a spectral model's rows)."""
        return int(self.centers.nbytes) + len(self.state or b"")

    @property
    def n_clusters(self) -> int:
        return int(self.centers.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.centers.shape[1])


@dataclass(frozen=True)
class StoredModels:
    """Everything a store holds at start: each name's current version, and every name's
    last version number (deleted names included, so numbers never go backwards)."""

    current: list[ModelSnapshot]
    last_versions: dict[str, int]


@dataclass(frozen=True)
class NameState:
    """A name's version numbers in the store: the last ever written (deletes included) and
    the current one (None once deleted)."""

    name: str
    last_version: int
    current_version: int | None


@dataclass(frozen=True)
class Catalog:
    """Names as of a position of the store's change feed: every name at start, or those
    written since a position."""

    position: int
    names: list[NameState]


class ModelStore(Protocol):
    """What the registry needs from storage: SQLite on one host (store.py), PostgreSQL for
    replicas on many (postgres.py).

    Every write is a compare-and-swap on the name's version: it is refused with
    VersionConflict unless its version is above every version stored for the name, so
    two writers can never make a name's version go backwards. Nothing is published as
    stored before the write has committed. A write that fails raises StoreFull,
    StoreUnavailable or StoreDamaged, never reports success; every version read back
    is verified against its checksum (StoreDamaged when it fails).
    """

    def load_all(self) -> StoredModels: ...

    def load_catalog(self) -> Catalog: ...

    @property
    def changed(self) -> threading.Event | None:
        """Set when another replica may have written (a PostgreSQL NOTIFY); None where the
        store is cheap enough to ask before every read (SQLite)."""
        ...

    @property
    def location(self) -> str:
        """Where the store is, as logs show it (no password)."""
        ...

    def changes(self, since: int, force: bool = False) -> Catalog | None:
        """Names written by anyone since a feed position; None when nothing changed. Without
        ``force`` a store may answer None rather than ask a database elsewhere (it then
        sets ``changed`` when it hears of a write)."""
        ...

    def load_version(self, name: str, version: int) -> ModelSnapshot | None: ...

    def put(
        self, snapshot: ModelSnapshot, *, keep_versions: int, expected_version: int | None = None,
        writer: str = "", published: int = 0,
    ) -> ModelSnapshot:
        """Version 0 is numbered by the store, in the write's transaction, above whatever a
        stream's owner may have published (exactly ``published`` when ``writer`` owns it)."""
        ...

    def checkpoint(
        self, snapshot: ModelSnapshot, producers: Mapping[str, int], *, keep_versions: int,
        lease: Lease | None = None,
    ) -> Lease | None: ...

    def delete(
        self, name: str, version: int = 0, *, expected_version: int | None = None, writer: str = "",
        published: int = 0,
    ) -> int:
        """Runs even while other writes are refused, so that space can be freed."""
        ...

    def take_lease(
        self, name: str, owner: str, address: str, alive: Callable[[str], bool] = ...
    ) -> Lease | Holder: ...

    def renew_lease(self, lease: Lease, ceiling: int) -> Lease: ...

    def give_up_lease(self, lease: Lease, published: int) -> None: ...

    def revoke_leases(self, owner_prefix: str) -> int: ...

    def check_writable(self) -> None:
        """Raise StoreFull or StoreUnavailable (with a retry_after) when a write would be
        refused now; cheap, as it runs before a request's data is accepted."""
        ...

    def close(self) -> None: ...
