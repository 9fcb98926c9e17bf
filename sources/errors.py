"""What reading a dataset refuses with: plain exceptions naming the request field at fault.

They cross process boundaries (a Dask worker raises, the server reports), so each pickles
with its field.
"""

from __future__ import annotations


class DatasetError(Exception):
    """A dataset that cannot be used; ``field`` names the part of the request at fault."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return type(self), (self.message, self.field)


class DatasetRefused(DatasetError):
    """Outside every root the operator allows, or the feature is off: permission denied."""


class DatasetInvalid(DatasetError):
    """A malformed URI, format or column choice, or files that do not hold what was asked."""


class DatasetMissing(DatasetError):
    """Nothing matches the URI."""


class DatasetUnreadable(DatasetError):
    """The files exist but cannot be read here: a filesystem whose fsspec extra is not
    installed, or an I/O error."""


class DatasetExists(DatasetError):
    """The output already holds an earlier run's files."""
