"""A model version as the registry holds it, and the storage protocol the registry writes through."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

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


class ModelStore(Protocol):
    """What the registry needs from storage: SQLite here, a shared database for replicas.

    Every write is a compare-and-swap on the name's version: it is refused with
    VersionConflict unless its version is above every version stored for the name, so
    two writers can never make a name's version go backwards. Nothing is published as
    stored before the write has committed. A write that fails raises StoreFull,
    StoreUnavailable or StoreDamaged, never reports success; every version read back
    is verified against its checksum (StoreDamaged when it fails).
    """

    def load_all(self) -> StoredModels: ...

    def load_version(self, name: str, version: int) -> ModelSnapshot | None: ...

    def put(self, snapshot: ModelSnapshot, *, keep_versions: int) -> None: ...

    def checkpoint(
        self, snapshot: ModelSnapshot, producers: Mapping[str, int], *, keep_versions: int
    ) -> None: ...

    def delete(self, name: str, version: int) -> None:
        """Runs even while other writes are refused, so that space can be freed."""
        ...

    def check_writable(self) -> None:
        """Raise StoreFull or StoreUnavailable (with a retry_after) when a write would be
        refused now; cheap, as it runs before a request's data is accepted."""
        ...

    def close(self) -> None: ...
