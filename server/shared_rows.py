"""Rows read in place from a POSIX shared-memory object that a client on this host wrote
(PredictRequest.points_shared, MiniBatch.points_shared), so that no bytes travel for them.

The object is mapped read-only for the length of one answer, or of one batch's step. Only an object that belongs
to the server's own user, and that no other user may write, is read: a process that could
shrink it under the server (the one thing that would hurt a reader of a mapping) could as
well signal the server, so nothing is trusted that was not already.
"""

from __future__ import annotations

import errno
import ipaddress
import mmap
import os
import re
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import unquote

import numpy as np

from centroidal import codec

from .exceptions import InvalidRequest, SharedMemoryMissing, SharedMemoryRefused

SHM_DIR = "/dev/shm"
_NAME = re.compile(r"/?(centroidal-[A-Za-z0-9._-]{1,200})")
# Map every page at once: one call instead of a fault per 4 KiB page as the kernel reads.
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


@dataclass(frozen=True)
class SharedPoints:
    """A stream's batch whose rows wait in shared memory: where, the object's path and
    inode as the event loop found them, and the stream's mappings to read them through."""

    shared: codec.SharedRows
    path: str
    inode: int
    maps: StreamMaps


def is_local_peer(peer: str) -> bool:
    """Whether grpc's ``context.peer()`` is on this host: loopback, or a Unix socket."""
    kind, _, where = unquote(peer).partition(":")
    if kind in ("unix", "unix-abstract"):
        return True
    if kind not in ("ipv4", "ipv6"):
        return False
    host = where.rsplit(":", 1)[0].strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def check_allowed(shared: codec.SharedRows, peer: str, enabled: bool, points: str = "points") -> str:
    """The object's path under /dev/shm, once the call may name one at all; ``points`` is the
    rows' field (``batch.points`` in a stream), in the errors' fields."""
    if not enabled:
        raise SharedMemoryRefused(
            f"this server reads no shared memory (it runs with --no-shared-memory): send the "
            f"rows in {points}.data", field=f"{points}_shared",
        )
    if not is_local_peer(peer):
        raise SharedMemoryRefused(
            f"{points}_shared names an object on the server's host, but the call came from {peer}; "
            "only a client on the same host (loopback or a Unix socket) may use it",
            field=f"{points}_shared.name",
        )
    found = _NAME.fullmatch(shared.name)
    if found is None:
        raise InvalidRequest(
            f"{points}_shared.name={shared.name!r} is not a name this server reads: 'centroidal-' "
            "then up to 200 letters, digits, '.', '_' or '-'", field=f"{points}_shared.name",
        )
    if shared.offset % shared.dtype.itemsize:
        raise InvalidRequest(
            f"{points}_shared.offset={shared.offset} is not a multiple of {shared.dtype.itemsize}, "
            f"the size of {shared.dtype.name}", field=f"{points}_shared.offset",
        )
    return os.path.join(SHM_DIR, found.group(1))


