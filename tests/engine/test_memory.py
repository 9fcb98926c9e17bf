"""A fit holds no hidden copy of X and no n x k matrix: what it allocates is its documented
workspace (``kmeans.working_bytes``), and its peak memory grows with n by that much.

Two measures, each honest about what it sees:
- numpy's own allocations, traced by tracemalloc, which the allocator and the machine do
  not change: their peak during a fit stays within ``working_bytes``;
- the process's peak RSS, which also holds fixed costs that do not grow with the data (the
  BLAS library's buffers, thread stacks: about 1.2 MB here, which was 5% of the earlier
  test's 26 MB input and made it fail on some machines). Fits of n and 2n rows in fresh
  processes cancel those: the growth per added byte of X must stay near the workspace's
  share (labels and bounds: 8 bytes a row of 64 here, 12.5%).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import ctypes, json, sys, tracemalloc

    import numpy as np
    from centroidal.engine import kmeans, warmup

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    warmup.compile_all()
    n, d, k = int(sys.argv[1]), 16, 64
    X = np.empty((n, d), dtype=np.float32)
    rng = np.random.default_rng(0)
    for start in range(0, n, 50_000):
        X[start:start + 50_000] = rng.normal(size=(min(50_000, n - start), d))
    traced = sys.argv[2] == "traced"
    if traced:
        tracemalloc.start()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap goes back, so reuse cannot hide growth
    with open("/proc/self/clear_refs", "w") as reset:
        reset.write("5")  # restart the peak-RSS count from here
    base = status("VmRSS")
    kmeans.fit(X, k, seed=0, max_iter=5, n_init=2)
    print(json.dumps({
        "x_bytes": X.nbytes,
        "rss_growth": status("VmHWM") - base,
        "traced_peak": tracemalloc.get_traced_memory()[1] if traced else 0,
        "working_bytes": kmeans.working_bytes(n, k, d, X.dtype),
    }))
    """
)


def _fit_memory(n_samples: int, mode: str) -> dict[str, int]:
    # A fixed mmap threshold: large buffers go back to the system when freed, so one
    # restart's freed buffers cannot be counted again, or hidden, by the next.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(n_samples), mode],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    figures: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def test_fit_allocates_no_more_than_its_working_bytes() -> None:
    figures = _fit_memory(400_000, "traced")
    assert 0 < figures["traced_peak"] <= figures["working_bytes"], figures
    # The workspace itself is small beside X: no copy of X, no n x k matrix.
    assert figures["working_bytes"] < 0.5 * figures["x_bytes"], figures


def test_fit_peak_memory_grows_with_n_by_its_workspace_only() -> None:
    small, large = _fit_memory(300_000, "rss"), _fit_memory(600_000, "rss")
    added = large["x_bytes"] - small["x_bytes"]
    growth = (large["rss_growth"] - small["rss_growth"]) / added
    # Labels and bounds are 8 of each row's 64 bytes; the rest of the workspace does not
    # grow with n. A copy of X would add 1.0, an n x k matrix 4.0.
    assert 0 < growth <= 0.16, f"peak memory grew by {growth:.1%} of each added byte of input"
