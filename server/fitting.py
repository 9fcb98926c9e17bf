"""Fit: a spec planned into the engine's parameters and the server's limits, then run:
admission, the rows, the engine a step at a time, and the commit of the model it found.

Plain numpy and dataclasses in, codec dataclasses and domain errors out; the Fit handler
does the wire.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from centroidal import codec
from centroidal.engine import kmeans, spectral
from centroidal.engine.kmeans import KMeansParams
from centroidal.engine.progress import Progress

from . import datasets
from .admission import CallWork, Incoming
from .catalog import describe
from .config import ServerConfig
from .exceptions import InvalidRequest, LimitExceeded
from .gathering import FitData, RowsPlan, gather, no_rows_after
from .limits import check_matrix, check_model_name
from .memory import Reservation
from .runtime import Runtime
from .snapshots import KMEANS, SPECTRAL, ModelSnapshot
from .steps import StepRun

log = logging.getLogger("centroidal.server")

# The contract's caps on a fit's work, beyond the engine's own rules (.proto: "At most ...").
MAX_N_INIT = 100
MAX_MAX_ITER = 100_000
LABELS_PER_MESSAGE = 1 << 19


def params_from_config(config: codec.KMeansConfig, limits: ServerConfig, *, n_clusters: int | None = None) -> KMeansParams:
    """The engine's parameters from a wire config (0 means the default), checked by the
    engine's one table of rules, then against the server's caps. Engine errors name engine
    fields, which the errors table maps to wire fields per RPC."""
    init_centers = None
    if config.init == "given" and config.init_centers is not None:
        init_centers = check_matrix(
            config.init_centers, "spec.config.init_centers",
            max_rows=limits.max_clusters, max_cols=limits.max_features,
        )
    params = KMeansParams(
        n_clusters=config.n_clusters if n_clusters is None else n_clusters,
        init=config.init, init_centers=init_centers, n_init=config.n_init or None,
        max_iter=config.max_iter or None, tol=config.tol, seed=config.seed, metric=config.metric,
        algorithm=config.algorithm, n_neighbors=config.n_neighbors or None,
    ).check()
    assert params.n_init is not None and params.max_iter is not None
    if params.n_init > MAX_N_INIT:
        raise InvalidRequest(f"spec.config.n_init must be at most {MAX_N_INIT}, got {params.n_init}",
                             field="spec.config.n_init")
    if params.max_iter > MAX_MAX_ITER:
        raise InvalidRequest(f"spec.config.max_iter must be at most {MAX_MAX_ITER}, got {params.max_iter}",
                             field="spec.config.max_iter")
    return params


@dataclass(frozen=True)
class FitPlan:
    """A Fit's spec checked: the engine's parameters with defaults filled in, and the call's
    own settings."""

    model: str
    params: KMeansParams
    n_samples: int  # declared; 0 when not
    expected_version: int | None
    return_labels: bool
    source: codec.DatasetSource | None = None

    @property
    def spectral(self) -> bool:
        return self.params.algorithm == "spectral"

    def rows(self) -> RowsPlan:
        return RowsPlan(
            declared=self.n_samples, n_clusters=self.params.n_clusters,
            n_clusters_field="spec.config.n_clusters", weights_allowed=not self.spectral,
            max_rows=spectral.MAX_POINTS if self.spectral else 0,
            max_rows_why="a spectral fit takes (its model keeps them; fit k-means, or a sample)"
            if self.spectral else "",
            init_centers=self.params.init_centers,
        )


def plan(spec: codec.FitSpec, limits: ServerConfig) -> FitPlan:
    """Check a FitSpec against the engine's rules and the server's limits."""
    model = check_model_name(spec.model, "spec.model")
    if spec.config.n_clusters > limits.max_clusters:
        raise LimitExceeded(
            f"spec.config.n_clusters={spec.config.n_clusters} exceeds the server's limit of "
            f"{limits.max_clusters}", field="spec.config.n_clusters",
        )
    params = params_from_config(spec.config, limits)
    if spec.n_samples > limits.max_points:
        raise LimitExceeded(
            f"spec.n_samples={spec.n_samples} exceeds the server's limit of {limits.max_points} points",
            field="spec.n_samples",
        )
    if params.algorithm == "spectral" and spec.n_samples > spectral.MAX_POINTS:
        raise LimitExceeded(f"spec.n_samples={spec.n_samples} exceeds the {spectral.MAX_POINTS} rows a "
                            "spectral fit takes (its model keeps them); fit k-means, or a sample",
                            field="spec.n_samples")
    return FitPlan(model, params, spec.n_samples, spec.expected_version, spec.return_labels, spec.source)


def fit_steps(plan: FitPlan, data: FitData) -> Generator[Progress, None, Any]:
    """The engine's steps for a planned fit on its gathered rows (scaled in place for cosine)."""
    if plan.spectral:
        return spectral.fit_steps_with(data.points, plan.params)
    return kmeans.fit_steps_with(data.points, plan.params, sample_weight=data.sample_weight, copy_x=False,
                                 values_checked=data.values_checked)


def progress_of(event: Progress, points: int, started: float) -> codec.FitProgress:
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


