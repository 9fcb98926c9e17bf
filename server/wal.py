"""Finds writes a damaged SQLite write-ahead log would silently drop.

When SQLite opens a database after a crash it replays its ``-wal`` file frame by
frame and stops at the first frame whose checksum fails, treating it as the end
of the log. That is right for a write torn by the crash, but if a frame in the
middle of the log was damaged, every transaction after it, committed and
acknowledged, is dropped without a word. ``scan`` reads the log the way SQLite
does (https://www.sqlite.org/fileformat.html#the_write_ahead_log) and reports such
a loss before SQLite ever opens the file, and what the end of the log will lose.

A frame belongs to the log's current generation when its salts match the
header's. A commit frame of the generation past its first broken frame means a
committed transaction would be dropped. The one innocent way to get there is a
power loss in the middle of the last transaction, whose frames may reach the
disk in any order; that transaction was never acknowledged. The two cannot be
told apart from the file, so both are reported, and the message says so.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

_MAGIC = {0x377F0682: "<", 0x377F0683: ">"}  # checksum words little- or big-endian
_HEADER = 32
_FRAME_HEADER = 24
_MASK = np.uint64(0xFFFFFFFF)


def log_path(store_path: Path) -> Path:
    """The write-ahead log SQLite keeps beside ``store_path``."""
    return store_path.with_name(store_path.name + "-wal")


@dataclass(frozen=True)
class WalScan:
    """What SQLite will make of a write-ahead log when it opens it.

    salts : the header's, which name the log's current generation
    replayed : frames SQLite replays, up to the last commit frame whose checksums hold
    discarded : frames of the current generation after those, which it drops: an
        unfinished transaction, or one whose frames fail their checksum
    discarded_commits : commit frames among the discarded (a damaged one included)
    partial_bytes : bytes of a frame cut short at the end of the file
    lost : the committed frames dropped past a broken one, in words, or None
    """

    salts: tuple[int, int]
    replayed: int
    discarded: int
    discarded_commits: int
    partial_bytes: int
    lost: str | None

    @property
    def tail(self) -> str | None:
        """What SQLite will drop from the end of the log, in words; None when nothing."""
        if not (self.discarded or self.partial_bytes):
            return None
        parts = []
        if self.discarded:
            commits = (f", {self.discarded_commits} of them marked as a commit"
                       if self.discarded_commits else ", none of them a commit")
            parts.append(f"{self.discarded} frames after the last whole commit{commits}")
        if self.partial_bytes:
            parts.append(f"{self.partial_bytes} bytes of a frame cut short")
        return " and ".join(parts)


def scan(wal_path: Path) -> WalScan | None:
    """Read ``wal_path`` the way SQLite will; None when there is no log or no frame in it."""
    try:
        data = wal_path.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) <= _HEADER:  # no frames: nothing to lose
        return None
    magic, _, page_size, _, salt1, salt2, check1, check2 = struct.unpack(">8I", data[:_HEADER])
    frame_size = _FRAME_HEADER + page_size
    full_frames = (len(data) - _HEADER) // frame_size if page_size else 0
    order = _MAGIC.get(magic)
    valid_size = page_size >= 512 and page_size & (page_size - 1) == 0
    if order is None or not valid_size or _checksum(data[:24], order, (0, 0)) != (check1, check2):
        broken = f"its header is broken, so SQLite would ignore the {len(data) - _HEADER} bytes of frames in it"
        return WalScan((salt1, salt2), 0, 0, 0, 0, broken)
    seed = (check1, check2)
    broken_at: int | None = None
    replayed = current = commits_after = discarded_commits = 0
    for index in range(full_frames):
        start = _HEADER + index * frame_size
        header = data[start : start + _FRAME_HEADER]
        _, commit_size, frame_salt1, frame_salt2, stored1, stored2 = struct.unpack(">6I", header)
        if (frame_salt1, frame_salt2) != (salt1, salt2):
            if broken_at is None:
                break  # the rest is an older generation, which SQLite rightly ignores
            continue
        current += 1
        if broken_at is None:
            body = header[:8] + data[start + _FRAME_HEADER : start + frame_size]
            if _checksum(body, order, seed) == (stored1, stored2):
                seed = (stored1, stored2)
                if commit_size:
                    replayed = current
                continue
            broken_at = index
            discarded_commits += bool(commit_size)
        elif commit_size:
            commits_after += 1
            discarded_commits += 1
    partial = (len(data) - _HEADER) % frame_size if current == full_frames else 0
    lost = None
    if broken_at is not None and commits_after:
        lost = (
            f"frame {broken_at + 1} of {full_frames} fails its checksum, and {commits_after} "
            "commit frames follow it (if the machine lost power during the last write, that "
            "write was never acknowledged and only it is lost)"
        )
    return WalScan((salt1, salt2), replayed, current - replayed, discarded_commits, partial, lost)


def header_salts(wal_path: Path) -> tuple[int, int] | None:
    """The salts in the log's header (its generation), read without reading the frames."""
    try:
        with open(wal_path, "rb") as handle:
            header = handle.read(_HEADER)
    except FileNotFoundError:
        return None
    if len(header) < _HEADER:
        return None
    salt1, salt2 = struct.unpack(">2I", header[16:24])
    return salt1, salt2


