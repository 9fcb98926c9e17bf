"""Threading and code generation set-up for the kernels, done once by ``configure_threads``
before the first fit, with numba's own lazy set-up done on one thread.

The server and ``warmup`` call it explicitly at start; the engine's public entry
points (``fit``, ``predict``, ``NearestCenters``, ``MiniBatchState``) call it too, so
a program using the engine as a library is set up before its first kernel runs.
Importing the engine only chooses the vector width numba compiles for (``prefer_wide_vectors``).
"""

from __future__ import annotations

import threading

from numba import config

_done = False
_lock = threading.Lock()


def prefer_wide_vectors() -> None:
    """Have numba compile for 512-bit vectors on a CPU with AVX-512, unless NUMBA_CPU_FEATURES
    names the features. Called as the engine is imported, before its first kernel definition
    makes numba's code generator, which reads the features once; in a process where other
    code compiled first it changes nothing.

    LLVM's tuning for many Intel CPUs with AVX-512 keeps loops to 256-bit vectors, for CPUs
    that lowered their clock under 512-bit work. Our scans hold more vector constants than
    16 registers: with 256-bit vectors they spill and reload, and with 512-bit ones each
    vector holds twice the rows. On a Xeon (Emerald Rapids) here, labelling 1e6x16 rows at
    k=64 on one thread ran at 37-41 GFLOP/s against 25-27 (numpy's GEMM: 87-91), with the
    same labels. AMD's tuning already prefers 512 bits where it has them. The vector width
    changes no result: lanes are rows, and the scans do not reassociate. Numba's cache keys
    its entries by the features, so kernels cached without them compile again.
    """
    if config.CPU_FEATURES is None:  # type: ignore[attr-defined]
        config.CPU_FEATURES = _wide_vector_features()  # type: ignore[attr-defined]


def _wide_vector_features() -> str | None:
    """The host's CPU features for LLVM with 512-bit vectors preferred, where it has
    AVX-512; None (numba's default, the host's) elsewhere."""
    import llvmlite.binding as llvm

    try:
        features = llvm.get_host_cpu_features()
    except RuntimeError:  # no way to ask: leave numba's default
        return None
    if not features.get("avx512f") or not config.ENABLE_AVX:  # type: ignore[attr-defined]
        return None
    return f"{features.flatten()},-prefer-256-bit"


# As the engine is imported: before its first kernel definition makes numba's code generator.
prefer_wide_vectors()


def configure_threads() -> None:
    """Run the BLAS called inside kernels single-threaded: the kernels already use every
    core (``chunks.run``), and a multi-threaded BLAS inside each of them would oversubscribe.
    numpy's own BLAS is left alone. Then do numba's lazy set-up (``set_up_numba``).

    Idempotent; takes effect for kernels that have not run yet.
    """
    global _done
    if _done:
        return
    with _lock:
        if _done:
            return
        import scipy.linalg.cython_blas  # noqa: F401 - loads the BLAS numba calls
        from threadpoolctl import ThreadpoolController

        for library in ThreadpoolController().lib_controllers:
            if library.user_api == "blas" and "numpy" not in library.filepath:
                library.set_num_threads(1)
        set_up_numba()
        _done = True


def set_up_numba() -> None:
    """Do now, on this thread, the set-up numba does lazily as a process first compiles or
    loads a kernel: it imports its extensions (its own, and those other packages declare,
    such as ``sparse``), which register the types of their arguments.

    Numba works out a call's argument types outside its compiler lock, through a registry
    (``functools.singledispatch``) that is not safe to change while another thread reads it.
    Left lazy, a server's first calls raced its warm-up: a Fit failed with "dictionary
    changed size during iteration" as the warm-up's first kernel load registered types.
    Costs about 0.7 s once, which the first kernel would otherwise pay.
    """
    from numba.core import entrypoints
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.registry import cpu_target

    with global_compiler_lock:  # as numba itself refreshes: no compilation runs meanwhile
        entrypoints.init_all()
        cpu_target.target_context.refresh()
