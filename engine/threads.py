"""Threading set-up for the kernels, done once by ``configure_threads`` before the first fit.

The server and ``warmup`` call it explicitly at start; the engine's public entry
points (``fit``, ``predict``, ``NearestCenters``, ``MiniBatchState``) call it too, so
a program using the engine as a library is set up before its first kernel runs.
Importing the engine changes nothing.
"""

from __future__ import annotations

import os
import threading

import numba
import numpy as np
from numba import config, njit, prange

_done = False
_lock = threading.Lock()


def configure_threads() -> None:
    """Pick a thread-safe numba layer and run the BLAS called inside kernels single-threaded.

    - The default workqueue layer aborts the process when two threads enter a parallel
      region at once, which a server's worker threads do; "threadsafe" takes tbb or omp.
      A layer named in NUMBA_THREADING_LAYER is left as it is.
    - Kernels already use every core through numba's threads; a multi-threaded BLAS
      inside each of them would oversubscribe. numpy's own BLAS is left alone.

    Idempotent; takes effect for kernels that have not run yet.
    """
    global _done
    if _done:
        return
    with _lock:
        if _done:
            return
        if not os.environ.get("NUMBA_THREADING_LAYER"):
            config.THREADING_LAYER = "threadsafe"  # type: ignore[attr-defined]
        import scipy.linalg.cython_blas  # noqa: F401 - loads the BLAS numba calls
        from threadpoolctl import ThreadpoolController

        for library in ThreadpoolController().lib_controllers:
            if library.user_api == "blas" and "numpy" not in library.filepath:
                library.set_num_threads(1)
        _done = True


@njit(parallel=True, nogil=True, cache=True)
def _probe(out):  # pragma: no cover - compiled
    """The smallest parallel kernel: running it makes numba choose its threading layer."""
    for i in prange(out.shape[0]):
        out[i] = i


def threading_layer() -> str:
    """The threading layer numba uses for parallel kernels, found by running a tiny one.

    Cheap: it compiles (or loads from the cache) one small kernel, so a server can check
    the layer before it reports SERVING and compile everything else afterwards.
    """
    configure_threads()
    _probe(np.empty(4, dtype=np.int64))
    return str(numba.threading_layer())
