"""A stream's batches kept in shared memory (``Client(shared_memory=True)``): each batch's
rows are written once, into a slab of the process's (``shared_memory.SLABS``), and
its request names them there instead of carrying them, so no bytes travel for the points.

The slab is the batch's kept copy too: the rows stay there until the server has stored
the batch, for a replay after a crash, as ``replay.ReplayBuffer`` keeps a request. A slab
goes back to the process's slabs once none of its batches is kept any more. When the server
may not or cannot read the client's shared memory (it runs elsewhere, or with
--no-shared-memory), the stream sends the kept batches with their rows instead
(``SharedBatch.inline``).
"""

from __future__ import annotations

import numpy as np

from centroidal import codec

from .replay import Slab, SlabFiller
from .shared_memory import SLABS, Region

# Each batch's rows start on a cache line of their own.
ALIGN = 64


class SharedBatch:
    """A kept batch whose rows are in a slab: its request naming them, and the rows
    themselves (a read-only view of the slab) for a request that carries them."""

    __slots__ = ("request", "rows", "weights", "producer_id", "sequence", "__weakref__")

    def __init__(self, request: bytes, rows: np.ndarray, weights: np.ndarray | None, producer_id: str,
                 sequence: int) -> None:
        self.request = request
        self.rows = rows
        self.weights = weights
        self.producer_id = producer_id
        self.sequence = sequence

    def inline(self) -> bytes:
        """The batch's request with its rows in it, for a server that cannot read them."""
        return codec.serialize_minibatch_request(
            codec.MiniBatch(self.producer_id, self.sequence, self.rows, self.weights))

    def __len__(self) -> int:
        """The bytes kept for it, as a kept request's length counts."""
        return self.rows.nbytes + len(self.request)


class SharedReplay(SlabFiller[Region]):
    """One stream's batches, each written into the stream's current slab."""

    def keep(self, producer_id: str, sequence: int, points: np.ndarray, weights: np.ndarray | None) -> SharedBatch:
        """Batch ``sequence`` of ``points`` (C-contiguous, float32 or float64) written into a
        slab, and its request naming them there."""
        nbytes = points.nbytes
        slab = self._slab_for(nbytes, lambda: _new_slab(nbytes))
        region, offset = slab.memory, slab.used
        rows = np.ndarray(points.shape, dtype=points.dtype.newbyteorder("<"), buffer=region.mapping, offset=offset)
        np.copyto(rows, points)  # lets the GIL go for a large batch
        rows.flags.writeable = False
        slab.used = -(-(offset + nbytes) // ALIGN) * ALIGN
        shared = codec.SharedRows(region.name, offset, points.dtype, points.shape[0], points.shape[1])
        request = codec.serialize_minibatch_request(codec.MiniBatch(producer_id, sequence, None, weights, shared))
        kept = SharedBatch(request, rows, weights, producer_id, sequence)
        slab.hold(kept)
        return kept


def _new_slab(nbytes: int) -> Slab[Region]:
    region = SLABS.take(nbytes)
    return Slab(region, region.size, SLABS.give_back)
