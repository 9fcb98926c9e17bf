"""A dataset fed into a streamed model from the producer's side (`centroidal stream --source`).

The batches are fixed by the dataset and the batch size alone: each partition (a run of
Parquet row groups, or of .npy rows) is cut into batches of ``batch_size`` rows, and batch i
of the whole dataset carries sequence ``first_sequence + i``. A producer that crashed runs
again with the same arguments: its producer id is derived from them, so the server takes
each batch once, and with a resume file it starts after the last batch the server had made
durable, without reading the partitions before it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Batch:
    index: int  # in the whole dataset, from 0
    points: np.ndarray
    sample_weight: np.ndarray | None


class DatasetBatches:
    """The batches of a dataset the producer reads itself (any path or fsspec URL: the
    producer's own files, so no roots apply)."""

    def __init__(self, uri: str, batch_size: int, *, columns: tuple[str, ...] = (), format: str = "",
                 weight_column: str = "") -> None:
        from centroidal.sources import DatasetError, Roots, open_dataset

        if batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
        try:
            self.dataset = open_dataset(uri, Roots.unrestricted(), format=format, columns=columns,
                                        weight_column=weight_column, field="source")
        except DatasetError as exc:
            raise ValueError(str(exc)) from None
        self.batch_size = batch_size
        self.per_partition = [math.ceil(partition.rows / batch_size) for partition in self.dataset.partitions]
        self.total = sum(self.per_partition)

    @property
    def n_rows(self) -> int:
        return self.dataset.n_rows

    def identity(self) -> str:
        """What fixes the batches: the dataset's files and columns, and the batch size."""
        dataset = self.dataset
        described = json.dumps([dataset.format, list(dataset.columns), dataset.weight_column,
                                [file.uri for file in dataset.files], dataset.n_rows, self.batch_size])
        return hashlib.sha256(described.encode()).hexdigest()[:16]

    def rows_before(self, index: int) -> int:
        """Rows in the batches before batch ``index``."""
        rows = 0
        for partition, count in zip(self.dataset.partitions, self.per_partition):
            if index >= count:
                rows, index = rows + partition.rows, index - count
                continue
            return rows + index * self.batch_size
        return rows

    def batches(self, start: int = 0) -> Iterator[Batch]:
        """Batch ``start`` and every one after it; partitions before it are not read."""
        from centroidal.sources import DatasetError, read_rows

        index = 0
        for partition, count in zip(self.dataset.partitions, self.per_partition):
            if index + count <= start:
                index += count
                continue
            try:
                points, weights = read_rows(self.dataset, partition)
            except DatasetError as exc:
                raise ValueError(str(exc)) from None
            for offset in range(0, partition.rows, self.batch_size):
                if index >= start:
                    stop = offset + self.batch_size
                    yield Batch(index, points[offset:stop], None if weights is None else weights[offset:stop])
                index += 1


class ResumeFile:
    """Where a producer keeps the last sequence the server made durable, for the run that
    follows a crash; written whole each time (a temporary file renamed into place)."""

    def __init__(self, path: str, run: dict[str, Any]) -> None:
        self.path = path
        self.run = run

    def durable_sequence(self) -> int:
        """The sequence a previous run of the same producer reached; 0 when there was none."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                saved = json.load(handle)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            raise ValueError(f"--resume-file {self.path} cannot be read: {exc}") from None
        if saved.get("run") != self.run:
            raise ValueError(f"--resume-file {self.path} belongs to another run ({saved.get('run')}); "
                             "remove it, or give another file")
        return int(saved["durable_sequence"])

    def save(self, durable_sequence: int) -> None:
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump({"run": self.run, "durable_sequence": durable_sequence}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)


@dataclass
class Feed:
    """What `centroidal stream` sends: batches of (points, weights), from batch ``start`` on."""

    batches: Iterator[tuple[np.ndarray, np.ndarray | None]]
    rows: int
    producer_id: str | None
    rows_before: Callable[[int], int]
    start: int = 0
    resume: ResumeFile | None = None


def file_feed(points: np.ndarray, size: int, producer_id: str | None) -> Feed:
    """A file's rows, in batches of ``size``."""
    rows = points.shape[0]
    return Feed(((points[start : start + size], None) for start in range(0, rows, size)), rows, producer_id,
                lambda batches: min(rows, batches * size))


def dataset_feed(dataset: DatasetBatches, model: str, producer_id: str | None, first_sequence: int,
                 resume_file: str, dtype: str | None) -> Feed:
    """A dataset's batches, as the producer derived from them (unless ``producer_id`` names
    another), from after the last durable one a ``resume_file`` records."""
    producer_id = producer_id or f"dataset-{dataset.identity()}"
    feed = Feed(iter(()), dataset.n_rows, producer_id, dataset.rows_before)
    if resume_file:
        run = {"model": model, "producer_id": producer_id, "dataset": dataset.identity(),
               "first_sequence": first_sequence}
        feed.resume = ResumeFile(resume_file, run)
        feed.start = max(0, feed.resume.durable_sequence() - first_sequence + 1)
    cast = np.dtype(dtype) if dtype else None
    feed.batches = ((batch.points if cast is None else batch.points.astype(cast), batch.sample_weight)
                    for batch in dataset.batches(feed.start))
    return feed
