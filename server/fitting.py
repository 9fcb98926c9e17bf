"""Fits: plan one from its spec, gather its rows, and run the engine a step at a time.

Plain numpy and dataclasses in, domain errors out; the Fit handler does the wire.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from centroidal.engine import kmeans, spectral
from centroidal.engine.cosine import unit_rows
from centroidal.engine.progress import Progress, Stage
from centroidal.engine.scoring import Scoring
from centroidal.engine.validation import InvalidInputError, check_weight_total
from centroidal.v1 import codec

from .admission import CallWork
from .config import ServerConfig
from .exceptions import InvalidRequest, LimitExceeded
from .limits import check_finite, check_matrix, check_model_name, check_weights
from .memory import Reservation

log = logging.getLogger("centroidal.server")

DEFAULT_MAX_ITER = 300
DEFAULT_TOL = 1e-4
MAX_N_INIT = 100
MAX_MAX_ITER = 100_000
PROGRESS_INTERVAL_S = 0.1
# Longest run of engine steps in one executor job while their events are throttled away.
BATCH_STEPS_S = 0.02
# Room left in a message for everything but the bulk payload.
ENVELOPE_BYTES = 64 * 1024


@dataclass(frozen=True)
class FitParams:
    """A validated FitSpec, with defaults filled in."""

    model: str
    n_clusters: int
    init: str
    init_centers: np.ndarray | None
    n_init: int
    max_iter: int
    tol: float
    seed: int | None  # None: the engine draws one, and the model records it
    n_samples: int
    expected_version: int | None
    return_labels: bool
    metric: str = "euclidean"
    # The spec field that sets n_clusters, as errors name it.
    n_clusters_field: str = "spec.config.n_clusters"
    algorithm: str = "kmeans"
    n_neighbors: int = 0  # spectral only

    def config(self, seed: int) -> dict[str, object]:
        config: dict[str, object] = {
            "init": self.init, "n_init": self.n_init, "max_iter": self.max_iter, "tol": self.tol,
            "seed": seed, "metric": self.metric,
        }
        if self.algorithm == "spectral":
            config.update(algorithm="spectral", n_neighbors=self.n_neighbors)
        return config


def plan(spec: codec.FitSpec, limits: ServerConfig) -> FitParams:
    """Check a FitSpec against the contract and the server's limits."""
    config = spec.config
    model = check_model_name(spec.model, "spec.model")
    n_clusters = config.n_clusters
    if n_clusters < 1:
        raise InvalidRequest(
            f"spec.config.n_clusters must be at least 1, got {n_clusters}", field="spec.config.n_clusters"
        )
    if n_clusters > limits.max_clusters:
        raise LimitExceeded(
            f"spec.config.n_clusters={n_clusters} exceeds the server's limit of {limits.max_clusters}",
            field="spec.config.n_clusters",
        )
    init_centers = None
    if config.init == "given":
        if config.init_centers is None:
            raise InvalidRequest(
                "spec.config.init_centers is required when init is INIT_METHOD_GIVEN",
                field="spec.config.init_centers",
            )
        init_centers = check_matrix(
            config.init_centers, "spec.config.init_centers",
            max_rows=limits.max_clusters, max_cols=limits.max_features,
        )
        check_finite(init_centers, "spec.config.init_centers")
        if init_centers.shape[0] != n_clusters:
            raise InvalidRequest(
                f"spec.config.init_centers has {init_centers.shape[0]} rows but n_clusters is {n_clusters}",
                field="spec.config.init_centers.rows",
            )
    spectral_fit = config.algorithm == "spectral"
    n_neighbors = 0
    if spectral_fit:
        n_neighbors = _check_spectral(spec, limits)
    n_init = config.n_init or (10 if config.init == "random" or spectral_fit else 1)
    if n_init > MAX_N_INIT:
        raise InvalidRequest(
            f"spec.config.n_init must be at most {MAX_N_INIT}, got {n_init}", field="spec.config.n_init"
        )
    if config.init == "given" and n_init != 1:
        raise InvalidRequest(
            f"spec.config.n_init must be 1 with given centers, got {n_init}", field="spec.config.n_init"
        )
    max_iter = config.max_iter or DEFAULT_MAX_ITER
    if max_iter > MAX_MAX_ITER:
        raise InvalidRequest(
            f"spec.config.max_iter must be at most {MAX_MAX_ITER}, got {max_iter}",
            field="spec.config.max_iter",
        )
    tol = DEFAULT_TOL if config.tol is None else config.tol
    if not (math.isfinite(tol) and tol >= 0):
        raise InvalidRequest(f"spec.config.tol must be finite and >= 0, got {tol}", field="spec.config.tol")
    if spec.n_samples > limits.max_points:
        raise LimitExceeded(
            f"spec.n_samples={spec.n_samples} exceeds the server's limit of {limits.max_points} points",
            field="spec.n_samples",
        )
    return FitParams(
        model=model, n_clusters=n_clusters, init=config.init, init_centers=init_centers,
        n_init=n_init, max_iter=max_iter, tol=float(tol), seed=config.seed,
        n_samples=spec.n_samples, expected_version=spec.expected_version,
        return_labels=spec.return_labels, metric=config.metric, algorithm=config.algorithm,
        n_neighbors=n_neighbors,
    )