def check_object(shared: codec.SharedRows, path: str, points: str = "points") -> int:
    """What ``mapped_rows`` checks of the object, from its path without opening it: cheap
    enough for a stream's event loop, which refuses a batch the server could not read before
    any later one is queued (the object is checked again when it is mapped). Returns its
    inode."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        raise _missing(shared, points) from None
    _check_found(found, shared, points)
    return found.st_ino


def _open(shared: codec.SharedRows, path: str, points: str) -> int:
    """A read-only descriptor of the object, never through a symbolic link."""
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise _missing(shared, points) from None
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EPERM, errno.ELOOP):
            raise
        raise SharedMemoryRefused(
            f"the server may not open shared-memory object {shared.name!r}: {error.strerror}",
            field=f"{points}_shared.name",
        ) from None


class StreamMaps:
    """The objects a stream's batches name, each mapped whole (read-only) the first time and
    kept for its later batches, which a producer writes into the same few slabs: a batch
    then costs no system call to read. At most MOST are kept, the least recently used
    unmapped first, and all once the stream ends (``close``). The event loop checks each
    batch's object by its path first (``check_object``); a mapping is used for the inode it
    was made of, and for rows within its size."""

    MOST = 16

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._maps: OrderedDict[str, tuple[int, mmap.mmap]] = OrderedDict()  # path -> (inode, mapping)

    @contextmanager
    def rows(self, shared: codec.SharedRows, path: str, inode: int, points: str) -> Iterator[np.ndarray]:
        """The rows, as ``mapped_rows`` gives them, from the object's mapping."""
        if shared.nbytes == 0:
            yield np.empty((shared.rows, shared.cols), dtype=shared.dtype)
            return
        rows = np.frombuffer(self._mapping(shared, path, inode, points), dtype=shared.dtype.newbyteorder("<"),
                             count=shared.rows * shared.cols, offset=shared.offset).reshape(shared.rows, shared.cols)
        try:
            yield rows if rows.dtype.isnative else rows.astype(shared.dtype)
        finally:
            del rows

    def _mapping(self, shared: codec.SharedRows, path: str, inode: int, points: str) -> mmap.mmap:
        end = shared.offset + shared.nbytes
        with self._lock:
            kept = self._maps.get(path)
            if kept is not None and kept[0] == inode and len(kept[1]) >= end:
                self._maps.move_to_end(path)
                return kept[1]
        descriptor = _open(shared, path, points)
        try:
            found = os.fstat(descriptor)
            _check_found(found, shared, points)  # so the object holds the rows: it is not empty
            mapping = mmap.mmap(descriptor, found.st_size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        finally:
            os.close(descriptor)
        with self._lock:
            old = self._maps.pop(path, None)
            self._maps[path] = (found.st_ino, mapping)
            dropped = [old[1]] if old is not None else []
            while len(self._maps) > self.MOST:
                dropped.append(self._maps.popitem(last=False)[1][1])
        _unmap(dropped)
        return mapping

    def close(self) -> None:
        """Unmap every object (one a batch still reads goes once it is done)."""
        with self._lock:
            dropped = [mapping for _, mapping in self._maps.values()]
            self._maps.clear()
        _unmap(dropped)


def _unmap(mappings: list[mmap.mmap]) -> None:
    for mapping in mappings:
        try:
            mapping.close()
        except BufferError:  # a batch still reads it: unmapped when its view goes
            pass


@contextmanager
def mapped_rows(shared: codec.SharedRows, path: str, points: str = "points") -> Iterator[np.ndarray]:
    """The rows, shape (rows, cols) of ``shared.dtype``, read-only, mapped until the block ends."""
    descriptor = _open(shared, path, points)
    try:
        region = _map(descriptor, shared, points)
    finally:
        os.close(descriptor)
    if region is None:
        yield np.empty((shared.rows, shared.cols), dtype=shared.dtype)
        return
    start = shared.offset % mmap.ALLOCATIONGRANULARITY
    rows = np.frombuffer(region, dtype=shared.dtype.newbyteorder("<"), count=shared.rows * shared.cols,
                         offset=start).reshape(shared.rows, shared.cols)
    try:
        yield rows if rows.dtype.isnative else rows.astype(shared.dtype)
    finally:
        del rows
        try:
            region.close()
        except BufferError:  # an answer still holds a view (a traceback): unmapped when it goes
            pass


def _missing(shared: codec.SharedRows, points: str) -> SharedMemoryMissing:
    return SharedMemoryMissing(f"no shared-memory object {shared.name!r} on the server's host",
                               field=f"{points}_shared.name")


def _check_found(found: os.stat_result, shared: codec.SharedRows, points: str) -> None:
    """Refuse an object that is not a regular one of the server's user, that other users may
    write, or that is too small for the rows."""
    name = shared.name
    if not stat.S_ISREG(found.st_mode):
        raise InvalidRequest(f"shared-memory object {name!r} is not a regular object",
                             field=f"{points}_shared.name")
    if found.st_uid != os.geteuid():
        raise SharedMemoryRefused(
            f"shared-memory object {name!r} belongs to user {found.st_uid}, not to the server's "
            f"user {os.geteuid()}", field=f"{points}_shared.name",
        )
    if found.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SharedMemoryRefused(
            f"shared-memory object {name!r} may be written by other users (mode "
            f"{stat.S_IMODE(found.st_mode):o}); create it with mode 600", field=f"{points}_shared.name",
        )
    end = shared.offset + shared.nbytes
    if found.st_size < end:
        raise InvalidRequest(
            f"shared-memory object {name!r} has {found.st_size} bytes, but {points}_shared.offset="
            f"{shared.offset} plus rows={shared.rows} x cols={shared.cols} of {shared.dtype.name} "
            f"needs {end}", field=f"{points}.rows",
        )


def _map(descriptor: int, shared: codec.SharedRows, points: str) -> mmap.mmap | None:
    """The pages that hold the rows, after checking whose object it is and its size."""
    _check_found(os.fstat(descriptor), shared, points)
    end = shared.offset + shared.nbytes
    if shared.nbytes == 0:
        return None
    start = shared.offset - shared.offset % mmap.ALLOCATIONGRANULARITY
    return mmap.mmap(descriptor, end - start, flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ,
                     offset=start)
