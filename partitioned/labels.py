"""Labelling a whole dataset into files: one task per partition, each writing its own
Parquet file, on a Dask cluster or here a partition at a time; then the summary."""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from centroidal.sources import Dataset, OutputDir

from . import tasks
from .partitions import Partitions


@dataclass(frozen=True)
class Labelled:
    """Progress of a labelling: rows and partitions written so far."""

    rows_done: int
    partitions_done: int

    @property
    def skippable(self) -> bool:
        return True


def label_steps(client: Any | None, dataset: Dataset, centers: np.ndarray, *, metric: str,
                return_distances: bool, output: OutputDir, summary: dict[str, Any],
                stop: threading.Event | None = None) -> Generator[Labelled, None, int]:
    """Write every partition's labels by the model of ``centers`` and ``metric`` into
    ``output``, then ``_SUCCESS`` holding ``summary`` and the counts; yields after each
    partition, returns the rows written. ``client`` None runs here, one partition at a time,
    so memory holds one partition. The rows are read as they are (a cosine model scales
    them, as Predict does)."""
    arguments = (centers, metric, return_distances, output, f"{dataset.field}.uri")
    rows = done = 0
    if client is None:
        for partition in dataset.partitions:
            rows += tasks.label(tasks.piece_ref(dataset, partition, False), *arguments)
            done += 1
            yield Labelled(rows, done)
    else:
        partitions = Partitions(client, dataset, False, persist=False, stop=stop)
        for written in partitions.as_done(partitions.each(tasks.label, *arguments)):
            rows += written
            done += 1
            yield Labelled(rows, done)
    output.write_summary({**summary, "rows": rows, "files": done})
    return rows
