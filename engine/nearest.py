"""Predicting with a fitted model's centers: the nearest center of each row, and the
distance from each row to every center, through the compiled kernels in ``_lloyd``.
``NearestCenters`` prepares a model's centers once for many calls; ``predict`` and
``transform`` are the one-call forms (``kmeans`` offers them beside ``fit``).
"""

from __future__ import annotations

from typing import Any, Literal, overload

import numpy as np

from . import _lloyd, chunks
from ._common import n_tiles_for
from .cosine import COSINE_PER_SQ_EUCLIDEAN, check_metric, unit_centers, unit_rows
from .seeding import shift_for
from .threads import configure_threads
from .validation import InvalidInputError, as_float_matrix, check_finite, read_only

__all__ = ["ON_CALLER_WORK", "NearestCenters", "predict", "transform"]


# Below this many multiply-adds (n * k * d) predict runs on the calling thread: waking the
# pool's sleeping threads (chunks.run) costs more than the work.
ON_CALLER_WORK = 1 << 16


class NearestCenters:
    """A model's centers made ready for many predicts: a C-contiguous writable copy in each
    dtype asked for, with its shift, prepared once instead of at every call.

    centers : array-like of shape (n_clusters, n_features)
    metric : "euclidean", or "cosine": rows are scaled to unit length (one of zero length
        is refused), and distances are cosine distances, 1 - cos(x, c)
    Safe to share between threads.
    """

    def __init__(self, centers: Any, metric: str = "euclidean") -> None:
        configure_threads()  # once per process; the server and warm-up have done it already
        self.metric = check_metric(metric)
        self.centers = as_float_matrix(centers, "centers")
        if self.metric == "cosine":
            self.centers = unit_centers(self.centers)
        self._by_dtype: dict[np.dtype, tuple[np.ndarray, np.ndarray]] = {}

    def _prepared(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        prepared = self._by_dtype.get(dtype)
        if prepared is None:
            # Writable: read-only centers would need kernel signatures of their own.
            centers = np.array(self.centers, dtype=dtype, order="C", copy=True)
            prepared = self._by_dtype[dtype] = (centers, shift_for(centers))
        return prepared

    def _points(self, X: Any, field: str) -> np.ndarray:
        X = as_float_matrix(X, field)
        check_finite(X, field)
        if X.shape[1] != self.centers.shape[1]:
            raise InvalidInputError(
                field, f"{field} has {X.shape[1]} features but the centers have {self.centers.shape[1]}"
            )
        return read_only(unit_rows(X, field) if self.metric == "cosine" else X)

    @overload
    def predict(self, X: Any, *, return_distance: Literal[False] = ..., field: str = ...) -> np.ndarray: ...

    @overload
    def predict(self, X: Any, *, return_distance: Literal[True], field: str = ...) -> tuple[np.ndarray, np.ndarray]: ...

    @overload
    def predict(
        self, X: Any, *, return_distance: bool, field: str = ...
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]: ...

    def predict(
        self, X: Any, *, return_distance: bool = False, field: str = "X"
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Index of the nearest center for each row.

        X : array-like of shape (n_samples, n_features); ``field`` names it in errors
        Returns labels, ndarray of shape (n_samples,), int32; with return_distance
        also the distance to that center (Euclidean, or cosine for a cosine model),
        shape (n_samples,), X's dtype.
        """
        X = self._points(X, field)
        centers, shift = self._prepared(X.dtype)
        labels = np.empty(X.shape[0], dtype=np.int32)
        min_sq_dist = np.empty(X.shape[0] if return_distance else 0, dtype=np.float64)
        small = X.shape[0] * centers.shape[0] * X.shape[1] <= ON_CALLER_WORK
        chunks.run(_lloyd.assign, n_tiles_for(X.shape[0]), X, centers, shift, labels, min_sq_dist,
                   on_caller=small)
        if return_distance:
            if self.metric == "cosine":
                return labels, (COSINE_PER_SQ_EUCLIDEAN * min_sq_dist).astype(X.dtype)
            return labels, np.sqrt(min_sq_dist).astype(X.dtype)
        return labels

    def transform(self, X: Any, *, field: str = "X") -> np.ndarray:
        """Distance from each row to each center (Euclidean, or cosine for a cosine model):
        (n_samples, n_clusters), X's dtype."""
        X = self._points(X, field)
        centers, _ = self._prepared(X.dtype)
        out = np.empty((X.shape[0], centers.shape[0]), dtype=X.dtype)
        chunks.run(_lloyd.all_distances, X.shape[0], X, centers, out)
        if self.metric == "cosine":
            np.square(out, out=out)
            out *= COSINE_PER_SQ_EUCLIDEAN
        return out


def predict(
    X: Any, centers: Any, *, return_distance: bool = False, metric: str = "euclidean"
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Index of the nearest center for each row.

    X : array-like of shape (n_samples, n_features)
    centers : array-like of shape (n_clusters, n_features); cast to X's dtype
    Returns labels, ndarray of shape (n_samples,), int32; with return_distance
    also the Euclidean distance to that center, shape (n_samples,), X's dtype.
    """
    return NearestCenters(centers, metric).predict(X, return_distance=return_distance)


def transform(X: Any, centers: Any, *, metric: str = "euclidean") -> np.ndarray:
    """Euclidean distance from each row to each center.

    Returns ndarray of shape (n_samples, n_clusters) in X's dtype.
    """
    return NearestCenters(centers, metric).transform(X)
