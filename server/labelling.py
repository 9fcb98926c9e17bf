"""PredictDataset: a model's labels for every row of a dataset, written to files beside it,
on the Dask cluster or here a partition at a time, with progress and a stop when the call
ends."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator

from centroidal import codec
from centroidal.partitioned.labels import Labelled, label_steps
from centroidal.sources import output_dir

from .admission import CallWork
from .exceptions import ModelMismatch
from .datasets import open_source
from .predicting import metric_of, snapshot_for
from .runtime import Runtime
from .snapshots import SPECTRAL
from .steps import StepRun


class DatasetLabels:
    """Runs PredictDataset calls."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def run(self, request: codec.PredictDatasetRequest) -> AsyncIterator[codec.PredictDatasetEvent]:
        runtime, started = self._runtime, time.monotonic()
        output = output_dir(request.output_uri, runtime.outputs, "output_uri")
        snapshot = await runtime.workers.run(runtime.workers.storage, snapshot_for, runtime.registry,
                                             request.model, request.version, "model")
        if snapshot.kind == SPECTRAL:
            raise ModelMismatch(f"model {snapshot.name!r} is a spectral model: it labels points by the vote of its "
                                "training rows, which PredictDataset does not run; use Predict",
                                field="model", reason="SPECTRAL_MODEL")
        slot, work = runtime.fit_slots.take(), CallWork()
        stop = threading.Event()
        try:
            dataset = await work.run(runtime.workers.fits, open_source, runtime, request.input, "input")
            if dataset.n_features != snapshot.n_features:
                raise ModelMismatch(f"{dataset.uri} has {dataset.n_features} features but model {snapshot.name!r} "
                                    f"version {snapshot.version} has {snapshot.n_features}",
                                    field="input.columns", reason="FEATURE_MISMATCH")
            await work.run(runtime.workers.fits, output.prepare, request.overwrite)
            total, files = dataset.n_rows, len(dataset.partitions)
            yield codec.PredictDatasetProgress(0, total, 0, files, time.monotonic() - started)
            client = None if runtime.dask is None else await work.run(runtime.workers.fits, runtime.dask.client)
            summary = {"model": snapshot.name, "model_version": snapshot.version, "input": dataset.uri,
                       "distances": request.return_distances}
            steps = label_steps(client, dataset, snapshot.centers, metric=metric_of(snapshot),
                                return_distances=request.return_distances, output=output, summary=summary, stop=stop)
            run = StepRun(f"labels of {dataset.uri} by {snapshot.name}", steps, work, runtime.workers.fits,
                          runtime.fits, _no_iterations)
            async with contextlib.aclosing(run.events()) as events:
                async for event in events:
                    assert isinstance(event, Labelled)
                    yield codec.PredictDatasetProgress(event.rows_done, total, event.partitions_done, files,
                                                       time.monotonic() - started)
        finally:
            stop.set()
            work.after(slot.release)
        yield codec.PredictDatasetResult(snapshot.version, int(run.result), files, output.uri,
                                         time.monotonic() - started)


def _no_iterations() -> None:
    """Labelling counts no Lloyd iterations."""
