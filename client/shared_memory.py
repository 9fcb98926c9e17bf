"""Rows handed to a server on this host through POSIX shared memory
(``Client(shared_memory=True)``): the client writes them into an object under /dev/shm,
mode 600, and sends its name; no bytes travel for the points. Predict's rows take an
object for the length of a call; a stream's batches stay in slabs of the process's
(``SLABS``) until the server has stored them (``shared_batches``).

Objects are kept and reused from call to call (a page written once costs far less the
next time than a fresh one). A client's are removed when it closes, or when the process
exits if it never does; the process's free slabs when it exits. A process killed outright
(SIGKILL) leaves its objects in /dev/shm, named centroidal-<pid>-*, for whoever cleans up
after it.
"""

from __future__ import annotations

import mmap
import os
import secrets
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from centroidal import codec

SHM_DIR = "/dev/shm"
# Objects are made at least this large, so that small calls share one.
MIN_REGION_BYTES = 1 << 20
# Free objects kept for the next calls; more are removed as they are given back.
KEPT_REGIONS = 4
# A stream's batches are written into slabs of this size (a larger batch gets one of its own);
# free slabs up to IDLE_SLAB_BYTES are kept for the next batches, of any stream of the process.
SLAB_BYTES = 8 << 20
IDLE_SLAB_BYTES = 64 << 20


def shared_memory_available() -> bool:
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)


@dataclass(eq=False)
class Region:
    """One object: its name as the server reads it, and this process's writable mapping."""

    name: str
    size: int
    mapping: mmap.mmap

    def write(self, points: np.ndarray) -> None:
        """``points`` written at the start of the object, row-major and little-endian."""
        into = np.ndarray(points.shape, dtype=points.dtype.newbyteorder("<"), buffer=self.mapping)
        np.copyto(into, points)
        del into


def _remove(regions: list[Region]) -> None:
    for region in regions:
        try:
            region.mapping.close()
        except BufferError:  # a caller still holds a view: the pages go when it does
            pass
        try:
            os.unlink(os.path.join(SHM_DIR, region.name))
        except FileNotFoundError:
            pass
    regions.clear()


class SharedRegions:
    """The shared-memory objects of one client, safe to use from several threads."""

    def __init__(self) -> None:
        if not shared_memory_available():
            raise OSError(f"shared_memory=True needs a writable {SHM_DIR} (POSIX shared memory on Linux)")
        self._lock = threading.Lock()
        self._free: list[Region] = []
        self._made: list[Region] = []
        self._finalizer = weakref.finalize(self, _remove, self._made)

    @contextmanager
    def holding(self, points: np.ndarray) -> Iterator[codec.SharedRows]:
        """``points`` written into an object of this client's, as the request names them,
        until the block ends (the call has its answer)."""
        region = self._take(points.nbytes)
        try:
            region.write(points)
            yield codec.SharedRows(region.name, 0, points.dtype, points.shape[0], points.shape[1])
        finally:
            self._give_back(region)

    def close(self) -> None:
        """Remove every object; later calls make new ones."""
        with self._lock:
            self._free.clear()
            _remove(self._made)

    def _take(self, nbytes: int) -> Region:
        with self._lock:
            fitting = [region for region in self._free if region.size >= nbytes]
            if fitting:
                region = min(fitting, key=lambda region: region.size)
                self._free.remove(region)
                return region
        return self._make(max(MIN_REGION_BYTES, nbytes))

    def _give_back(self, region: Region) -> None:
        with self._lock:
            if region not in self._made:  # closed meanwhile
                _remove([region])
                return
            self._free.append(region)
            if len(self._free) > KEPT_REGIONS:
                smallest = min(self._free, key=lambda kept: kept.size)
                self._free.remove(smallest)
                self._made.remove(smallest)
                _remove([smallest])

    def _make(self, size: int) -> Region:
        region = _new_region(size)
        with self._lock:
            self._made.append(region)
        return region


def _new_region(size: int) -> Region:
    """A new object of ``size`` bytes, mode 600, mapped writable."""
    name = f"centroidal-{os.getpid()}-{secrets.token_hex(8)}"
    path = os.path.join(SHM_DIR, name)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        # Every page now: a /dev/shm too small for them (a container's is 64 MiB by default)
        # raises here, instead of killing the process with SIGBUS when the rows are written.
        os.posix_fallocate(descriptor, 0, size)
        mapping = mmap.mmap(descriptor, size)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(descriptor)
    return Region(name, size, mapping)


class _Slabs:
    """The process's slabs for streamed batches: every stream of every client takes them
    from here, and the free ones (up to IDLE_SLAB_BYTES) wait for the next batches, as the
    pages of a slab written once cost far less to write again. All go when the process
    exits; a child process (fork) starts without its parent's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[Region] = []
        self._made: list[Region] = []
        weakref.finalize(self, _remove, self._made)
        os.register_at_fork(after_in_child=self._forget)

    def take(self, nbytes: int) -> Region:
        """A free slab of at least ``nbytes`` (SLAB_BYTES, or a larger object of its own)."""
        if nbytes <= SLAB_BYTES:
            with self._lock:
                if self._free:
                    return self._free.pop()
        region = _new_region(max(SLAB_BYTES, nbytes))
        with self._lock:
            self._made.append(region)
        return region

    def give_back(self, region: Region) -> None:
        """A slab none of whose batches is kept any more: kept for the next, or removed."""
        with self._lock:
            if region not in self._made:  # made before a fork, by the parent
                return
            if region.size == SLAB_BYTES and (len(self._free) + 1) * SLAB_BYTES <= IDLE_SLAB_BYTES:
                self._free.append(region)
                return
            self._made.remove(region)
        _remove([region])

    def _forget(self) -> None:
        """In a child after fork: the objects are the parent's, to use and remove."""
        self._lock = threading.Lock()
        self._free.clear()
        self._made.clear()


SLABS = _Slabs()
