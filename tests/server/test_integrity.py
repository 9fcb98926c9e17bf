"""A damaged or shared store is refused with a clear message, never served altered.

Every case damages a real SQLite store the way the faults do: bytes flipped in
the file, the file truncated, garbage written into the write-ahead log of a store
whose process died, a row changed behind the checksum's back, and a second
server on the same directory.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from centroidal.client import Client, Unavailable
from centroidal.server import ServerConfig, create_server
from centroidal.server.exceptions import StoreDamaged
from centroidal.server.checks import backup, inspect
from centroidal.server.integrity import StoreLocked
from centroidal.server.store import SQLiteStore
from tests.server.test_store import snapshot

N_MODELS = 30


def fill(data_dir: Path, count: int = N_MODELS) -> dict[str, np.ndarray]:
    """A store with ``count`` models of distinct centers; returns them by name."""
    store = SQLiteStore(data_dir)
    kept = {}
    for index in range(count):
        model = snapshot(f"m{index:02d}", 1, float(index))
        model = type(model)(**{**model.__dict__, "centers": np.full((64, 16), index, np.float32)})
        store.put(model, keep_versions=5)
        kept[model.name] = model.centers
    store.close()
    return kept


def served_intact(data_dir: Path, kept: dict[str, np.ndarray]) -> bool:
    """Open the store; True when it opens with every model exactly as stored. Raises
    StoreDamaged when it refuses; fails the test when it would serve something altered."""
    store = SQLiteStore(data_dir)
    try:
        loaded = {snap.name: snap.centers for snap in store.load_all().current}
    finally:
        store.close()
    assert loaded.keys() == kept.keys(), "models went missing without an error"
    for name, centers in kept.items():
        np.testing.assert_array_equal(loaded[name], centers, err_msg=f"{name} served altered")
    return True


def test_a_second_server_on_the_same_directory_refuses_to_start(tmp_path: Path) -> None:
    first, _ = create_server(ServerConfig(port=0, data_dir=str(tmp_path), warmup=False))
    try:
        with pytest.raises(StoreLocked, match="in use by another centroidal server"):
            create_server(ServerConfig(port=0, data_dir=str(tmp_path), warmup=False))
        report = inspect(tmp_path)
        assert report.held_by is not None and not report.problems
    finally:
        first.stop(0)
    second, _ = create_server(ServerConfig(port=0, data_dir=str(tmp_path), warmup=False))
    second.stop(0)


def test_the_command_line_refuses_a_locked_directory_with_one_line(tmp_path: Path) -> None:
    holder = SQLiteStore(tmp_path)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "centroidal.server.cli", "--port", "0", "--data-dir", str(tmp_path),
             "--no-warmup"], capture_output=True, text=True, timeout=120,
        )
    finally:
        holder.close()
    assert result.returncode == 2
    assert "in use by another centroidal server" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("seed", range(6))
def test_flipped_bytes_are_refused_or_harmless(tmp_path: Path, seed: int) -> None:
    """Ten random flips, one of them always in a stored model's centers, so that every seed
    would serve altered data if the checks were off: the store must be refused."""
    kept = fill(tmp_path)
    path = tmp_path / "models.sqlite3"
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    # Model m00's centers are zeros, like unused space; the others' bytes are their own.
    target = kept[f"m{rng.integers(1, len(kept)):02d}"].tobytes()[:64]
    inside = data.find(target)
    assert inside > 0, "the centers are stored as their raw bytes"
    offsets = [inside + int(rng.integers(len(target)))]
    offsets += list(rng.choice(np.arange(100, len(data)), size=9, replace=False))
    for offset in offsets:
        data[offset] ^= 1 << int(rng.integers(0, 8))
    path.write_bytes(bytes(data))
    with pytest.raises(StoreDamaged) as refused:
        served_intact(tmp_path, kept)
    assert "centroidal store backup" in refused.value.message


def test_a_truncated_store_is_refused_not_started_empty(tmp_path: Path) -> None:
    fill(tmp_path)
    path = tmp_path / "models.sqlite3"
    path.write_bytes(b"")
    with pytest.raises(StoreDamaged, match="empty"):
        SQLiteStore(tmp_path)
    fill(tmp_path / "half")
    half = tmp_path / "half" / "models.sqlite3"
    half.write_bytes(half.read_bytes()[: half.stat().st_size // 2])
    with pytest.raises(StoreDamaged):
        SQLiteStore(tmp_path / "half")


def test_a_fresh_directory_still_starts_empty(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "new")
    assert store.load_all().current == []
    store.close()
    assert not list((tmp_path / "new").glob("*.new"))


def test_a_row_changed_behind_its_checksum_is_named(tmp_path: Path) -> None:
    kept = fill(tmp_path)
    db = sqlite3.connect(tmp_path / "models.sqlite3")
    altered = np.array(kept["m07"], copy=True)
    altered[3, 3] = 1e6
    db.execute("UPDATE versions SET centers = ? WHERE name = 'm07'", (altered.tobytes(),))
    db.commit()
    db.close()
    with pytest.raises(StoreDamaged, match="'m07'") as refused:
        SQLiteStore(tmp_path).load_all()
    assert "'m08'" not in refused.value.message
    report = inspect(tmp_path)
    assert report.damaged_models == ["m07"]


def crashed_copy(source: Path, target: Path, count: int) -> dict[str, np.ndarray]:
    """The files a store leaves when its process dies: the database and its unfolded log."""
    store = SQLiteStore(source)
    kept = {}
    for index in range(count):
        model = snapshot(f"w{index:02d}", 1, float(index))
        store.put(model, keep_versions=5)
        kept[model.name] = model.centers
    target.mkdir()
    for suffix in ("", "-wal", "-acked"):
        shutil.copy(source / f"models.sqlite3{suffix}", target / f"models.sqlite3{suffix}")
    store.close()
    return kept


def frames(log: Path) -> tuple[bytes, int, list[int]]:
    """The log's bytes, its frame size, and the offset of each whole frame."""
    data = log.read_bytes()
    size = 24 + int.from_bytes(data[8:12], "big")
    return data, size, list(range(32, len(data) - size + 1, size))


