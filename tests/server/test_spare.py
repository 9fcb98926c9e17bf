"""The spare rows array: an ended Fit's upload array, taken by the next upload that fills it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest

from centroidal.client import Client
from centroidal.engine import kmeans
from centroidal.server import memory
from centroidal.server.spare import MIN_BYTES, SpareRows
from tests.conftest import ServerFactory

ROWS = (MIN_BYTES // (16 * 8) + 1, 16)  # float64 rows just past the size worth keeping


@dataclass
class Holder:
    points: np.ndarray


def test_the_rows_of_an_ended_call_are_kept_and_taken_by_the_next_upload() -> None:
    spare = SpareRows()
    first = spare.take(ROWS, np.dtype(np.float64))
    assert first.shape == ROWS and first.flags.c_contiguous and first.dtype == np.float64
    first[:] = 1.0
    holder = Holder(first)
    del first
    spare.keep(holder)
    assert holder.points.size == 0  # handed over
    assert spare.resident_bytes() >= ROWS[0] * ROWS[1] * 8
    # float32 rows of twice as many columns fill it: the spare is theirs.
    second = spare.take((ROWS[0], 2 * ROWS[1]), np.dtype(np.float32))
    assert second.shape == (ROWS[0], 2 * ROWS[1]) and second.dtype == np.float32 and second.flags.c_contiguous
    assert spare.resident_bytes() == 0
    assert second.base is not None and second.base.nbytes == ROWS[0] * ROWS[1] * 8  # the same memory
    # Rows that would leave more than a sixteenth of it unused get a new array; the spare stays.
    holder = Holder(second)
    del second
    spare.keep(holder)
    fewer = spare.take((ROWS[0] - ROWS[0] // 15, ROWS[1]), np.dtype(np.float64))
    assert fewer.base is not None and fewer.base.nbytes == fewer.nbytes
    assert spare.resident_bytes() == ROWS[0] * ROWS[1] * 8
    nearly = spare.take((ROWS[0] - ROWS[0] // 17, ROWS[1]), np.dtype(np.float64))
    assert nearly.base is not None and nearly.base.nbytes == ROWS[0] * ROWS[1] * 8
    assert spare.resident_bytes() == 0


def test_rows_still_referred_to_are_not_kept() -> None:
    spare = SpareRows()
    rows = spare.take(ROWS, np.dtype(np.float64))
    spare.keep(Holder(rows))  # the caller still holds them
    assert spare.resident_bytes() == 0
    view = spare.take(ROWS, np.dtype(np.float64))[10:20]  # a view outlives the rows
    holder = Holder(view.base[: view.base.nbytes].view(np.float64).reshape(ROWS))
    spare.keep(holder)
    assert spare.resident_bytes() == 0
    # An array the spare did not hand out (an undeclared upload's joined rows) is left alone.
    spare.keep(Holder(np.empty(ROWS)))
    # Nor are rows too small to be worth keeping, though nothing else refers to them.
    spare.keep(Holder(spare.take((8, 16), np.dtype(np.float64))))
    assert spare.resident_bytes() == 0


def test_the_spare_is_shed_for_room_and_goes_once_the_server_is_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "TRIM_QUIET_S", 0.2)
    spare = SpareRows()
    budget = memory.MemoryBudget(2 * ROWS[0] * ROWS[1] * 8)
    budget.add_resident(spare.resident_bytes)
    budget.add_shedder(spare.shed)
    spare.keep(Holder(spare.take(ROWS, np.dtype(np.float64))))
    held = spare.resident_bytes()
    with budget.reservation("a call") as call:
        call.grow(budget.limit - held // 2)  # fits only without the spare
    assert spare.resident_bytes() == 0
    spare.keep(Holder(spare.take(ROWS, np.dtype(np.float64))))
    assert spare.resident_bytes() == held
    deadline = time.monotonic() + 30
    while spare.resident_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spare.resident_bytes() == 0


def test_back_to_back_fits_reuse_the_array_and_fit_their_own_rows(
    start_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second and third fits take the first's array (the server keeps it between them),
    and each fits its own rows, as the engine does in process."""
    monkeypatch.setattr(memory, "TRIM_QUIET_S", 60.0)
    server = start_server()
    spare = server.servicer.runtime.spare
    rng = np.random.default_rng(0)
    datasets = [rng.normal(size=ROWS) + shift for shift in (0.0, 5.0, -3.0)]
    init = datasets[0][:4].copy()
    with Client(f"127.0.0.1:{server.port}", timeout=60) as client:
        for index, X in enumerate(datasets):
            if index:
                assert spare.resident_bytes() == X.nbytes
            fitted = client.fit(f"m{index}", X, 4, init=init, max_iter=5)
            assert spare.resident_bytes() == X.nbytes
            expected = kmeans.fit(X, 4, init=init, max_iter=5)
            np.testing.assert_array_equal(fitted.model.centers, expected.centers)