def _checksum(body: bytes, order: str, seed: tuple[int, int]) -> tuple[int, int]:
    """SQLite's WAL checksum of ``body`` (a multiple of 8 bytes), continued from ``seed``.

    Each step is s0 += x[2i] + s1; s1 += x[2i+1] + s0 (mod 2**32), a linear map
    v -> M v + (a, a + b) with M = [[1, 1], [1, 2]]. So after n steps
    v = M**n seed + sum_i M**(n-1-i) c_i, which numpy sums at once.
    """
    words = np.frombuffer(body, dtype=np.dtype(f"{order}u4")).astype(np.uint64)
    a, b = words[0::2], words[1::2]
    n = a.shape[0]
    powers = _powers(n)  # powers[k] = M**k mod 2**32, as (m00, m01, m10, m11)
    c0, c1 = a, (a + b) & _MASK
    weights = powers[::-1]  # M**(n-1-i) for i = 0..n-1
    with np.errstate(over="ignore"):
        s0 = (weights[:, 0] * c0 + weights[:, 1] * c1) & _MASK
        s1 = (weights[:, 2] * c0 + weights[:, 3] * c1) & _MASK
        first, second = int(s0.sum(dtype=np.uint64) & _MASK), int(s1.sum(dtype=np.uint64) & _MASK)
    whole = _power(n)
    x0, x1 = seed
    first = (first + whole[0] * x0 + whole[1] * x1) & 0xFFFFFFFF
    second = (second + whole[2] * x0 + whole[3] * x1) & 0xFFFFFFFF
    return first, second


@lru_cache(maxsize=8)
def _powers(n: int) -> np.ndarray:
    """M**k mod 2**32 for k = 0..n-1, one row each."""
    rows = np.empty((n, 4), dtype=np.uint64)
    m = (1, 0, 0, 1)
    for k in range(n):
        rows[k] = m
        m = _times(m)
    return rows


def _power(n: int) -> tuple[int, int, int, int]:
    """M**n mod 2**32: one step past the last of ``_powers(n)``."""
    m00, m01, m10, m11 = (int(value) for value in _powers(n)[-1])
    return _times((m00, m01, m10, m11))


def _times(m: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """M @ m, mod 2**32."""
    m00, m01, m10, m11 = m
    return (
        (m00 + m10) & 0xFFFFFFFF,
        (m01 + m11) & 0xFFFFFFFF,
        (m00 + 2 * m10) & 0xFFFFFFFF,
        (m01 + 2 * m11) & 0xFFFFFFFF,
    )
