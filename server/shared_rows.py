"""Predict's rows read in place from a POSIX shared-memory object that a client on this
host wrote (PredictRequest.points_shared), so that no bytes travel for them.

The object is mapped read-only for the length of one answer. Only an object that belongs
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
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote

import numpy as np

from centroidal import codec

from .exceptions import InvalidRequest, SharedMemoryMissing, SharedMemoryRefused

SHM_DIR = "/dev/shm"
_NAME = re.compile(r"/?(centroidal-[A-Za-z0-9._-]{1,200})")
# Map every page at once: one call instead of a fault per 4 KiB page as the kernel reads.
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


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


def check_allowed(shared: codec.SharedRows, peer: str, enabled: bool) -> str:
    """The object's path under /dev/shm, once the call may name one at all."""
    if not enabled:
        raise SharedMemoryRefused(
            "this server reads no shared memory (it runs with --no-shared-memory): send the "
            "rows in points.data", field="points_shared",
        )
    if not is_local_peer(peer):
        raise SharedMemoryRefused(
            f"points_shared names an object on the server's host, but the call came from {peer}; "
            "only a client on the same host (loopback or a Unix socket) may use it",
            field="points_shared.name",
        )
    found = _NAME.fullmatch(shared.name)
    if found is None:
        raise InvalidRequest(
            f"points_shared.name={shared.name!r} is not a name this server reads: 'centroidal-' "
            "then up to 200 letters, digits, '.', '_' or '-'", field="points_shared.name",
        )
    if shared.offset % shared.dtype.itemsize:
        raise InvalidRequest(
            f"points_shared.offset={shared.offset} is not a multiple of {shared.dtype.itemsize}, "
            f"the size of {shared.dtype.name}", field="points_shared.offset",
        )
    return os.path.join(SHM_DIR, found.group(1))


@contextmanager
def mapped_rows(shared: codec.SharedRows, path: str) -> Iterator[np.ndarray]:
    """The rows, shape (rows, cols) of ``shared.dtype``, read-only, mapped until the block ends."""
    name = shared.name
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SharedMemoryMissing(
            f"no shared-memory object {name!r} on the server's host", field="points_shared.name"
        ) from None
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EPERM, errno.ELOOP):
            raise
        raise SharedMemoryRefused(
            f"the server may not open shared-memory object {name!r}: {error.strerror}",
            field="points_shared.name",
        ) from None
    try:
        region = _map(descriptor, shared)
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


def _map(descriptor: int, shared: codec.SharedRows) -> mmap.mmap | None:
    """The pages that hold the rows, after checking whose object it is and its size."""
    name = shared.name
    found = os.fstat(descriptor)
    if not stat.S_ISREG(found.st_mode):
        raise InvalidRequest(f"shared-memory object {name!r} is not a regular object",
                             field="points_shared.name")
    if found.st_uid != os.geteuid():
        raise SharedMemoryRefused(
            f"shared-memory object {name!r} belongs to user {found.st_uid}, not to the server's "
            f"user {os.geteuid()}", field="points_shared.name",
        )
    if found.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SharedMemoryRefused(
            f"shared-memory object {name!r} may be written by other users (mode "
            f"{stat.S_IMODE(found.st_mode):o}); create it with mode 600", field="points_shared.name",
        )
    end = shared.offset + shared.nbytes
    if found.st_size < end:
        raise InvalidRequest(
            f"shared-memory object {name!r} has {found.st_size} bytes, but points_shared.offset="
            f"{shared.offset} plus rows={shared.rows} x cols={shared.cols} of {shared.dtype.name} "
            f"needs {end}", field="points.rows",
        )
    if shared.nbytes == 0:
        return None
    start = shared.offset - shared.offset % mmap.ALLOCATIONGRANULARITY
    return mmap.mmap(descriptor, end - start, flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ,
                     offset=start)