def _check_spectral(spec: codec.FitSpec, limits: ServerConfig) -> int:
    """Refuse what a spectral fit cannot take; returns its n_neighbors."""
    config = spec.config
    if config.init != "k-means++":
        raise InvalidRequest("spec.config.init must be k-means++ (or unset) for a spectral fit: its "
                             "centers come from the embedding", field="spec.config.init")
    if config.metric != "euclidean":
        raise InvalidRequest("spec.config.metric must be Euclidean for a spectral fit",
                             field="spec.config.metric")
    if spec.n_samples > spectral.MAX_POINTS:
        raise LimitExceeded(f"spec.n_samples={spec.n_samples} exceeds the {spectral.MAX_POINTS} rows a "
                            "spectral fit takes (its model keeps them); fit k-means, or a sample",
                            field="spec.n_samples")
    n_neighbors = config.n_neighbors or spectral.DEFAULT_NEIGHBORS
    if n_neighbors < 2:
        raise InvalidRequest(f"spec.config.n_neighbors must be at least 2, got {n_neighbors}",
                             field="spec.config.n_neighbors")
    return n_neighbors


@dataclass
class FitData:
    """The rows of a Fit stream, gathered into one C-contiguous array."""

    points: np.ndarray
    sample_weight: np.ndarray | None


# The engine's arrays per row during a fit: labels, squared distances, the best labels.
WORKING_BYTES_PER_ROW = 16


