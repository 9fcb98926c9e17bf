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
