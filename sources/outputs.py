"""Where a dataset's labels are written: a directory under a root the operator allows for
output, filled with one Parquet file per partition and then a ``_SUCCESS`` summary.

A local file is written under a temporary name and renamed into place, so a reader never
sees half a file; the directory's real path is checked when it is prepared and again from
each file opened in it.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from typing import Any

from .errors import DatasetExists, DatasetInvalid, DatasetRefused, DatasetUnreadable
from .locations import GLOB_CHARS, LOCAL, Root, Roots, check_allowed, filesystem, real_path_of, uri_of

SUCCESS = "_SUCCESS"


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def _ours(name: str) -> bool:
    return name == SUCCESS or (name.startswith("part-") and name.endswith(".parquet"))


@dataclass(frozen=True)
class OutputDir:
    """A directory under an output root; its files are written by whoever labels a partition."""

    protocol: str
    path: str
    root: Root
    field: str

    @property
    def uri(self) -> str:
        return uri_of(self.protocol, self.path)

    def prepare(self, overwrite: bool) -> None:
        """Create the directory; refuse one holding an earlier run's files unless ``overwrite``,
        which removes them."""
        try:
            if self.protocol == LOCAL:
                os.makedirs(self.path, exist_ok=True)
                real = os.path.realpath(self.path)
                if not self.root.holds(LOCAL, real):
                    raise DatasetRefused(f"{self.field}: {self.path} resolves to {real}, outside the root {self.root}",
                                         self.field)
                names = os.listdir(self.path)
            else:
                fs = filesystem(self.protocol, self.field)
                fs.makedirs(self.path, exist_ok=True)
                names = [entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(self.path, detail=False)]
        except OSError as exc:
            raise DatasetUnreadable(f"{self.field}: cannot create {self.uri}: {exc}", self.field) from None
        earlier = sorted(name for name in names if _ours(name))
        if earlier and not overwrite:
            raise DatasetExists(f"{self.field} {self.uri!r} already holds {earlier[0]} (and {len(earlier) - 1} more "
                                "of an earlier run): set overwrite to replace them", self.field)
        for name in earlier:
            self._remove(name)

    def _remove(self, name: str) -> None:
        if self.protocol == LOCAL:
            os.unlink(os.path.join(self.path, name))
        else:
            filesystem(self.protocol, self.field).rm(f"{self.path}/{name}")

    def write_table(self, name: str, table: Any) -> None:
        """Write a pyarrow table as Parquet file ``name``, whole or not at all."""
        import pyarrow.parquet as pq

        if self.protocol != LOCAL:
            fs = filesystem(self.protocol, self.field)
            with fs.open(f"{self.path}/{name}", "wb") as handle:
                pq.write_table(table, handle)
            return
        self._write_local(name, lambda handle: pq.write_table(table, handle))

    def write_summary(self, summary: dict[str, Any]) -> None:
        """``_SUCCESS``: written last, so its presence says every part is there."""
        text = json.dumps(summary, indent=2, sort_keys=True).encode()
        if self.protocol != LOCAL:
            with filesystem(self.protocol, self.field).open(f"{self.path}/{SUCCESS}", "wb") as handle:
                handle.write(text)
            return
        self._write_local(SUCCESS, lambda handle: handle.write(text))

    def _write_local(self, name: str, write: Any) -> None:
        final = os.path.join(self.path, name)
        temporary = os.path.join(self.path, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(temporary, flags, 0o644)
        except OSError as exc:
            raise DatasetUnreadable(f"{self.field}: cannot write in {self.path}: {exc.strerror}", self.field) from None
        try:
            real = os.path.dirname(real_path_of(fd, temporary))
            if not self.root.holds(LOCAL, real):
                raise DatasetRefused(f"{self.field}: {self.path} now resolves to {real}, outside the root {self.root}",
                                     self.field)
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        except BaseException:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise


def output_dir(uri: str, roots: Roots, field: str) -> OutputDir:
    """The output directory ``uri`` names, refused unless it is under one of ``roots``."""
    protocol, path, root = check_allowed(uri, roots, field)
    if GLOB_CHARS & set(path):
        raise DatasetInvalid(f"{field} {uri!r} is a directory to write into, not a pattern", field)
    return OutputDir(protocol, path, root, field)
