"""The code generation the engine sets up as it is imported: each case in a process of its own,
since numba's code generator reads the CPU features once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json
import llvmlite.binding as llvm
import centroidal.engine
from numba.core.registry import cpu_target
print(json.dumps({"used": cpu_target.target_context.codegen()._tm_features,
                  "host": llvm.get_host_cpu_features().flatten(),
                  "avx512": bool(llvm.get_host_cpu_features().get("avx512f"))}))
"""


def _features(**env: str) -> dict[str, object]:
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    found: dict[str, object] = json.loads(run.stdout)
    return found


def test_kernels_compile_for_512_bit_vectors_where_the_cpu_has_them() -> None:
    found = _features()
    if found["avx512"]:
        assert found["used"] == f"{found['host']},-prefer-256-bit"
    else:
        assert found["used"] == found["host"]


def test_features_named_in_numba_cpu_features_are_left_as_they_are() -> None:
    assert _features(NUMBA_CPU_FEATURES="+sse2,+avx")["used"] == "+sse2,+avx"


SETTLED = """
import json
import numpy as np
from numba.core.typing.typeof import typeof_impl
from centroidal.engine import configure_threads, predict
configure_threads()
before = sorted(map(repr, typeof_impl.registry))
predict(np.eye(2), np.eye(2))  # a process's first kernels, loaded from the cache or compiled
print(json.dumps({"before": before, "after": sorted(map(repr, typeof_impl.registry))}))
"""


def test_numbas_argument_types_are_all_registered_before_the_first_kernel() -> None:
    # Registered later, they raced a server's calls typing their arguments (engine/threads.py).
    run = subprocess.run([sys.executable, "-c", SETTLED], capture_output=True, text=True, check=True)
    found = json.loads(run.stdout)
    assert found["after"] == found["before"]
