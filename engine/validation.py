"""Checks of the engine's arguments: each raises InvalidInputError naming the argument.

Public functions call these before any kernel runs; kernels trust their input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from . import chunks
from ._common import n_chunks_for
from ._validation import _scan_values, count_unfit

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

Init = Union[str, np.ndarray]

# Kernels read an empty weight array as "every weight is 1", saving an O(n) buffer.
UNIT_WEIGHTS = np.empty(0, dtype=np.float64)


class InvalidInputError(ValueError):
    """A caller's argument is unusable; ``field`` names the argument."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # raised on a Dask worker, reported here
        return type(self), (self.field, str(self))


def read_only(X: np.ndarray) -> np.ndarray:
    """X itself when it is read-only, else a read-only view of it (no copy).

    Kernels read the data through such views only: numba compiles a signature per
    writability, so one kind halves the compile work (and the server's cold start).
    """
    if not X.flags.writeable:
        return X
    view = X.view()
    view.flags.writeable = False
    return view


def as_float_matrix(X: Any, field: str) -> np.ndarray:
    """X as a C-contiguous 2-D float32 or float64 array, copying only when needed."""
    try:
        array = np.asarray(X)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(field, f"{field} is not a numeric array: {exc}") from exc
    if array.ndim != 2:
        raise InvalidInputError(
            field, f"{field} must be 2-D (n_samples, n_features), got shape {array.shape}"
        )
    if array.dtype not in FLOAT_DTYPES:
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise InvalidInputError(field, f"{field} has non-numeric dtype {array.dtype}")
        array = array.astype(np.float64)
    if array.shape[0] == 0:
        raise InvalidInputError(field, f"{field} has 0 samples")
    if array.shape[1] == 0:
        raise InvalidInputError(field, f"{field} has 0 features")
    return np.ascontiguousarray(array)


# Squared float32 distances overflow past ~3.4e38: keep |x| where 4 * d * x^2 stays below it.
FLOAT32_MAX_ABS = 1e17
# float64 squares overflow past ~1e154, and the inertia sums squares times weights (whose
# total may reach MAX_WEIGHT_TOTAL): |x| up to 1e75 keeps w * 4 * d * x^2 inside float64's
# range for any width the server takes.
FLOAT64_MAX_ABS = 1e75
# The same limits in each dtype, for comparing values without converting them: float32's
# is the smallest float32 not below FLOAT32_MAX_ABS, so the comparison is the same.
_LIMITS = {
    np.dtype(np.float32): np.float32(FLOAT32_MAX_ABS)
    if float(np.float32(FLOAT32_MAX_ABS)) >= FLOAT32_MAX_ABS
    else np.nextafter(np.float32(FLOAT32_MAX_ABS), np.float32(np.inf)),
    np.dtype(np.float64): np.float64(FLOAT64_MAX_ABS),
}


def value_limit(dtype: np.dtype) -> np.floating:
    """The magnitude from which a float32 or float64 value is too large, in that dtype (for
    ``_validation.count_unfit``)."""
    return _LIMITS[dtype]  # type: ignore[return-value]


@dataclass(frozen=True)
class ValueScan:
    """What ``scan_values`` found in an array."""

    non_finite: int
    first_bad_row: int
    max_abs: float


def scan_values(X: np.ndarray) -> ValueScan:
    """Count NaN/Inf entries, find the first row with one, and the largest finite magnitude."""
    n_chunks = n_chunks_for(X.shape[0])
    bad = np.empty(n_chunks, dtype=np.int64)
    first = np.empty(n_chunks, dtype=np.int64)
    max_abs = np.empty(n_chunks, dtype=np.float64)
    chunks.run(_scan_values, n_chunks, read_only(X), bad, first, max_abs)
    rows = first[first >= 0]
    return ValueScan(int(bad.sum()), int(rows.min()) if rows.size else -1, float(max_abs.max(initial=0.0)))


def values_fine(X: np.ndarray) -> bool:
    """Whether every value of X is finite and small enough to square safely: check_finite's
    usual case, for a caller that checks the parts of an array as they arrive."""
    # One compiled pass settles it; check_finite's scan, five times slower, runs only to
    # describe what is wrong.
    if X.size == 0:
        return True
    limit = _LIMITS.get(X.dtype)
    if X.flags.c_contiguous and limit is not None:
        return count_unfit(read_only(X).reshape(-1), limit) == 0
    largest = max(float(X.max()), -float(X.min()))
    return largest < (FLOAT32_MAX_ABS if X.dtype == np.float32 else FLOAT64_MAX_ABS)  # False for NaN


def check_finite(X: np.ndarray, field: str) -> None:
    """Raise InvalidInputError for NaN or Inf, or values too large to square safely."""
    if values_fine(X):
        return
    scan = scan_values(X)
    if scan.non_finite:
        raise InvalidInputError(
            field,
            f"{field} contains {scan.non_finite} NaN or Inf values (first at row {scan.first_bad_row})",
        )
    if X.dtype == np.float32:
        raise InvalidInputError(
            field,
            f"{field} has float32 values as large as {scan.max_abs:.3g}; float32 data must stay "
            f"within +/-{FLOAT32_MAX_ABS:.0e} so squared distances do not overflow: send float64",
        )
    raise InvalidInputError(
        field,
        f"{field} has values as large as {scan.max_abs:.3g}; values must stay within "
        f"+/-{FLOAT64_MAX_ABS:.0e} so weighted squared distances do not overflow float64: "
        "scale the data down",
    )


# Weights only matter relative to each other; a total past this leaves too little of
# float64's range for the weighted sums of squared distances.
MAX_WEIGHT_TOTAL = 1e150


def check_n_clusters(n_clusters: Any, n_samples: int) -> int:
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)):
        raise InvalidInputError("n_clusters", f"n_clusters must be an integer, got {n_clusters!r}")
    if n_clusters < 1:
        raise InvalidInputError("n_clusters", f"n_clusters must be at least 1, got {n_clusters}")
    if n_clusters > n_samples:
        raise InvalidInputError(
            "n_clusters",
            f"n_clusters={n_clusters} is larger than the number of samples, {n_samples}",
        )
    return int(n_clusters)


def check_sample_weight(sample_weight: Any, n_samples: int) -> np.ndarray:
    if sample_weight is None:
        return UNIT_WEIGHTS
    weights = np.ascontiguousarray(sample_weight, dtype=np.float64)
    if weights.shape != (n_samples,):
        raise InvalidInputError(
            "sample_weight",
            f"sample_weight must have shape ({n_samples},), got {weights.shape}",
        )
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise InvalidInputError("sample_weight", "sample_weight must be finite and >= 0")
    check_weight_total(weights)
    return weights


def check_weight_total(weights: np.ndarray) -> float:
    """The weights' sum: positive, and far enough inside float64 that the weighted sums of a
    fit (a weight times a point, or a squared distance) stay finite."""
    with np.errstate(over="ignore"):
        total = float(weights.sum())
    if not total > 0:
        raise InvalidInputError("sample_weight", "sample_weight must have a positive sum")
    if not total <= MAX_WEIGHT_TOTAL:
        raise InvalidInputError(
            "sample_weight",
            f"sample_weight sums to {total:.3g}, past the {MAX_WEIGHT_TOTAL:.0e} the weighted sums "
            "can hold; scale the weights down (only their ratios matter)",
        )
    return total
