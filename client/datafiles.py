"""The command line's data files: rows from .npy or comma-separated text, and arrays back.

Every place in a file is told the way its reader counts: a CSV by its lines from 1, as an
editor shows them, and an .npy file by its rows from 0, as numpy indexes them. A server
refusal that names a row of the data gets the CSV line it came from added.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CentroidalError

# A CSV's first line: "auto" skips it when no field of it is a number (a header), and
# refuses a line of numbers and words, which is more likely data with a typo.
HEADER_CHOICES = ("auto", "yes", "no")


@dataclass(frozen=True)
class DataFile:
    """The rows of a data file, and for a CSV the line each row came from."""

    path: Path
    points: np.ndarray
    lines: list[int] = field(default_factory=list)  # CSV only: row i came from lines[i]

    def where(self, row: int) -> str:
        """Row ``row`` (from 0) as the file's reader would find it."""
        if self.lines and 0 <= row < len(self.lines):
            return f"line {self.lines[row]} of {self.path}"
        return f"row {row} (from 0) of {self.path}"

    @contextlib.contextmanager
    def explained(self) -> Iterator[None]:
        """Around a call that sends these rows: a refusal that names a row of them says
        where that row is in the file."""
        try:
            yield
        except CentroidalError as error:
            found = re.search(r"\brow (\d+)\b", error.message)
            if found and self.lines:
                error.message += f" (row {found.group(1)} is {self.where(int(found.group(1)))})"
            raise


def load_points(path: Path, dtype: str | None, header: str = "auto") -> DataFile:
    """Rows of a .npy file or a comma-separated file. A value that is not a number is
    reported with the file's line and column; an empty file is refused."""
    lines: list[int] = []
    if path.suffix.lower() == ".npy":
        points = np.load(path, allow_pickle=False)
    else:
        points, lines = _load_csv(path, header)
    if points.ndim == 1:
        points = points.reshape(-1, 1)
    if points.size == 0:
        raise ValueError(f"{path} holds no rows of data")
    return DataFile(path, points.astype(dtype) if dtype else points, lines)


def _load_csv(path: Path, header: str) -> tuple[np.ndarray, list[int]]:
    with open(path, encoding="utf-8") as handle:
        numbered = [(number, text.strip()) for number, text in enumerate(handle, start=1)]
    rows = [(number, text) for number, text in numbered if text and not text.startswith("#")]
    if rows and header != "no" and (header == "yes" or _is_header(path, *rows[0], header)):
        rows = rows[1:]
    if not rows:
        raise ValueError(f"{path} holds no rows of data")
    lines = [number for number, _ in rows]
    try:
        points = np.loadtxt([text for _, text in rows], delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as error:
        message = str(error)
        bad_value = re.search(r"could not convert string (.*) to float64 at row (\d+), column (\d+)", message)
        if bad_value:  # numpy counts these rows from 0, and columns from 1
            line = lines[int(bad_value.group(2))]
            raise ValueError(f"{path}, line {line}, column {bad_value.group(3)}: "
                             f"{bad_value.group(1)} is not a number") from None
        columns = re.search(r"number of columns changed from (\d+) to (\d+) at row (\d+)", message)
        if columns:  # and these from 1
            line = lines[int(columns.group(3)) - 1]
            raise ValueError(f"{path}, line {line}: {columns.group(2)} values, but the rows before "
                             f"have {columns.group(1)}") from None
        raise ValueError(f"{path}: {message}") from None
    return points, lines


def _is_header(path: Path, number: int, text: str, header: str) -> bool:
    """Whether the first line is a header: no field of it is a number. A line of some
    numbers and some words is refused rather than dropped unseen."""
    fields = [value.strip() for value in text.split(",")]
    numbers = [_is_number(value) for value in fields]
    if not any(numbers):
        return True
    if all(numbers):
        return False
    word = next(value for value, is_number in zip(fields, numbers) if not is_number)
    raise ValueError(
        f"{path}, line {number}: {word!r} is not a number, but the line's other values are; "
        "if the line is a header, pass --header (or --no-header to read it as data)"
    )


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def save_array(path: Path, array: np.ndarray) -> None:
    if path.suffix.lower() == ".npy":
        np.save(path, array)
    else:
        fmt = "%d" if array.dtype.kind == "i" else "%.9g"
        np.savetxt(path, array, delimiter=",", fmt=fmt)
