"""Mini-batch k-means: a model that learns one batch at a time.

The update follows scikit-learn's MiniBatchKMeans. Each center keeps the total
weight of the points it has absorbed, and moves towards a batch's points by
their share of that total: c <- (c * n + sum of the batch's points) / (n + m).
Centers whose weight falls below ``reassignment_ratio`` times the largest are
moved onto random points of the batch. This happens at most once every
10 * n_clusters points, and always while some center has absorbed nothing.

An optional half-life makes the model follow drifting data, as Spark's
StreamingKMeans does. Before each batch every center's weight is multiplied by
0.5 ** (1 / half_life) for a half-life in batches, or by
0.5 ** (batch points / half_life) for one in points.

A new model buffers its first points until it has ``init_size`` of them, seeds
its centers from the buffer with k-means++, and then learns the buffered
batches in order. The state depends only on the batches and their order: the
random draws of batch t come from a generator seeded with (seed, t), so a
model rebuilt from a checkpoint and fed the same later batches ends where an
uninterrupted one would.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import ministep
from .cosine import COSINE_PER_SQ_EUCLIDEAN, check_metric, unit_centers, unit_rows
from .seeding import kmeans_plusplus
from .threads import configure_threads
from .validation import (
    UNIT_WEIGHTS,
    InvalidInputError,
    as_float_matrix,
    check_finite,
    check_weight_total,
    read_only,
)

HALF_LIFE_UNITS = ("batches", "points")


@dataclass(frozen=True)
class MiniBatchParams:
    """How a mini-batch model learns; validated by ``check``."""

    n_clusters: int
    init_size: int = 0
    reassignment_ratio: float = 0.01
    half_life: float | None = None
    half_life_unit: str = "batches"
    seed: int = 0
    metric: str = "euclidean"

    def check(self) -> MiniBatchParams:
        """Raise InvalidInputError naming the first bad field; returns self."""
        if self.n_clusters < 1:
            raise InvalidInputError("n_clusters", f"n_clusters must be at least 1, got {self.n_clusters}")
        if self.init_size and self.init_size < self.n_clusters:
            raise InvalidInputError(
                "init_size",
                f"init_size {self.init_size} is below n_clusters {self.n_clusters}; "
                "k-means++ needs at least one point per center (0 picks a default)",
            )
        ratio = self.reassignment_ratio
        if not (math.isfinite(ratio) and 0.0 <= ratio <= 1.0):
            raise InvalidInputError(
                "reassignment_ratio", f"reassignment_ratio must be in [0, 1], got {ratio}"
            )
        if self.half_life is not None and not (math.isfinite(self.half_life) and self.half_life > 0):
            raise InvalidInputError(
                "half_life", f"half_life must be a positive number, got {self.half_life}"
            )
        if self.half_life_unit not in HALF_LIFE_UNITS:
            raise InvalidInputError(
                "half_life_unit",
                f"half_life_unit must be one of {HALF_LIFE_UNITS}, got {self.half_life_unit!r}",
            )
        check_metric(self.metric)
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_clusters": self.n_clusters,
            "init_size": self.init_size,
            "reassignment_ratio": self.reassignment_ratio,
            "half_life": self.half_life,
            "half_life_unit": self.half_life_unit,
            "seed": self.seed,
            "metric": self.metric,
        }


@dataclass(frozen=True)
class BatchOutcome:
    """What one batch did to the model.

    batch_inertia is the batch's weighted inertia against the centers before the
    update; NaN while the model is still buffering points for its initialisation.
    """

    batch_inertia: float
    initialized_now: bool
    n_reassigned: int


class MiniBatchState:
    """Centers, per-center weights and counters of one mini-batch model.

    Not thread-safe: one writer at a time (the server holds the model's lock).
    ``centers`` has shape (0, n_features) until the model is initialised.
    """

    def __init__(self, params: MiniBatchParams, n_features: int, dtype: np.dtype) -> None:
        configure_threads()  # once per process; the server and warm-up have done it already
        self.params = params.check()
        self.n_features = int(n_features)
        self.dtype = np.dtype(dtype)
        self.centers = np.empty((0, self.n_features), dtype=self.dtype)
        self.counts = np.zeros(params.n_clusters, dtype=np.float64)
        self.n_samples_seen = 0
        self.n_batches = 0
        self.since_reassign = 0
        # Batches waiting for initialisation: points, weights (empty: unit) in arrival order.
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.init_target = params.init_size

    def start_from(self, centers: Any) -> None:
        """Use these centers instead of seeding from the first points (an empty model only)."""
        centers = np.array(as_float_matrix(centers, "centers"), dtype=self.dtype, order="C")
        if self.initialized or self.pending:
            raise InvalidInputError("centers", "the model already has points; start_from needs a new one")
        if centers.shape != (self.params.n_clusters, self.n_features):
            raise InvalidInputError(
                "centers",
                f"centers must have shape ({self.params.n_clusters}, {self.n_features}), "
                f"got {centers.shape}",
            )
        check_finite(centers, "centers")
        self.centers = unit_centers(centers) if self.spherical else centers

    @property
    def spherical(self) -> bool:
        return self.params.metric == "cosine"

    @property
    def initialized(self) -> bool:
        return self.centers.shape[0] > 0

    @property
    def nbytes(self) -> int:
        """Memory held: centers, weights, and the points buffered for initialisation."""
        buffered = sum(points.nbytes + weights.nbytes for points, weights in self.pending)
        return int(self.centers.nbytes + self.counts.nbytes + buffered)

    @property
    def pending_points(self) -> int:
        return sum(points.shape[0] for points, _ in self.pending)

    def check_batch(self, X: Any, sample_weight: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Validate one batch's shape, dtype and weights; returns (points, weights).

        Its values (NaN, Inf, float32 overflow) are checked by ``partial_fit``. A cosine
        model's points come back scaled to unit length; a row of zero length is refused.
        """
        X = as_float_matrix(X, "points")
        if X.dtype != self.dtype:
            raise InvalidInputError(
                "points.dtype",
                f"the model holds {self.dtype.name} centers; a batch of {X.dtype.name} was sent",
            )
        if X.shape[1] != self.n_features:
            raise InvalidInputError(
                "points.cols",
                f"the model has {self.n_features} features; the batch has {X.shape[1]}",
            )
        if self.spherical:
            check_finite(X, "points")
            X = unit_rows(X, "points")
        if sample_weight is None or np.size(sample_weight) == 0:
            return X, UNIT_WEIGHTS
        weights = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
        if weights.shape[0] != X.shape[0]:
            raise InvalidInputError(
                "sample_weight",
                f"sample_weight has {weights.shape[0]} values for {X.shape[0]} points",
            )
        if not np.all(np.isfinite(weights)) or weights.min() < 0:
            raise InvalidInputError("sample_weight", "sample_weight must be finite and non-negative")
        check_weight_total(weights)
        return X, np.ascontiguousarray(weights)

    def partial_fit(
        self, X: np.ndarray, sample_weight: np.ndarray = UNIT_WEIGHTS, *, in_one_call: bool | None = None,
    ) -> BatchOutcome:
        """Learn one batch checked by ``check_batch``.

        Raises InvalidInputError("points") for NaN, Inf or too large values, and then
        leaves the model as it was.

        in_one_call: True runs the step on this thread in one compiled call, as a server
        whose event loop shares the GIL wants (``ministep``); by default the engine
        chooses by the step's size. The centers are the same either way.
        """
        if self.initialized:  # the step checks the values as it starts
            inertia, reassigned = self._step(X, sample_weight, in_one_call)
            return BatchOutcome(inertia, False, reassigned)
        check_finite(X, "points")
        if not self.pending and not self.init_target:
            self.init_target = max(3 * self.params.n_clusters, X.shape[0])
        before = (list(self.pending), self.centers, self.counts, self.n_batches,
                  self.n_samples_seen, self.since_reassign)
        self.pending.append((X.copy(), sample_weight.copy()))
        if self.pending_points < self.init_target:
            return BatchOutcome(math.nan, False, 0)
        try:
            return self._initialize()
        except BaseException:
            # Nothing of a failed initialisation stays, the batch that triggered it included.
            (self.pending, self.centers, self.counts, self.n_batches, self.n_samples_seen,
             self.since_reassign) = before
            raise

    def _initialize(self) -> BatchOutcome:
        """Seed the centers from the buffered points, then learn the buffered batches."""
        points = np.concatenate([p for p, _ in self.pending])
        if any(w.size for _, w in self.pending):
            weights = np.concatenate(
                [w if w.size else np.ones(p.shape[0]) for p, w in self.pending]
            )
        else:
            weights = UNIT_WEIGHTS
        rng = np.random.default_rng((self.params.seed, 0))
        self.centers = kmeans_plusplus(points, self.params.n_clusters, rng, weights)
        buffered, self.pending = self.pending, []
        inertia, reassigned = math.nan, 0
        for batch, batch_weights in buffered:
            inertia, moved = self._step(batch, batch_weights)
            reassigned += moved
        return BatchOutcome(inertia, True, reassigned)

    def _step(self, X: np.ndarray, sample_weight: np.ndarray, in_one_call: bool | None = None) -> tuple[float, int]:
        """One mini-batch update; returns (batch inertia before it, centers reassigned).

        Works on copies and commits at the end, so a batch that fails changes nothing.
        """
        n_clusters = self.params.n_clusters
        X = read_only(X)
        batch_points = X.shape[0]
        moved, centers = np.empty((n_clusters, self.n_features)), np.empty_like(self.centers)
        counts, touched = np.empty(n_clusters), np.empty(n_clusters, dtype=np.bool_)
        inertia, finite = ministep.moved_centers(
            X, sample_weight, self.centers, self.counts * self._decay(batch_points), moved, centers, counts, touched,
            in_one_call,
        )
        if self.spherical:
            centers[touched] = unit_centers(moved[touched], self.centers[touched])
            finite = finite and bool(np.isfinite(centers).all())
            inertia *= COSINE_PER_SQ_EUCLIDEAN
        if not (math.isfinite(inertia) and finite):
            if sample_weight.size and math.isfinite(ministep.assigned_sums(X, UNIT_WEIGHTS, self.centers)[2].sum()):
                # The points alone are fine.
                raise InvalidInputError(
                    "sample_weight",
                    "sample_weight is too large for these points and the weight the model "
                    "already holds: the weighted sums overflow float64; scale the weights down",
                )
            # Finite float64 values past ~1e154 overflow when squared.
            raise InvalidInputError(
                "points", "points hold values too large to square in float64; scale them down"
            )
        since_reassign = self.since_reassign + batch_points
        reassigned = 0
        if self.params.reassignment_ratio > 0 and (
            (counts == 0).any() or since_reassign >= 10 * n_clusters
        ):
            since_reassign = 0
            reassigned = self._reassign(X, centers, counts)
        self.centers = centers
        self.counts = counts
        self.since_reassign = since_reassign
        self.n_batches += 1
        self.n_samples_seen += batch_points
        return inertia, reassigned

    def _decay(self, batch_points: int) -> float:
        """What every center's weight is multiplied by before a batch (1 without a half-life)."""
        half_life = self.params.half_life
        if half_life is None:
            return 1.0
        exponent = 1.0 if self.params.half_life_unit == "batches" else float(batch_points)
        return float(0.5 ** (exponent / half_life))

    def _reassign(self, X: np.ndarray, centers: np.ndarray, counts: np.ndarray) -> int:
        """Move starved centers onto random points of the batch, in ``centers`` and ``counts``;
        returns how many moved."""
        starved = counts < self.params.reassignment_ratio * counts.max()
        # At most half the batch becomes new centers: keep the better-fed ones.
        limit = int(0.5 * X.shape[0])
        if starved.sum() > limit:
            starved[np.argsort(counts, kind="stable")[limit:]] = False
        n_starved = int(starved.sum())
        if n_starved == 0 or n_starved == counts.shape[0]:
            return 0
        rng = np.random.default_rng((self.params.seed, self.n_batches + 1))
        rows = rng.choice(X.shape[0], size=n_starved, replace=False)
        centers[starved] = X[rows]
        # A fresh center gets the smallest surviving weight, so it is not moved again at once.
        counts[starved] = counts[~starved].min()
        return n_starved

    # Checkpoints ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Everything needed to continue learning, as one self-describing blob."""
        arrays: dict[str, np.ndarray] = {"centers": self.centers, "counts": self.counts}
        for i, (points, weights) in enumerate(self.pending):
            arrays[f"pending_points_{i}"] = points
            arrays[f"pending_weights_{i}"] = weights
        meta = {
            "params": self.params.as_dict(),
            "n_features": self.n_features,
            "dtype": self.dtype.str,
            "n_samples_seen": self.n_samples_seen,
            "n_batches": self.n_batches,
            "since_reassign": self.since_reassign,
            "n_pending": len(self.pending),
            "init_target": self.init_target,
        }
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy stubs mistype **kwds
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> MiniBatchState:
        with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
            meta = json.loads(arrays["meta"].tobytes().decode())
            state = cls(MiniBatchParams(**meta["params"]), meta["n_features"], np.dtype(meta["dtype"]))
            state.centers = np.array(arrays["centers"], dtype=state.dtype, order="C")
            state.counts = np.array(arrays["counts"], dtype=np.float64)
            state.pending = [
                (np.array(arrays[f"pending_points_{i}"]), np.array(arrays[f"pending_weights_{i}"]))
                for i in range(meta["n_pending"])
            ]
        state.n_samples_seen = int(meta["n_samples_seen"])
        state.n_batches = int(meta["n_batches"])
        state.since_reassign = int(meta["since_reassign"])
        state.init_target = int(meta["init_target"])
        return state


def warmup(dtype: np.dtype) -> None:
    """Configure threads and compile the mini-batch kernels for rows of ``dtype``."""
    configure_threads()
    rng = np.random.default_rng(0)
    state = MiniBatchState(MiniBatchParams(n_clusters=2, half_life=2.0), 3, np.dtype(dtype))
    batch = rng.normal(size=(8, 3)).astype(dtype)
    frozen = batch.copy()
    frozen.setflags(write=False)
    for points in (batch, frozen):
        state.partial_fit(*state.check_batch(points))
        state.partial_fit(*state.check_batch(points, np.ones(8)))
    spherical = MiniBatchState(MiniBatchParams(n_clusters=2, metric="cosine"), 3, np.dtype(dtype))
    for points in (batch, frozen):
        spherical.partial_fit(*spherical.check_batch(points))
    # Steps this small run in one call: the chunks dealt out, as larger steps are, too.
    centers, counts = state.centers, state.counts
    for weights in (UNIT_WEIGHTS, np.ones(8)):
        ministep.moved_centers(frozen, weights, centers, counts, np.empty((2, 3)), np.empty_like(centers),
                               np.empty(2), np.empty(2, dtype=np.bool_), in_one_call=False)
