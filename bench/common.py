"""Timing, GEMM peak, and the result table shared by the benchmark suites."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


@dataclass
class Row:
    """One comparison: our time against the reference's on the same work."""

    name: str
    ours_s: float
    reference: str
    reference_s: float
    flops: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.ours_s / self.reference_s

    def to_json(self) -> dict[str, object]:
        record = {key: value for key, value in asdict(self).items() if key not in ("flops", "extra")}
        record["ratio"] = self.ratio
        record.update(self.extra)
        return record


def median_time(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``run`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_producers(produce: Callable[[int], object], count: int, opened: threading.Barrier) -> float:
    """Seconds from when ``count`` producers, ``produce(index)`` each in a thread of its own, have
    all reached ``opened`` (a barrier of count + 1: theirs and this one) until the last returns;
    the span every stream row times, ours and the floor's alike."""
    threads = [threading.Thread(target=produce, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    opened.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began


def medians_taking_turns(work: dict[str, Callable[[], object]], warmup: int, rounds: int = 5) -> dict[str, float]:
    """Each entry of ``work`` run ``warmup`` times untimed (pages, caches, kernels), then
    timed ``rounds`` times, the entries taking turns so that a noisy stretch of the machine
    hits each alike; the median seconds of each."""
    for _ in range(warmup):
        for run in work.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in work}
    for _ in range(rounds):
        for name, run in work.items():
            began = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - began)
    return {name: float(np.median(found)) for name, found in times.items()}


def gemm_peak_gflops(dtype: type = np.float32, size: int = 2048) -> float:
    """float GEMM rate numpy's BLAS reaches on this machine right now, in GFLOP/s."""
    a = np.random.default_rng(0).random((size, size)).astype(dtype)
    seconds = median_time(lambda: a @ a, repeats=5)
    return 2 * size**3 / seconds / 1e9


def machine() -> dict[str, object]:
    import os

    import numba
    import sklearn

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "scikit-learn": sklearn.__version__,
        "numba_threads": numba.get_num_threads(),
    }


def print_table(rows: list[Row], peak: float) -> None:
    header = f"{'benchmark':<44} {'ours':>9} {'reference':>26} {'ratio':>6} {'GFLOP/s':>8} {'%peak':>6}"
    print(header)
    print("-" * len(header))
    for row in rows:
        rate = row.flops / row.ours_s / 1e9 if row.flops else float("nan")
        share = f"{100 * rate / peak:5.0f}%" if row.flops else "     -"
        gflops = f"{rate:8.1f}" if row.flops else "       -"
        reference = f"{row.reference} {_fmt(row.reference_s)}"
        print(f"{row.name:<44} {_fmt(row.ours_s):>9} {reference:>26} {row.ratio:6.2f} {gflops} {share}"
              f"{_note(row)}")


def _note(row: Row) -> str:
    """The share of distances the bounds skipped, and how the steps that pruned compare."""
    if row.reference != "sklearn" or "distances_skipped_mean" not in row.extra:
        return ""
    note = f"  skipped {float(row.extra['distances_skipped_mean']):.0%}"  # type: ignore[arg-type]
    if "pruned_step_ratio" in row.extra:
        ratio = float(row.extra["pruned_step_ratio"])  # type: ignore[arg-type]
        note += f"; its {row.extra['pruned_steps']} pruned steps {ratio:.2f}x"
    return note


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f}ms"
    return f"{seconds:.2f}s"


def write_results(rows: list[Row], meta: dict[str, object]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps([row.to_json() for row in rows], indent=2) + "\n")
    (RESULTS.parent / "machine.json").write_text(json.dumps(meta, indent=2) + "\n")


def warm_address(log: Iterable[str], seen: list[str] | None = None) -> str | None:
    """Read a starting `centroidal serve`'s log lines (each kept in ``seen``, if given) until
    it listens and its warm-up has compiled (or loaded) every kernel, in either order; its
    address, or None if the log ended first."""
    found, warm = None, False
    for line in log:
        if seen is not None:
            seen.append(line)
        warm = warm or "warm-up done" in line
        found = found or re.search(r"centroidal listening on (\S+)", line)
        if found and warm:
            return found.group(1)
    return None


@contextmanager
def served(pythonpath: str | None = None) -> Iterator[str]:
    """A `centroidal serve` subprocess on a free port; yields its address once the server
    has compiled (or loaded) every kernel: its warm-up runs in the background, and a
    measurement taken meanwhile would time the warm-up's loading with it.

    pythonpath, when given, is put first on the child's path: another tree's server (one
    that warmed up before it listened, as older trees did, is ready at once).
    """
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    with tempfile.TemporaryDirectory() as data_dir:
        child = subprocess.Popen(
            [sys.executable, "-m", "centroidal.client.cli", "serve", "--port", "0",
             "--data-dir", data_dir],
            stderr=subprocess.PIPE, text=True, env=env,
        )
        assert child.stderr is not None
        try:
            address = warm_address(child.stderr)
            if address is None:
                raise RuntimeError("server exited before serving and warming up")
            threading.Thread(target=child.stderr.read, daemon=True).start()  # keep the pipe drained
            yield address
        finally:
            child.terminate()
            child.wait(60)
