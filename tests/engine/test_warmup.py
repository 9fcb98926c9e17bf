"""The warm-up compiles every kernel the engine has, so neither a server's first calls nor a
container built with it waits for a compilation."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from centroidal.engine import warmup
from centroidal.engine.validation import FLOAT_DTYPES

SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil
    from numba.core.registry import CPUDispatcher
    import centroidal.engine
    from centroidal.engine import _nearest, warmup

    warmup.compile_all()
    # The tile groups' own calls compile the signatures every caller uses: one per dtype.
    for scan in (_nearest.tile_nearest, _nearest._put_labels, _nearest._wide_sq_norms,
                 _nearest._scan_nearest, _nearest._narrow_sq_norms, _nearest._scan_direct):
        assert len(scan.signatures) == 2, scan.signatures
    missing = []
    for module in pkgutil.iter_modules(centroidal.engine.__path__):
        loaded = importlib.import_module(f"centroidal.engine.{module.name}")
        for name, value in vars(loaded).items():
            if (isinstance(value, CPUDispatcher) and value.__module__ == loaded.__name__
                    and value.targetoptions.get("inline") != "always" and not value.signatures):
                missing.append(f"{module.name}.{name}")
    print(missing)
    """
)


@pytest.mark.slow
def test_warmup_compiles_every_kernel(tmp_path: Path) -> None:
    # A process of its own with an empty kernel cache: kernels this session compiled, or
    # kernels loaded whole from the cache with their callees inside, would hide a gap.
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


HELPED = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    from numba.core.registry import CPUDispatcher
    import centroidal.engine
    from centroidal.engine import warmup

    if sys.argv[1] == "helpers":
        assert warmup.cache_is_cold()
        names = [name for _, _, name in warmup.steps(helpers=2)]  # in the order they finished
        assert sorted(names) == sorted(warmup.group_names()), names
        assert not warmup.cache_is_cold()
    else:
        warmup.compile_all()
        misses = []
        for module in pkgutil.iter_modules(centroidal.engine.__path__):
            loaded = importlib.import_module(f"centroidal.engine.{module.name}")
            for name, value in vars(loaded).items():
                if isinstance(value, CPUDispatcher) and value.__module__ == loaded.__name__:
                    misses += [f"{module.name}.{name}{signature}" for signature, count
                               in value.stats.cache_misses.items() if count]
        print(misses)
    """
)


@pytest.mark.slow
def test_helper_processes_leave_every_kernel_in_the_cache(tmp_path: Path) -> None:
    """From an empty cache, the warm-up's helper processes compile every group; a process
    that then compiles everything finds every kernel there and compiles none."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    helped = subprocess.run([sys.executable, "-c", HELPED, "helpers"], capture_output=True, text=True, env=env)
    assert helped.returncode == 0, helped.stderr
    after = subprocess.run([sys.executable, "-c", HELPED, "after"], capture_output=True, text=True, env=env)
    assert after.returncode == 0, after.stderr
    assert after.stdout.strip().splitlines()[-1] == "[]"


STALE = textwrap.dedent(
    """
    import pickle
    import numpy as np
    from centroidal.engine import _lloyd, warmup

    assert warmup.cache_is_cold()  # an empty cache directory
    X = np.zeros((4, 2), dtype=np.float32)
    X.setflags(write=False)
    _lloyd.assign(0, 1, X, X[:2].copy(), np.zeros(2, np.float32), np.empty(4, np.int32), np.empty(0))
    assert not warmup.cache_is_cold()
    # The index as an earlier version of the module left it: another source stamp.
    path = _lloyd.assign._cache._cache_file._index_path
    with open(path, "rb") as index:
        version = pickle.load(index)
        stamp, overloads = pickle.loads(index.read())
    with open(path, "wb") as index:
        pickle.dump(version, index)
        index.write(pickle.dumps(((0.0, 0), overloads)))
    print(warmup.cache_is_cold())
    """
)


def test_a_cache_left_by_other_code_is_cold(tmp_path: Path) -> None:
    # After an upgrade numba ignores the old entries, so the server compiles every kernel:
    # in helper processes, as from an empty cache, not on its own core in the background.
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", STALE], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "True"


def test_groups_follow_earlier_groups_and_calls_wait_for_groups_that_exist() -> None:
    groups = warmup._groups()
    names = [group.name for group in groups]
    assert len(set(names)) == len(names)
    for position, group in enumerate(groups):
        assert set(group.after) <= set(names[:position]), group
    for dtype in FLOAT_DTYPES:
        for fit in (False, True):
            assert set(warmup.groups_for(dtype, fit)) <= set(names)
    with pytest.raises(ValueError, match="scoring float32"):
        warmup._Helpers([groups[0], warmup.Group("scoring float32", print, ("nothing earlier",))], 2)


def test_helpers_take_a_group_only_after_the_groups_it_follows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two real helper processes and an empty cache; the quick group follows the slow one, so
    # without the wait the quick one would be reported first by the other process.
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    groups = {group.name: group for group in warmup._groups()}
    slow, quick = groups["seeding float32"], groups["bound groups"]
    helpers = warmup._Helpers([slow, quick._replace(after=(slow.name,))], 2)
    try:
        reported = [helpers.next(None) for _ in range(2)]
    finally:
        helpers.stop()
    assert reported == [slow.name, quick.name]


def test_groups_of_helpers_that_die_are_left_to_the_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    groups = warmup._groups()
    helpers = warmup._Helpers(groups[:3], 2)
    give_up = threading.Timer(30, (stopping := threading.Event()).set)
    give_up.start()
    try:
        for process in helpers._processes:
            process.kill()
        reported = [helpers.next(stopping) for _ in range(3)]
    finally:
        give_up.cancel()
        helpers.stop()
    assert sorted(map(str, reported)) == sorted(group.name for group in groups[:3])
