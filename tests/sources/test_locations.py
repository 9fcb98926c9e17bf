"""Where a dataset may be read from: only under the operator's roots, with no path tricks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from centroidal.sources import DatasetInvalid, DatasetMissing, DatasetRefused, Roots, find_files, open_dataset


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    (folder / "points").mkdir(parents=True)
    for index in range(3):
        np.save(folder / "points" / f"part-{index}.npy", np.full((4, 2), index, dtype=np.float32))
    (tmp_path / "secret").mkdir()
    np.save(tmp_path / "secret" / "other.npy", np.zeros((4, 2), dtype=np.float32))
    return folder


def test_a_file_a_directory_and_a_glob_name_their_files_in_path_order(root: Path) -> None:
    roots = Roots([str(root)])
    one = find_files(f"file://{root}/points/part-1.npy", roots, (".npy",), "source.uri")
    assert [file.name for file in one] == ["part-1.npy"]
    folder = find_files(str(root / "points"), roots, (".npy",), "source.uri")
    matched = find_files(str(root / "points" / "part-*.npy"), roots, (".npy",), "source.uri")
    assert [file.name for file in folder] == [file.name for file in matched] == [
        "part-0.npy", "part-1.npy", "part-2.npy"]


@pytest.mark.parametrize("uri", [
    "{tmp}/secret/other.npy",           # another directory
    "{root}/../secret/other.npy",       # climbing out
    "{root}/points/./part-0.npy",       # dot segments are refused outright
    "file://{root}/../secret/other.npy",
    "{tmp}/*/other.npy",                # a glob that starts outside
    "{root}-sibling/x.npy",             # a prefix of the root's name is not the root
    "memory::{root}/points/part-0.npy",  # chained filesystems
    "memory://{root}/points/part-0.npy",  # another filesystem than the root's
])
def test_paths_outside_the_roots_are_refused_before_anything_is_read(root: Path, uri: str) -> None:
    uri = uri.format(root=root, tmp=root.parent)
    with pytest.raises(DatasetRefused) as refused:
        open_dataset(uri, Roots([str(root)]), format="npy")
    assert refused.value.field == "source.uri"


def test_symlinks_out_of_the_root_are_refused_whether_file_or_directory(root: Path) -> None:
    outside = root.parent / "secret"
    os.symlink(outside / "other.npy", root / "points" / "link.npy")
    os.symlink(outside, root / "linked-dir")
    roots = Roots([str(root)])
    for uri in (root / "points" / "link.npy", root / "points", root / "linked-dir" / "other.npy",
                root / "linked-dir"):
        with pytest.raises(DatasetRefused, match="resolves to .*outside the root"):
            find_files(str(uri), roots, (".npy",), "source.uri")


def test_a_symlink_that_stays_inside_the_root_is_followed(root: Path) -> None:
    os.symlink(root / "points" / "part-2.npy", root / "alias.npy")
    dataset = open_dataset(str(root / "alias.npy"), Roots([str(root)]))
    assert dataset.n_rows == 4


def test_a_file_swapped_for_a_symlink_after_it_was_found_is_refused_when_opened(root: Path) -> None:
    dataset = open_dataset(str(root / "points" / "part-0.npy"), Roots([str(root)]))
    target = root / "points" / "part-0.npy"
    target.unlink()
    os.symlink(root.parent / "secret" / "other.npy", target)
    with pytest.raises(DatasetRefused, match="outside the root"):
        dataset.files[0].open("source.uri")


@pytest.mark.parametrize("uri, message", [
    ("relative/points.npy", "must be an absolute path"),
    ("file://host/points.npy", "three slashes"),
    ("", "is empty"),
])
def test_malformed_uris_are_invalid(root: Path, uri: str, message: str) -> None:
    with pytest.raises(DatasetInvalid, match=message):
        open_dataset(uri, Roots([str(root)]), format="npy")


def test_no_roots_means_no_datasets(root: Path) -> None:
    with pytest.raises(DatasetRefused, match="allows no --dataset-root"):
        open_dataset(str(root / "points"), Roots([]), format="npy")


def test_nothing_matching_is_missing_not_refused(root: Path) -> None:
    with pytest.raises(DatasetMissing, match="matches no .npy file"):
        open_dataset(str(root / "points" / "none-*.npy"), Roots([str(root)]))


def test_a_root_that_is_not_a_directory_is_refused_at_configuration(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a directory"):
        Roots([str(tmp_path / "missing")])


def test_other_filesystems_are_held_to_their_root_by_path() -> None:
    import fsspec

    memory = fsspec.filesystem("memory")
    for name in ("bucket/points/a.npy", "bucket/private/b.npy"):
        with memory.open(name, "wb") as handle:
            np.save(handle, np.ones((3, 2), dtype=np.float64))
    roots = Roots(["memory://bucket/points"])
    dataset = open_dataset("memory://bucket/points/*.npy", roots)
    assert dataset.n_rows == 3 and dataset.files[0].uri == "memory://bucket/points/a.npy"
    for uri in ("memory://bucket/private/b.npy", "memory://bucket/points/../private/b.npy"):
        with pytest.raises(DatasetRefused):
            open_dataset(uri, roots)
