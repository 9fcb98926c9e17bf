"""A fit holds no hidden copy of X and no n x k matrix: peak memory stays near the input's size."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import ctypes

    import numpy as np
    from centroidal.engine import kmeans

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    kmeans.warmup()
    n, d, k = 400_000, 16, 64
    X = np.empty((n, d), dtype=np.float32)
    rng = np.random.default_rng(0)
    for start in range(0, n, 50_000):
        X[start:start + 50_000] = rng.normal(size=(50_000, d))
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap goes back, so reuse cannot hide growth
    with open("/proc/self/clear_refs", "w") as reset:
        reset.write("5")  # restart the peak-RSS count from here
    base = status("VmRSS")
    kmeans.fit(X, k, seed=0, max_iter=5, n_init=2)
    print((status("VmHWM") - base) / X.nbytes)
    """
)


def test_fit_peak_memory_grows_at_most_a_fifth_of_the_input() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    growth = float(done.stdout.strip().splitlines()[-1])
    assert 0 < growth <= 0.20, f"peak memory grew by {growth:.1%} of the input"
