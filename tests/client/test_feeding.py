"""A dataset cut into a stream's batches from the producer's side: fixed by the dataset and
the batch size alone, resumable from the last durable batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from centroidal.client.feeding import DatasetBatches, ResumeFile
from tests.sources.datasets import blobs, split_parquet


def test_batches_are_cut_per_partition_and_cover_every_row_once(tmp_path: Path) -> None:
    X = blobs(2500, 3)
    weights = np.arange(2500, dtype=np.float64)
    split_parquet(tmp_path, X, 2, weights=weights, row_group_size=400)
    batches = DatasetBatches(str(tmp_path), 300, format="parquet", weight_column="w")
    everything = list(batches.batches())
    assert [batch.index for batch in everything] == list(range(batches.total))
    # No batch straddles a partition, so the last batch of each may be short.
    assert batches.total == sum(-(-partition.rows // 300) for partition in batches.dataset.partitions)
    np.testing.assert_array_equal(np.concatenate([batch.points for batch in everything]), X)
    np.testing.assert_array_equal(np.concatenate([batch.sample_weight for batch in everything]), weights)
    later = list(batches.batches(5))
    assert [batch.index for batch in later] == list(range(5, batches.total))
    assert batches.rows_before(5) == sum(batch.points.shape[0] for batch in everything[:5])
    np.testing.assert_array_equal(later[0].points, everything[5].points)


def test_the_identity_changes_with_what_fixes_the_batches(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", blobs(100, 2))
    one = DatasetBatches(str(tmp_path / "x.npy"), 10)
    assert one.identity() == DatasetBatches(f"file://{tmp_path}/x.npy", 10).identity()
    assert one.identity() != DatasetBatches(str(tmp_path / "x.npy"), 20).identity()
    assert one.identity() != DatasetBatches(str(tmp_path / "x.npy"), 10, columns=("1",)).identity()


def test_a_resume_file_is_kept_for_its_own_run_only(tmp_path: Path) -> None:
    path = str(tmp_path / "resume.json")
    run = {"model": "m", "producer_id": "p", "dataset": "abc", "first_sequence": 1}
    resume = ResumeFile(path, run)
    assert resume.durable_sequence() == 0
    resume.save(17)
    assert ResumeFile(path, dict(run)).durable_sequence() == 17
    assert json.loads(Path(path).read_text())["durable_sequence"] == 17
    with pytest.raises(ValueError, match="belongs to another run"):
        ResumeFile(path, {**run, "model": "other"}).durable_sequence()
