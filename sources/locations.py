"""Where a dataset's files are, and the roots the operator allows them under.

A URI is a local path (``/shared/points/*.parquet`` or ``file:///shared/points/*.parquet``)
or any filesystem fsspec knows (``s3://bucket/points/*.parquet``, given its extra). It names
one file, a directory (its files of the format), or a glob. It must fall under a root:

- locally, lexically before anything is looked at (so nothing outside can be probed), and
  then each file's real path, symlinks resolved, once when it is found and again when it is
  opened (on whichever machine reads it), from the open descriptor itself;
- on other filesystems, by its normalised path, with no ``..`` or ``.`` segments and no
  chained URLs (``a::b``).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import IO, Any

from .errors import DatasetInvalid, DatasetMissing, DatasetRefused, DatasetUnreadable

LOCAL = "file"
GLOB_CHARS = frozenset("*?[")


def uri_of(protocol: str, path: str) -> str:
    """A location as users write it: a local path bare, another filesystem's as a URL."""
    return path if protocol == LOCAL else f"{protocol}://{path}"


@dataclass(frozen=True)
class Root:
    """One allowed root: a protocol and an absolute path (local ones with symlinks resolved)."""

    protocol: str
    path: str

    def holds(self, protocol: str, path: str) -> bool:
        if protocol != self.protocol:
            return False
        if self.path in ("/", ""):  # a whole filesystem
            return self.protocol != LOCAL or path.startswith("/")
        return path == self.path or path.startswith(self.path.rstrip("/") + "/")

    def __str__(self) -> str:
        return uri_of(self.protocol, self.path)


class Roots:
    """The roots an operator allows (``--dataset-root``); none means datasets are off."""

    def __init__(self, entries: tuple[str, ...] | list[str], flag: str = "--dataset-root", *,
                 anywhere: bool = False) -> None:
        roots = []
        self.flag = flag
        self.anywhere = anywhere
        for entry in entries:
            protocol, path = split_uri(entry, flag)
            if protocol == LOCAL:
                if not os.path.isdir(path):
                    raise ValueError(f"{flag} {entry!r} is not a directory")
                path = os.path.realpath(path)
            roots.append(Root(protocol, path))
        self.roots = tuple(roots)

    @classmethod
    def unrestricted(cls) -> Roots:
        """Every path and filesystem: for a producer reading its own files, not a server."""
        return cls((), "", anywhere=True)

    def __bool__(self) -> bool:
        return bool(self.roots) or self.anywhere

    def root_of(self, protocol: str, path: str, field: str) -> Root:
        """The root that holds ``path``, or DatasetRefused naming ``field``."""
        if self.anywhere:
            return Root(protocol, "/" if protocol == LOCAL else "")
        if not self.roots:
            raise DatasetRefused(f"this server reads or writes no datasets there: its operator allows no "
                                 f"{self.flag}", field)
        for root in self.roots:
            if root.holds(protocol, path):
                return root
        shown = uri_of(protocol, path)
        raise DatasetRefused(f"{field} {shown!r} is outside every root this server allows", field)


def split_uri(uri: str, field: str) -> tuple[str, str]:
    """(protocol, absolute path) of a URI; local paths are normalised, with no ``..``."""
    if not uri:
        raise DatasetInvalid(f"{field} is empty", field)
    if "\x00" in uri:
        raise DatasetInvalid(f"{field} holds a NUL character", field)
    if "::" in uri:
        raise DatasetRefused(f"{field} {uri!r} chains filesystems (::), which is not allowed", field)
    protocol, sep, rest = uri.partition("://")
    if not sep:
        protocol, rest = LOCAL, uri
    protocol = protocol.lower()
    if protocol in (LOCAL, "local"):
        if sep and not rest.startswith("/"):
            # file://host/x names a host, or (to fsspec) a path relative to the working directory.
            raise DatasetInvalid(f"{field} {uri!r} must be file:///absolute/path (three slashes)", field)
        if not rest.startswith("/"):
            raise DatasetInvalid(f"{field} {uri!r} must be an absolute path", field)
        _no_dot_segments(rest, uri, field)
        return LOCAL, os.path.normpath(rest)
    if not protocol.replace("+", "").replace("-", "").isalnum():
        raise DatasetInvalid(f"{field} {uri!r} has no recognisable protocol", field)
    _no_dot_segments(rest, uri, field)
    return protocol, rest.strip("/")  # fsspec's paths on other filesystems are relative to it


def _no_dot_segments(path: str, uri: str, field: str) -> None:
    if any(part in ("..", ".") for part in path.split("/")):
        raise DatasetRefused(f"{field} {uri!r} has a '..' or '.' segment, which is not allowed", field)


