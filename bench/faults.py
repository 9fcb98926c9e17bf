"""`python -m bench.faults`: each fault of issue 10 against a real `centroidal serve`.

Every case starts its own server process on its own data directory and reports
what a user sees: status codes, exit codes, the first line of the refusal, and
for the memory cases the server's peak resident memory (VmHWM) above its idle
level. The disk-full and read-only cases need root and mount (a 32 MiB tmpfs, a
read-only bind mount); without them they are reported as not run.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from centroidal.client import CentroidalError, Client

MIB = 1024 * 1024
RESULTS: list[tuple[str, str]] = []


class Server:
    """A `centroidal serve` process; its log is kept."""

    def __init__(self, data_dir: Path, *flags: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "centroidal.client.cli", "serve", "--port", "0",
             "--data-dir", str(data_dir), *flags],
            stderr=subprocess.PIPE, text=True,
        )
        assert self.process.stderr is not None
        self.log: list[str] = []
        self.target = ""
        for line in self.process.stderr:
            self.log.append(line)
            found = re.search(r"centroidal listening on (\S+)", line)
            if found:
                self.target = found.group(1)
                break
        threading.Thread(target=lambda: self.log.extend(self.process.stderr), daemon=True).start()  # type: ignore[arg-type]

    @property
    def started(self) -> bool:
        return bool(self.target)

    def refusal(self) -> str:
        self.process.wait(60)
        lines = [line for line in self.log if "cannot start" in line]
        return lines[0].split("cannot start: ", 1)[1].strip() if lines else "".join(self.log[-3:]).strip()

    def peak_rss(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def rss(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(120)


def report(case: str, outcome: str) -> None:
    RESULTS.append((case, outcome))
    print(f"- {case}: {outcome}", flush=True)


def code(call: Callable[[], object]) -> str:
    try:
        call()
    except CentroidalError as error:
        return f"{error.code.name} {error.reason or ''}".strip()
    return "OK"


def blobs(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(scale=5, size=(8, d))[rng.integers(0, 8, n)] + rng.normal(size=(n, d))).astype(np.float32)


def mounted(kind: str, where: Path, source: Path | None = None) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if kind == "tmpfs":
        command = ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(where)]
    else:
        command = ["mount", "--bind", str(source), str(where)]
    if os.geteuid() != 0 or subprocess.run(command, capture_output=True).returncode != 0:
        return False
    if kind == "bind":
        subprocess.run(["mount", "-o", "remount,ro,bind", str(where)], check=True)
    return True


# ---- Cases -------------------------------------------------------------------------------


def disk_full(root: Path) -> None:
    disk = root / "disk"
    if not mounted("tmpfs", disk):
        report("disk full", "not run: needs root and mount for a small tmpfs")
        return
    try:
        server = Server(disk / "data", "--min-free-disk", "0", "--checkpoint-interval", "0.2", "--keep-versions", "2")
        with Client(server.target, timeout=60) as client:
            client.fit("kept", blobs(2000, 8), 4, seed=1)
            free = shutil.disk_usage(disk).free
            filler = disk / "filler"
            with open(filler, "wb") as handle:
                handle.write(b"\0" * max(0, free - 3 * MIB))
            stream = client.stream("s", n_clusters=512, seed=1, producer_id="p", reconnect_timeout=3)
            failure = "none"
            for seed in range(400):
                try:
                    stream.send(blobs(2000, 128, seed), timeout=30)
                    stream.flush(timeout=30)
                except CentroidalError as error:
                    failure = f"{error.code.name} {error.reason}"
                    break
            last = stream.last_ack
            report("disk full, streaming",
                   f"the producer got {failure} after batch {last.sequence if last else 0}; last ack "
                   f"version {last.version if last else 0}, durable {last.durable_version if last else 0}")
            report("disk full, reads", f"GetModel kept: {code(lambda: client.get_model('kept'))}, "
                   f"Predict: {code(lambda: client.predict('kept', blobs(5, 8)))}, health writes: "
                   f"{client.health('centroidal.writes')}, overall: {client.health()}")
            report("disk full, a fit", code(lambda: client.fit("big", blobs(5000, 256), 1024, max_iter=1)))
            report("disk full, close()", code(lambda: stream.close(timeout=30)))
            report("disk full, delete", code(lambda: client.delete_model("kept")))
            filler.unlink()
            time.sleep(5.2)
            closed = code(lambda: stream.close(timeout=60))
            model = client.get_model("s")
            report("disk freed, close() again",
                   f"{closed}; model version {model.version}, durable {model.durable_version}, "
                   f"{model.n_batches} batches = {stream.next_sequence - 1} sent")
        report("disk full, SIGTERM after recovery", f"exit {server.stop()}")
        server = Server(disk / "data", "--min-free-disk", "0", "--checkpoint-interval", "3600")
        with Client(server.target, timeout=60) as client:
            free = shutil.disk_usage(disk).free
            with open(disk / "filler", "wb") as handle:
                handle.write(b"\0" * max(0, free - 256 * 1024))
            stream = client.stream("unsaved", n_clusters=512, seed=1, reconnect_timeout=1)
            for seed in range(3):
                stream.send(blobs(2000, 128, seed))
            stream.flush(timeout=30)
            exit_code = server.stop()
            stream.abort()
        lines = [line.strip().split("centroidal.server ", 1)[-1] for line in server.log if "not stored" in line]
        report("SIGTERM with unsaved data on a full disk", f"exit {exit_code}; {' / '.join(lines[:2])}")
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def read_only(root: Path) -> None:
    source = root / "ro-source"
    server = Server(source)
    with Client(server.target, timeout=60) as client:
        client.fit("kept", blobs(500, 4), 3, seed=1)
    server.stop()
    view = root / "ro-view"
    if not mounted("bind", view, source):
        report("read-only data dir", "not run: needs root and mount for a read-only bind mount")
        return
    try:
        server = Server(view)
        with Client(server.target, timeout=60) as client:
            report("read-only data dir",
                   f"started; Predict {code(lambda: client.predict('kept', blobs(3, 4)))}, Fit "
                   f"{code(lambda: client.fit('new', blobs(100, 4), 2))}, Delete "
                   f"{code(lambda: client.delete_model('kept'))}, health writes "
                   f"{client.health('centroidal.writes')}")
        server.stop()
    finally:
        subprocess.run(["umount", str(view)], check=False)


def filled_store(data_dir: Path, count: int) -> None:
    server = Server(data_dir, "--no-warmup")
    with Client(server.target, timeout=60) as client:
        for index in range(count):
            client.fit(f"m{index:02d}", blobs(200, 8, index), 4, seed=1, max_iter=5)
    server.stop()


def byte_flips(root: Path) -> None:
    template = root / "flips-template"
    filled_store(template, 30)
    outcomes: dict[str, int] = {}
    example = ""
    for seed in range(20):
        data_dir = root / f"flips-{seed}"
        shutil.copytree(template, data_dir)
        path = data_dir / "models.sqlite3"
        data = bytearray(path.read_bytes())
        rng = np.random.default_rng(seed)
        for offset in rng.choice(np.arange(100, len(data)), size=10, replace=False):
            data[offset] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(data))
        server = Server(data_dir, "--no-warmup")
        if not server.started:
            outcomes["refused"] = outcomes.get("refused", 0) + 1
            example = example or server.refusal()[:160]
            continue
        with Client(server.target, timeout=60) as client:
            served = len(client.list_models())
        server.stop()
        outcomes[f"started with {served} models"] = outcomes.get(f"started with {served} models", 0) + 1
    report("10 flipped bytes, 20 stores of 30 models", f"{outcomes}; e.g. {example}")


def truncation(root: Path) -> None:
    data_dir = root / "truncated"
    filled_store(data_dir, 5)
    (data_dir / "models.sqlite3").write_bytes(b"")
    server = Server(data_dir, "--no-warmup")
    report("store truncated to 0 bytes", f"exit {server.process.wait(60)}: {server.refusal()[:160]}")


def wal_damage(root: Path) -> None:
    for damage in (False, True):
        data_dir = root / f"wal-{damage}"
        server = Server(data_dir, "--no-warmup")
        with Client(server.target, timeout=60) as client:
            for index in range(20):
                client.fit(f"w{index:02d}", blobs(200, 8, index), 4, seed=1, max_iter=5)
        server.stop(signal.SIGKILL)
        log = data_dir / "models.sqlite3-wal"
        size = log.stat().st_size
        if damage:
            data = bytearray(log.read_bytes())
            data[size // 2 : size // 2 + 64] = os.urandom(64)
            log.write_bytes(bytes(data))
        restarted = Server(data_dir, "--no-warmup")
        if restarted.started:
            with Client(restarted.target, timeout=60) as client:
                outcome = f"started with {len(client.list_models())} of 20 models"
            restarted.stop()
        else:
            outcome = f"exit {restarted.process.wait(60)}: {restarted.refusal()[:200]}"
        label = "64 random bytes in the middle of the WAL" if damage else "the WAL as kill -9 left it"
        report(f"kill -9 after 20 fits, {label} ({size} bytes)", outcome)


def two_servers(root: Path) -> None:
    first = Server(root / "shared", "--no-warmup")
    second = Server(root / "shared", "--no-warmup")
    report("two servers on one data dir", f"second: exit {second.process.wait(60)}: {second.refusal()[:160]}")
    first.stop()


def png(side: int) -> bytes:
    small = np.random.default_rng(0).integers(0, 255, (side // 100, side // 100, 3), dtype=np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(small).resize((side, side), Image.NEAREST).save(encoded, format="PNG")
    return encoded.getvalue()


def memory(root: Path) -> None:
    image = png(7000)
    for budget in ("1073741824", "4294967296"):
        server = Server(root / f"mem-image-{budget}", "--memory-budget", budget)
        idle = server.rss()
        with Client(server.target, timeout=300) as client:
            one = code(lambda: client.quantize_image(image, n_colors=8))
            after_one = server.peak_rss()
            outcomes: list[str] = []

            def quantize() -> None:
                with Client(server.target, timeout=300) as own:
                    outcomes.append(code(lambda: own.quantize_image(image, n_colors=8)))

            threads = [threading.Thread(target=quantize) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        report(f"7000x7000 PNG ({len(image) // 1024} KB), budget {int(budget) // MIB} MiB",
               f"one: {one}, peak +{(after_one - idle) / MIB:.0f} MiB; four at once: "
               f"{sorted(outcomes)}, peak +{(server.peak_rss() - idle) / MIB:.0f} MiB")
        server.stop()

    server = Server(root / "mem-upload", "--memory-budget", "1073741824")
    idle = server.rss()
    data = np.random.default_rng(0).normal(size=(3_200_000, 16))  # 391 MiB of float64
    outcomes = []

    def upload() -> None:
        with Client(server.target, timeout=600) as own:
            outcomes.append(code(lambda: own.fit(f"u{threading.get_ident()}", data, 8, max_iter=2, n_init=1)))

    threads = [threading.Thread(target=upload) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report("three clients fitting 391 MiB each, budget 1024 MiB",
           f"{sorted(outcomes)}; server peak +{(server.peak_rss() - idle) / MIB:.0f} MiB")
    server.stop()

    server = Server(root / "mem-models", "--memory-budget", str(64 * MIB))
    idle = server.rss()
    fitted = 0
    outcome = "OK"
    with Client(server.target, timeout=300) as client:
        for index in range(20):  # 8 MiB of centers each
            outcome = code(lambda: client.fit(f"big{index}", blobs(2100, 1024, index), 2048, max_iter=1, n_init=1,
                                              init="random"))
            if outcome != "OK":
                break
            fitted += 1
    report("models of 8 MiB of centers, budget 64 MiB",
           f"{fitted} stored, then {outcome}; server peak +{(server.peak_rss() - idle) / MIB:.0f} MiB")
    server.stop()


def main() -> int:
    print(f"faults on {os.cpu_count()} cores, uid {os.geteuid()}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for case in (two_servers, truncation, byte_flips, wal_damage, read_only, disk_full, memory):
            try:
                case(root)
            except Exception as exc:  # noqa: BLE001 - one case's failure is reported, the rest run
                report(case.__name__, f"the case itself failed: {exc!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
