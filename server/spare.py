"""The last large upload's array, kept for the next upload while calls come back to back.

A declared upload lands in one array as large as its rows. A fresh one costs the kernel a
page fault and a zeroed page for every page the rows are copied into: for 64 MB, about 9 ms
of server CPU here, on the thread that copies each chunk in while the next arrives. So the
array of a Fit that has ended is kept, and the next upload whose rows fill it (to within a
sixteenth) takes it instead of a new one. The spare counts against the memory budget as resident,
is the first thing let go of when a call needs room, and goes once the server is quiet
(``memory.when_quiet``), as malloc's free pages do.

Only an array this spare handed out is kept, and only when nothing refers to it any more,
neither the rows nor a view of them: the next upload overwrites it.
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import Protocol

import numpy as np

from . import memory

# Smaller arrays come from malloc's heaps, which reuse them anyway (memory.MMAP_THRESHOLD).
MIN_BYTES = memory.MMAP_THRESHOLD


class HoldsRows(Protocol):
    points: np.ndarray


class SpareRows:
    """At most one spare array, as raw bytes; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spare: np.ndarray | None = None

    def resident_bytes(self) -> int:
        spare = self._spare
        return 0 if spare is None else int(spare.nbytes)

    def shed(self, nbytes: int) -> int:
        """Let go of the spare for a call that needs room; returns the bytes freed."""
        return self.drop()

    def drop(self) -> int:
        with self._lock:
            spare, self._spare = self._spare, None
        return 0 if spare is None else int(spare.nbytes)

    def take(self, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype``: the spare when the
        rows fill it to within a sixteenth (the rest is memory the call's reservation does
        not count), a new one otherwise. Either way a view of raw bytes, which ``keep``
        takes back."""
        needed = shape[0] * shape[1] * dtype.itemsize
        with self._lock:
            root = self._spare
            if root is not None and needed <= root.nbytes <= needed + needed // 16:
                self._spare = None
            else:
                root = None
        if root is None:
            root = np.empty(needed, dtype=np.uint8)
        return root[:needed].view(dtype).reshape(shape)

    def keep(self, holder: HoldsRows) -> None:
        """Take the rows of a call that has ended from ``holder`` (leaving it an empty array),
        and keep their memory for the next upload if nothing else refers to it."""
        rows = holder.points
        root = rows.base
        if not isinstance(root, np.ndarray) or root.dtype != np.uint8 or not root.flags.owndata:
            return  # not an array this spare handed out
        holder.points = NO_ROWS
        if root.nbytes < MIN_BYTES:
            return
        alive = weakref.ref(rows)
        del rows
        # The rows died with the last reference (no model or result holds them), and the raw
        # bytes are referred to by ``root`` and getrefcount's argument alone (no view is left).
        if alive() is not None or sys.getrefcount(root) > 2:
            return
        with self._lock:
            self._spare = root
        memory.when_quiet(self.drop)


# What a place that held rows holds once they are let go of.
NO_ROWS = np.empty((0, 0))