@dataclass(frozen=True)
class DatasetFile:
    """One file of a dataset, with the root it must stay under when it is opened."""

    protocol: str
    path: str
    root: Root

    @property
    def uri(self) -> str:
        return uri_of(self.protocol, self.path)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def open(self, field: str) -> IO[bytes]:
        """The file opened for reading; a local file whose real path has left its root (a
        symlink swapped in since it was found) is refused."""
        if self.protocol != LOCAL:
            fs = filesystem(self.protocol, field)
            try:
                return fs.open(self.path, "rb")  # type: ignore[no-any-return]
            except OSError as exc:
                raise DatasetUnreadable(f"{field}: cannot open {self.uri}: {exc}", field) from None
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise DatasetUnreadable(f"{field}: cannot open {self.path}: {exc.strerror}", field) from None
        try:
            real = real_path_of(fd, self.path)
            if not self.root.holds(LOCAL, real):
                raise DatasetRefused(f"{field}: {self.path} resolves to {real}, outside the root {self.root}",
                                     field)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise


def real_path_of(fd: int, path: str) -> str:
    """The path the kernel opened ``fd`` at (Linux), else the path's resolution now."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)


def check_allowed(uri: str, roots: Roots, field: str) -> tuple[str, str, Root]:
    """(protocol, path, root) of a URI that falls under a root, judged by its text alone."""
    protocol, path = split_uri(uri, field)
    root = roots.root_of(protocol, _fixed_prefix(path), field)
    if not root.holds(protocol, path):
        raise DatasetRefused(f"{field} {uri!r} is outside every root this server allows", field)
    return protocol, path, root


def find_files(uri: str, roots: Roots, suffixes: tuple[str, ...], field: str) -> list[DatasetFile]:
    """The files ``uri`` names, sorted by path: a file, a directory's files ending in one of
    ``suffixes``, or a glob's matches. Refused unless every one is under a root."""
    protocol, path, root = check_allowed(uri, roots, field)
    if protocol == LOCAL:
        found = _local_matches(path, suffixes)
        files = []
        for match in found:
            real = os.path.realpath(match)
            if not root.holds(LOCAL, real):
                raise DatasetRefused(f"{field}: {match} resolves to {real}, outside the root {root}", field)
            files.append(DatasetFile(LOCAL, match, root))
    else:
        files = [DatasetFile(protocol, match, root) for match in _remote_matches(protocol, path, suffixes, field)]
        for file in files:
            if not root.holds(protocol, file.path):
                raise DatasetRefused(f"{field}: {file.uri} is outside the root {root}", field)
    if not files:
        raise DatasetMissing(f"{field} {uri!r} matches no {' or '.join(suffixes)} file", field)
    return files


def _fixed_prefix(path: str) -> str:
    """The part of a path before its first glob segment."""
    parts = path.split("/")
    for index, part in enumerate(parts):
        if GLOB_CHARS & set(part):
            return "/".join(parts[:index]) or ("/" if path.startswith("/") else "")
    return path


def _local_matches(path: str, suffixes: tuple[str, ...]) -> list[str]:
    if GLOB_CHARS & set(path):
        matches = glob.glob(path)
    elif os.path.isdir(path):
        matches = [os.path.join(path, name) for name in os.listdir(path) if name.endswith(suffixes)]
    else:
        matches = [path] if os.path.lexists(path) else []
    return sorted(match for match in matches if os.path.isfile(match))


def _remote_matches(protocol: str, path: str, suffixes: tuple[str, ...], field: str) -> list[str]:
    fs = filesystem(protocol, field)
    try:
        if GLOB_CHARS & set(path):
            matches = fs.glob(path)
        elif fs.isdir(path):
            matches = [entry for entry in fs.ls(path, detail=False) if entry.endswith(suffixes)]
        else:
            matches = [path] if fs.exists(path) else []
        return sorted(match.strip("/") for match in matches if fs.isfile(match))
    except OSError as exc:
        raise DatasetUnreadable(f"{field}: cannot list {protocol}://{path}: {exc}", field) from None


def filesystem(protocol: str, field: str) -> Any:
    try:
        import fsspec
    except ImportError:
        raise DatasetUnreadable(
            f"{field}: reading {protocol}:// needs fsspec: pip install 'centroidal[datasets]'", field
        ) from None
    try:
        return fsspec.filesystem(protocol)
    except (ImportError, ValueError) as exc:
        raise DatasetUnreadable(
            f"{field}: this server cannot read {protocol}:// ({exc}); install fsspec's extra for it", field
        ) from None
