"""Checks of names and arrays against the contract and the server's configured limits."""

from __future__ import annotations

import re

import numpy as np

from centroidal.engine import InvalidInputError, validation

from .exceptions import InvalidRequest, LimitExceeded

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Longest value echoed back in an error message.
_ECHO_CHARS = 80


def echo(value: object) -> str:
    """``repr(value)``, cut short so that a huge value does not flood messages and logs."""
    text = repr(value)
    return text if len(text) <= _ECHO_CHARS else f"{text[:_ECHO_CHARS]}... ({len(text)} characters)"


def check_model_name(name: str, field: str = "model") -> str:
    if not MODEL_NAME.fullmatch(name):
        raise InvalidRequest(
            f"{field}={echo(name)} is not a valid model name: use 1-128 characters from "
            "[A-Za-z0-9._-], starting with a letter or digit",
            field=field,
        )
    return name


def check_matrix(
    array: np.ndarray, field: str, *, max_rows: int, max_cols: int, allow_empty: bool = False
) -> np.ndarray:
    """A decoded Matrix within the server's limits: refuses empty (unless allowed) or too large."""
    check_shape(array.shape, field, max_rows=max_rows, max_cols=max_cols, allow_empty=allow_empty)
    return array


def check_shape(
    shape: tuple[int, ...], field: str, *, max_rows: int, max_cols: int, allow_empty: bool = False
) -> None:
    """As ``check_matrix``, on the shape alone (rows not read yet)."""
    rows, cols = shape
    if cols > max_cols:
        raise LimitExceeded(
            f"{field}.cols={cols} exceeds the server's limit of {max_cols} features",
            field=f"{field}.cols",
        )
    if rows == 0 and not allow_empty:
        raise InvalidRequest(f"{field} is empty: rows must be at least 1", field=f"{field}.rows")
    if rows > max_rows:
        raise LimitExceeded(
            f"{field}.rows={rows} exceeds the server's limit of {max_rows} points",
            field=f"{field}.rows",
        )


def check_finite(array: np.ndarray, field: str) -> None:
    """Refuse NaN and Inf (naming the first offending row) and float32 values that would overflow."""
    try:
        validation.check_finite(array, field)
    except InvalidInputError as exc:
        raise InvalidRequest(str(exc), field=f"{field}.data") from None


def check_weights(values: np.ndarray, field: str, length: int) -> np.ndarray:
    """Sample weights: finite, >= 0, exactly ``length`` of them."""
    if values.shape[0] != length:
        raise InvalidRequest(f"{field} has {values.shape[0]} values for {length} rows", field=f"{field}.data")
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if bad.size:
        raise InvalidRequest(
            f"{field} must be finite and >= 0, but value {bad[0]} of this chunk is {values[bad[0]]}",
            field=f"{field}.data",
        )
    return values