class Gatherer:
    """Collects the chunks of a Fit stream, checking every one against the first."""

    def __init__(self, limits: ServerConfig, params: FitParams, memory: Reservation) -> None:
        self._limits = limits
        self._params = params
        # The call's memory: the rows as they arrive, then the engine's working arrays.
        self._memory = memory
        self._declared = params.n_samples
        self._buffer: np.ndarray | None = None
        self._chunks: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []
        self._rows = 0
        self._dtype: np.dtype | None = None
        self._cols = 0
        self._weighted: bool | None = None

    @property
    def rows(self) -> int:
        return self._rows

    def add(self, chunk: codec.FitChunk, index: int) -> None:
        if chunk.points is None:
            if chunk.sample_weight is not None:
                raise InvalidRequest(f"message {index} has sample_weight but no points", field="sample_weight")
            return
        limits = self._limits
        points = check_matrix(
            chunk.points, "points", max_rows=limits.max_points, max_cols=limits.max_features,
            allow_empty=True,
        )
        if self._dtype is None:
            self._start(points)
        elif points.dtype != self._dtype or points.shape[1] != self._cols:
            raise InvalidRequest(
                f"message {index} has {points.shape[1]} columns of {points.dtype.name} but the "
                f"stream started with {self._cols} columns of {self._dtype.name}",
                field="points",
            )
        weighted = chunk.sample_weight is not None
        if weighted and self._params.algorithm == "spectral":
            raise InvalidRequest("a spectral fit takes no sample_weight", field="sample_weight")
        rows = points.shape[0]
        if rows and self._weighted is None:
            self._weighted = weighted
        if rows and weighted != self._weighted:
            raise InvalidRequest(
                f"message {index}: sample_weight must be given for every chunk or for none",
                field="sample_weight",
            )
        if self._params.algorithm == "spectral" and self._rows + rows > spectral.MAX_POINTS:
            raise LimitExceeded(
                f"the stream carries more than the {spectral.MAX_POINTS} rows a spectral fit takes "
                "(its model keeps them); fit k-means, or a sample", field="points.rows",
            )
        if self._rows + rows > limits.max_points:
            raise LimitExceeded(
                f"the stream carries more than the server's limit of {limits.max_points} points",
                field="points.rows",
            )
        data_bytes = (self._rows + rows) * self._cols * points.dtype.itemsize
        if data_bytes > limits.max_fit_bytes:
            raise LimitExceeded(
                f"the stream's data reached {data_bytes} bytes, over the server's limit of "
                f"{limits.max_fit_bytes} bytes per fit",
                field="points",
            )
        if chunk.sample_weight is not None:
            self._weights.append(check_weights(chunk.sample_weight, "sample_weight", rows))
            if self._buffer is None:
                self._memory.grow(rows * 8)
        if self._buffer is not None:
            if self._rows + rows > self._declared:
                raise InvalidRequest(
                    f"the stream carries more rows than spec.n_samples={self._declared}",
                    field="spec.n_samples",
                )
            self._buffer[self._rows : self._rows + rows] = points
        else:
            self._memory.grow(points.nbytes)
            self._chunks.append(points)
        self._rows += rows

    def _start(self, points: np.ndarray) -> None:
        self._dtype = points.dtype
        self._cols = points.shape[1]
        itemsize = points.dtype.itemsize
        params, limits = self._params, self._limits
        center_bytes = params.n_clusters * self._cols * itemsize
        if center_bytes > limits.max_message_bytes - ENVELOPE_BYTES:
            raise LimitExceeded(
                f"{params.n_clusters} centers of {self._cols} features would not fit in one "
                f"message under the server's limit of {limits.max_message_bytes} bytes",
                field=params.n_clusters_field,
            )
        if params.init_centers is not None and params.init_centers.shape[1] != self._cols:
            raise InvalidRequest(
                f"spec.config.init_centers has {params.init_centers.shape[1]} columns but "
                f"points have {self._cols}",
                field="spec.config.init_centers.cols",
            )
        if self._declared:
            if self._declared * self._cols * itemsize > limits.max_fit_bytes:
                raise LimitExceeded(
                    f"spec.n_samples={self._declared} rows of {self._cols} {points.dtype.name} "
                    f"exceed the server's limit of {limits.max_fit_bytes} bytes per fit",
                    field="spec.n_samples",
                )
            # Declared: the whole fit's memory is asked for before the first row is kept.
            self._memory.grow(self._declared * (self._cols * itemsize + WORKING_BYTES_PER_ROW + 8))
            self._buffer = np.empty((self._declared, self._cols), dtype=points.dtype)

    def finish(self) -> FitData:
        """The gathered rows, checked; CPU work on the whole dataset, run off the event loop."""
        if self._rows == 0:
            raise InvalidRequest("the Fit stream carried no points", field="points")
        if self._buffer is not None:
            if self._rows != self._declared:
                raise InvalidRequest(
                    f"spec.n_samples={self._declared} but the stream carried {self._rows} rows",
                    field="spec.n_samples",
                )
            points = self._buffer
        else:
            # The joined copy, beside the chunks until they go, and the engine's arrays.
            itemsize = self._chunks[0].dtype.itemsize
            self._memory.grow(self._rows * (self._cols * itemsize + WORKING_BYTES_PER_ROW))
            points = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._chunks[0].copy()
        self._chunks.clear()
        check_finite(points, "points")
        if self._params.metric == "cosine":
            unit_rows(points, "points", in_place=True)  # the call's own copy: no more memory
        n_clusters = self._params.n_clusters
        if n_clusters > self._rows:
            raise InvalidRequest(
                f"{self._params.n_clusters_field}={n_clusters} is larger than the number of "
                f"points, {self._rows}",
                field=self._params.n_clusters_field,
            )
        weights = None
        if self._weighted:
            weights = np.concatenate(self._weights).astype(np.float64)
            try:
                check_weight_total(weights)
            except InvalidInputError as exc:
                raise InvalidRequest(str(exc), field="sample_weight") from None
        return FitData(points, weights)


