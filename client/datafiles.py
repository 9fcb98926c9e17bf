"""The command line's data files: rows from .npy or comma-separated text, and arrays back."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np


def load_points(path: Path, dtype: str | None) -> np.ndarray:
    """Rows of a .npy file or a comma-separated file (a header line is skipped). A value that
    is not a number is reported with the file's line and column."""
    if path.suffix.lower() == ".npy":
        points = np.load(path, allow_pickle=False)
    else:
        points = _load_csv(path)
    if points.ndim == 1:
        points = points.reshape(-1, 1)
    result: np.ndarray = points.astype(dtype) if dtype else points
    return result


def _load_csv(path: Path) -> np.ndarray:
    skip = 0
    while True:
        try:
            return np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64, skiprows=skip)
        except ValueError as error:
            text = str(error)
            bad_value = re.search(r"could not convert string (.*) to float64 at row (\d+), column (\d+)", text)
            if bad_value and int(bad_value.group(2)) == 0 and skip == 0:
                skip = 1  # a header line
                continue
            if bad_value:
                line = int(bad_value.group(2)) + skip + 1
                raise ValueError(f"{path}, line {line}, column {bad_value.group(3)}: "
                                 f"{bad_value.group(1)} is not a number") from None
            columns = re.search(r"number of columns changed from (\d+) to (\d+) at row (\d+)", text)
            if columns:
                raise ValueError(f"{path}, line {int(columns.group(3)) + skip}: {columns.group(2)} "
                                 f"values, but the rows before have {columns.group(1)}") from None
            raise ValueError(f"{path}: {text}") from None


def save_array(path: Path, array: np.ndarray) -> None:
    if path.suffix.lower() == ".npy":
        np.save(path, array)
    else:
        fmt = "%d" if array.dtype.kind == "i" else "%.9g"
        np.savetxt(path, array, delimiter=",", fmt=fmt)