def received(runtime: Runtime, n_samples: int, started: float) -> list[codec.FitProgress]:
    """The events of a call whose rows have all arrived: data received, and, while the
    server's warm-up is still compiling kernels, that the work may wait for them."""
    runtime.metrics.points.inc(n_samples)
    stages = ["data_received"] + ([] if runtime.kernels_compiled.is_set() else ["compiling"])
    return [codec.FitProgress(stage, points_received=n_samples, elapsed_seconds=time.monotonic() - started)
            for stage in stages]


def _fit_rows(chunk: codec.FitChunk) -> tuple[np.ndarray | None, np.ndarray | None]:
    return chunk.points, chunk.sample_weight


class Fitting:
    """Runs Fit calls and commits the models they find."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def fit(self, chunks: Incoming[codec.FitChunk]) -> AsyncIterator[codec.FitEvent]:
        """The events of one Fit: admitted, the data received, the engine's progress, the
        labels if asked for, and the stored model. The model is committed before the last."""
        runtime, started = self._runtime, time.monotonic()
        first = await chunks.next()
        if first is None or first.spec is None:
            raise InvalidRequest("the first FitRequest must carry a spec", field="spec")
        fit = plan(first.spec, runtime.config)
        runtime.registry.check_expected(fit.model, fit.expected_version)
        runtime.registry.check_writable()  # before the data: a fit that cannot be stored is refused
        if fit.source is not None and (first.points is not None or first.sample_weight is not None):
            raise InvalidRequest("a fit of spec.source reads its rows from the dataset: the stream carries "
                                 "no points or sample_weight", field="points")
        slot, work = runtime.fit_slots.take(), CallWork()
        memory = runtime.memory.reservation("this fit", field="points")
        stop = threading.Event()  # set when the call ends, for work that waits on a cluster
        data: FitData | None = None
        try:
            yield codec.FitProgress("admitted", elapsed_seconds=time.monotonic() - started)
            if fit.source is None:
                data = await gather(runtime, chunks, first, fit.rows(), memory, work, _fit_rows)
                n_samples, steps = data.points.shape[0], fit_steps(fit, data)
            else:
                n_samples, steps = await self._dataset_steps(fit, fit.source, memory, work, stop)
            for event in received(runtime, n_samples, started):
                yield event
            if data is not None:
                await runtime.kernels_for(data.points.dtype, fit=True)
            run = StepRun(f"fit of {fit.model}", steps, work, runtime.workers.fits,
                          runtime.fits, runtime.metrics.iterations.inc)
            async with contextlib.aclosing(run.events()) as events:
                async for event in events:
                    yield progress_of(event, n_samples, started)
        finally:
            stop.set()
            work.after(slot.release)  # once the engine has stopped, not before
            if data is not None:  # its rows, for the next upload to fill (spare.py)
                work.after(functools.partial(runtime.spare.keep, data))
            work.after(memory.release)
        result = run.result
        if fit.source is None:
            await no_rows_after(chunks, fit.rows(), _fit_rows)
        # Labels go out before the commit, so a call that fails while sending them stores nothing.
        if fit.return_labels:
            for offset in range(0, n_samples, LABELS_PER_MESSAGE):
                yield codec.LabelsChunk(offset, result.labels[offset : offset + LABELS_PER_MESSAGE])
        stored = await runtime.commit(self._snapshot(fit, result, n_samples), fit.expected_version)
        log.info("fit committed model=%s version=%d n=%d k=%d n_iter=%d inertia=%.6g", stored.name,
                 stored.version, n_samples, stored.n_clusters, stored.n_iter, stored.inertia)
        yield codec.FitResult(describe(stored, include_centers=True), n_samples, result.best_restart,
                              time.monotonic() - started)

    async def _dataset_steps(self, fit: FitPlan, source: codec.DatasetSource, memory: Reservation, work: CallWork,
                             stop: threading.Event) -> tuple[int, Generator[Progress, None, Any]]:
        """The rows of a dataset named by reference, and the engine steps that fit them: here,
        or on the Dask cluster."""
        runtime = self._runtime
        dataset = await work.run(runtime.workers.fits, datasets.open_source, runtime, source)
        datasets.check_dataset(runtime, dataset, fit.params, fit.n_samples, fit.return_labels)
        if runtime.dask is not None:
            return dataset.n_rows, datasets.dask_steps(runtime, dataset, fit.params, stop)
        data = await datasets.local_rows(runtime, dataset, fit.params, memory, work)
        return dataset.n_rows, fit_steps(fit, data)

    @staticmethod
    def _snapshot(fit: FitPlan, result: Any, n_samples: int) -> ModelSnapshot:
        spectral_fit = isinstance(result, spectral.SpectralResult)
        centers: np.ndarray = result.centers
        return ModelSnapshot(
            name=fit.model, version=0, centers=centers, config=fit.params.as_config(result.seed),
            inertia=result.inertia, n_iter=result.n_iter, n_samples_seen=n_samples,
            created_at=0.0, updated_at=0.0, kind=SPECTRAL if spectral_fit else KMEANS,
            state=result.to_bytes() if spectral_fit else None,
        )
