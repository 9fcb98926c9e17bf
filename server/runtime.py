"""What the service's domain objects share: the configuration, the registry of models, the
metrics, the memory budget, the pools work runs on, and the fit slots."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import numpy as np

from centroidal.engine import warmup
from centroidal.partitioned.cluster import DaskCluster
from centroidal.sources import Roots

from .admission import Slots, Workers
from .config import ServerConfig
from .memory import MemoryBudget
from .metrics import Metrics
from .registry import Registry
from .snapshots import ModelSnapshot
from .spare import SpareRows
from .steps import FitTally

# How often a call waiting for its kernels looks again.
COMPILE_POLL_S = 0.05


@dataclass
class Runtime:
    config: ServerConfig
    registry: Registry
    metrics: Metrics
    memory: MemoryBudget
    workers: Workers
    fit_slots: Slots
    # The last large upload's array, for the next upload to fill (spare.py).
    spare: SpareRows = field(default_factory=SpareRows)
    fits: FitTally = field(default_factory=FitTally)
    # Where a Fit may name its dataset, and the Dask cluster that fits it (None: this process).
    datasets: Roots = field(default_factory=lambda: Roots(()))
    outputs: Roots = field(default_factory=lambda: Roots((), "--dataset-output-root"))
    dask: DaskCluster | None = None
    # Set once the server's warm-up has compiled every kernel.
    kernels_compiled: threading.Event = field(default_factory=threading.Event)
    # While processes of their own compile the kernels (from a cold cache), each warm-up
    # group's event, set once the group is loaded here. Empty otherwise.
    kernel_groups: dict[str, threading.Event] = field(default_factory=dict)

    @property
    def compiling(self) -> bool:
        """Whether helper processes are still compiling kernels a call may wait for."""
        return bool(self.kernel_groups) and not self.kernels_compiled.is_set()

    async def kernels_for(self, dtype: np.dtype, fit: bool) -> None:
        """Wait until the warm-up has the kernels a predict (or a fit) of ``dtype`` runs, when
        other processes compile them: compiling here too would only slow them down."""
        if not self.compiling:
            return
        for name in warmup.groups_for(dtype, fit):
            ready = self.kernel_groups.get(name)
            while ready is not None and not ready.is_set():
                await asyncio.sleep(COMPILE_POLL_S)

    @classmethod
    def create(cls, config: ServerConfig, registry: Registry, metrics: Metrics) -> Runtime:
        memory = MemoryBudget(config.memory_budget)
        spare = SpareRows()
        memory.add_resident(spare.resident_bytes)
        memory.add_resident(registry.resident_bytes)
        # When a call needs room, the spare array goes first, then loaded models, least
        # recently used first.
        memory.add_shedder(spare.shed)
        memory.add_shedder(registry.shed)
        registry.on_load = memory.make_room
        dask = None
        if config.dask_scheduler or config.dask_local:
            dask = DaskCluster(config.dask_scheduler, config.dask_local)
        return cls(config, registry, metrics, memory, Workers(config),
                   Slots(config.max_concurrent_fits, "fits or quantisations"), spare,
                   datasets=Roots(config.dataset_root),
                   outputs=Roots(config.dataset_output_root, "--dataset-output-root"), dask=dask)

    async def model(self, name: str, field: str = "name") -> ModelSnapshot:
        """A model's current snapshot; one not in memory is loaded on the storage pool."""
        snapshot = self.registry.lookup(name, field)
        if snapshot is not None:
            return snapshot
        return await self.workers.run(self.workers.storage, self.registry.get, name, field)

    async def commit(self, snapshot: ModelSnapshot, expected_version: int | None = None) -> ModelSnapshot:
        """Store a new version of a model on the storage pool; returns it as stored."""
        stored = await self.workers.run(self.workers.storage, self.registry.commit, snapshot, expected_version)
        self.metrics.models.set(len(self.registry))
        return stored