def is_commit(data: bytes, offset: int) -> bool:
    return int.from_bytes(data[offset + 4 : offset + 8], "big") != 0


@pytest.mark.parametrize("damage", ["flip a bit in the last commit frame", "cut the last commit frame"])
def test_damage_to_the_last_acknowledged_commit_is_refused(tmp_path: Path, damage: str) -> None:
    """SQLite drops a broken last commit as if a crash had torn it; but it was acknowledged
    (synchronous=FULL synced it), so it is damage, and refused like damage elsewhere."""
    crashed_copy(tmp_path / "live", tmp_path / "crashed", 20)
    log = tmp_path / "crashed" / "models.sqlite3-wal"
    data, size, offsets = frames(log)
    last = offsets[-1]
    assert is_commit(data, last)
    if damage.startswith("flip"):
        damaged = bytearray(data)
        damaged[last + 24 + size // 2] ^= 0x10
        log.write_bytes(bytes(damaged))
    else:
        log.write_bytes(data[: last + size // 3])
    with pytest.raises(StoreDamaged, match="acknowledged 20 commits in this log, but only 19 survive"):
        SQLiteStore(tmp_path / "crashed")
    assert log.stat().st_size in (len(data), last + size // 3), "the refused open changed the log"
    report = inspect(tmp_path / "crashed")
    assert any("1 acknowledged commit was lost" in problem for problem in report.problems), report
    check = subprocess.run([sys.executable, "-m", "centroidal.client.cli", "store", "check", "--data-dir",
                            str(tmp_path / "crashed")], capture_output=True, text=True, timeout=120)
    assert check.returncode == 1 and "DAMAGED" in check.stdout and "lost" in check.stdout, check.stdout
    # The way back the README gives: a backup keeps what survives, and a server starts on it.
    (tmp_path / "kept").mkdir()
    assert backup(tmp_path / "crashed", tmp_path / "kept" / "models.sqlite3") == 19
    store = SQLiteStore(tmp_path / "kept")
    assert len(store.load_all().current) == 19 and store.discarded is None
    store.close()


def test_a_write_cut_short_before_it_was_acknowledged_is_reported_not_silent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A power cut mid-write leaves frames of a transaction never acknowledged: SQLite drops
    them, rightly, and the server says so at start, in a metric and in store check."""
    kept = crashed_copy(tmp_path / "live", tmp_path / "crashed", 20)
    log = tmp_path / "crashed" / "models.sqlite3-wal"
    data, size, offsets = frames(log)
    torn = bytearray(data[offsets[-1] : offsets[-1] + size])  # a commit frame of this generation
    torn[24 + size // 2] ^= 0x10  # whose checksum fails: its transaction never completed
    log.write_bytes(data + bytes(torn) + bytes(torn[: size // 2]))
    report = inspect(tmp_path / "crashed")
    assert not report.problems and len(report.notes) == 1, report
    assert "1 frames after the last whole commit, 1 of them marked as a commit" in report.notes[0]
    assert "before it was acknowledged" in report.notes[0] and "every acknowledged commit (20)" in report.notes[0]
    check = subprocess.run([sys.executable, "-m", "centroidal.client.cli", "store", "check", "--data-dir",
                            str(tmp_path / "crashed")], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "note:" in check.stdout and "lost no acknowledged commit" in check.stdout
    caplog.set_level("WARNING", "centroidal.server")
    server, _ = create_server(ServerConfig(port=0, data_dir=str(tmp_path / "crashed"), warmup=False))
    try:
        assert server.metrics.store_log_discarded._value.get() == 2  # a whole frame and a cut one
        assert any("before it was acknowledged" in record.getMessage() for record in caplog.records)
    finally:
        server.stop(0)
    assert served_intact(tmp_path / "crashed", kept)


def test_a_log_left_by_a_crash_is_replayed_whole(tmp_path: Path) -> None:
    kept = crashed_copy(tmp_path / "live", tmp_path / "crashed", 20)
    assert (tmp_path / "crashed" / "models.sqlite3-wal").stat().st_size > 0
    assert served_intact(tmp_path / "crashed", kept)


@pytest.mark.parametrize("where", [0.3, 0.6, 0.0])
def test_garbage_in_the_log_is_refused_not_dropped(tmp_path: Path, where: float) -> None:
    crashed_copy(tmp_path / "live", tmp_path / "crashed", 20)
    log = tmp_path / "crashed" / "models.sqlite3-wal"
    data = bytearray(log.read_bytes())
    offset = 8 if where == 0.0 else int(len(data) * where)
    data[offset : offset + 64] = np.random.default_rng(1).bytes(64)
    log.write_bytes(bytes(data))
    with pytest.raises(StoreDamaged, match="write-ahead log"):
        SQLiteStore(tmp_path / "crashed")
    assert inspect(tmp_path / "crashed").problems


def test_store_check_and_backup_from_the_command_line(tmp_path: Path) -> None:
    kept = fill(tmp_path / "data", 5)
    holder = SQLiteStore(tmp_path / "data")  # a running server holds the directory
    try:
        command = [sys.executable, "-m", "centroidal.client.cli", "store"]
        check = subprocess.run([*command, "check", "--data-dir", str(tmp_path / "data")],
                               capture_output=True, text=True, timeout=120)
        assert check.returncode == 0, check.stderr
        assert "5 models" in check.stdout and "ok:" in check.stdout and "in use" in check.stdout
        backup = subprocess.run([*command, "backup", str(tmp_path / "copy"), "--data-dir", str(tmp_path / "data")],
                                capture_output=True, text=True, timeout=120)
        assert backup.returncode == 0, backup.stderr
    finally:
        holder.close()
    (tmp_path / "restored").mkdir()
    shutil.move(tmp_path / "copy", tmp_path / "restored" / "models.sqlite3")
    assert served_intact(tmp_path / "restored", kept)
    db = sqlite3.connect(tmp_path / "data" / "models.sqlite3")
    db.execute("UPDATE versions SET centers = zeroblob(length(centers)) WHERE name = 'm02'")
    db.commit()
    db.close()
    damaged = subprocess.run([*command, "check", "--data-dir", str(tmp_path / "data")],
                             capture_output=True, text=True, timeout=120)
    assert damaged.returncode == 1 and "'m02'" in damaged.stdout


def test_store_tools_take_relative_paths_and_the_default_data_dir(tmp_path: Path) -> None:
    kept = fill(tmp_path / "centroidal-data", 2)  # the default --data-dir, relative to the cwd
    command = [sys.executable, "-m", "centroidal.client.cli", "store"]
    env = {key: value for key, value in os.environ.items() if key != "CENTROIDAL_DATA_DIR"}
    check = subprocess.run([*command, "check"], capture_output=True, text=True, timeout=120,
                           cwd=tmp_path, env=env)
    assert check.returncode == 0 and "2 models" in check.stdout, check.stderr
    backup = subprocess.run([*command, "backup", "copy.sqlite3", "--data-dir", "./centroidal-data"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert backup.returncode == 0, backup.stderr
    (tmp_path / "restored").mkdir()
    shutil.move(tmp_path / "copy.sqlite3", tmp_path / "restored" / "models.sqlite3")
    assert served_intact(tmp_path / "restored", kept)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[tuple[Path, dict[str, np.ndarray]]]:
    """A data directory holding a store, made read-only for real: a read-only bind mount
    when running as root (root ignores permissions), its permissions otherwise."""
    source = tmp_path / "source"
    kept = fill(source, 3)
    if os.geteuid() != 0:
        source.chmod(0o555)
        yield source, kept
        source.chmod(0o755)
        return
    target = tmp_path / "mounted"
    target.mkdir()
    bound = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True, text=True)
    if bound.returncode != 0:
        pytest.skip(f"a read-only directory for root needs mount, which failed: {bound.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], check=True)
        yield target, kept
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_a_read_only_data_directory_serves_reads_and_refuses_writes(
    read_only_dir: tuple[Path, dict[str, np.ndarray]],
) -> None:
    data_dir, kept = read_only_dir
    server, port = create_server(ServerConfig(port=0, data_dir=str(data_dir), warmup=False))
    server.start()
    try:
        with Client(f"127.0.0.1:{port}", timeout=30) as client:
            assert {info.name for info in client.list_models()} == set(kept)
            np.testing.assert_array_equal(client.get_model("m01", include_centers=True).centers, kept["m01"])
            assert client.predict("m01", np.zeros((2, 16), np.float32)).shape == (2,)
            with pytest.raises(Unavailable) as refused:
                client.fit("new", np.random.default_rng(0).normal(size=(50, 2)), 2)
            assert refused.value.reason == "STORE_READ_ONLY" and "read-only" in refused.value.message
            with pytest.raises(Unavailable):
                client.delete_model("m01")
            with pytest.raises(Unavailable):
                with client.stream("s", n_clusters=2, reconnect_timeout=0.5) as stream:
                    stream.send(np.zeros((10, 2)))
            assert client.health() == "SERVING"
            assert client.health("centroidal.writes") == "NOT_SERVING"
    finally:
        server.stop(0)