def _is_throttled(event: object) -> bool:
    """Whether an event that is not a fit's Progress may be dropped between sends: a
    suggest-k's scoring shares may, its per-k scores may not."""
    return isinstance(event, Scoring) and event.share < 1.0


# Returned by a job whose steps' events were all throttled away.
_DROPPED = Progress(Stage.ITERATION, 0, 0, 0, math.nan, math.nan)


class FitTally:
    """The fits of one server: how many engines still run, and where the last stopped one stopped."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.last_stopped_iteration: int | None = None
        self.lock = threading.Lock()


def fit_steps(
    params: FitParams, data: FitData
) -> Generator[Progress, None, kmeans.KMeansResult | spectral.SpectralResult]:
    """The engine's steps for a planned fit on its gathered rows (scaled in place for cosine)."""
    if params.algorithm == "spectral":
        return spectral.fit_steps(
            data.points, params.n_clusters, n_neighbors=params.n_neighbors, n_init=params.n_init,
            seed=params.seed,
        )
    return kmeans.fit_steps(
        data.points, params.n_clusters,
        init=params.init_centers if params.init_centers is not None else params.init,
        n_init=params.n_init, max_iter=params.max_iter, tol=params.tol, seed=params.seed,
        sample_weight=data.sample_weight, metric=params.metric, copy_x=False,
    )


class FitRun:
    """Engine steps (a fit's, or any generator of events) driven a step at a time on an
    executor, so that the event loop stays free and a cancelled call stops the work
    within one step. ``label`` names the work in the log."""

    def __init__(
        self, label: str, steps: Generator[Any, None, Any], work: CallWork,
        executor: ThreadPoolExecutor, tally: FitTally, on_iteration: Callable[[], None],
    ) -> None:
        self._label = label
        self._work = work
        self._executor = executor
        self._tally = tally
        self._on_iteration = on_iteration
        self._steps = steps
        self.result: Any = None
        self._iteration = 0
        self._closed = False
        self._failed = False
        self._last_sent = 0.0
        with tally.lock:
            tally.in_flight += 1

    def _advance(self) -> Progress | None:
        """Engine steps on the executor, up to the next event worth sending; None once the
        fit has finished.

        Steps whose events the throttle would drop run in the same job for up to
        BATCH_STEPS_S: a hand-over to the event loop per k-means++ center costs more than
        the center on small data, and a cancel still waits at most that long or one step.
        """
        began = time.monotonic()
        while True:
            try:
                event = next(self._steps)
            except StopIteration as done:
                self.result = done.value
                return None
            except BaseException:
                self._failed = True
                raise
            now = time.monotonic()
            if isinstance(event, Progress):
                self._iteration = event.iteration
                if event.stage is Stage.ITERATION:
                    self._on_iteration()
                throttled = event.stage in (Stage.ITERATION, Stage.SEEDING) and event.iteration > 1
            else:
                throttled = _is_throttled(event)
            if throttled and now - self._last_sent < PROGRESS_INTERVAL_S:
                if now - began < BATCH_STEPS_S:
                    continue
                return _DROPPED
            self._last_sent = now
            return event

    async def events(self) -> AsyncGenerator[Any, None]:
        """The engine's progress events, a few per second at most; the result is in ``result``."""
        try:
            while True:
                event = await self._work.run(self._executor, self._advance)
                if event is None:
                    return
                if event is not _DROPPED:
                    yield event
        finally:
            # A step may still be running on the executor: stop once it returns, never under it.
            self._work.after(self._stop)

    def _stop(self) -> None:
        tally = self._tally
        with tally.lock:
            if self._closed:
                return
            self._closed = True
            tally.in_flight -= 1
            if self.result is None and not self._failed:
                tally.last_stopped_iteration = self._iteration
        if self.result is None:
            self._steps.close()
            if self._failed:
                return
            log.info("%s stopped at iteration %d: call ended", self._label, self._iteration)


def progress_message(event: Progress, points: int, started: float) -> codec.FitProgress:
    return codec.FitProgress(
        stage=event.stage.value,
        restart=event.restart,
        n_init=event.n_init,
        iteration=event.iteration,
        inertia=0.0 if math.isnan(event.inertia) else event.inertia,
        center_shift=0.0 if math.isnan(event.center_shift) else event.center_shift,
        points_received=points,
        elapsed_seconds=time.monotonic() - started,
        distances_skipped=event.distances_skipped,
    )
