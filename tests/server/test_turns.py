"""One call's jobs run in order on a shared pool, and calls take turns (server/turns.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest

from centroidal.server.turns import InOrder, R, TurnPool


class CountingPool(TurnPool):
    """A TurnPool that counts the jobs handed to it: one per turn InOrder takes."""

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers, thread_name_prefix="test-turns")
        self.submitted = 0

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def pool() -> Any:
    made: list[CountingPool] = []

    def make(workers: int) -> CountingPool:
        made.append(CountingPool(workers))
        return made[-1]

    yield make
    for each in made:
        each.shutdown(wait=True)


def test_a_call_alone_runs_its_queued_jobs_in_one_turn(pool: Callable[[int], CountingPool]) -> None:
    threads = pool(2)

    async def run() -> tuple[list[int], list[int]]:
        gate = threading.Event()
        calls = InOrder(threads)
        ran: list[int] = []
        seen: list[int] = []

        def job(index: int) -> int:
            if index == 0:
                gate.wait(10)
            ran.append(index)
            seen.append(threading.get_ident())
            return index * 10

        outcomes = [calls.submit(job, index) for index in range(5)]
        gate.set()
        answers = await asyncio.gather(*outcomes)
        assert answers == [0, 10, 20, 30, 40]
        return ran, seen

    ran, seen = asyncio.run(run())
    assert ran == [0, 1, 2, 3, 4]
    # Nobody else waited: one turn, on one thread, not a hand-over per job.
    assert threads.submitted == 1
    assert len(set(seen)) == 1
    assert threads.waiting == 0


def test_calls_take_turns_when_another_waits(pool: Callable[[int], CountingPool]) -> None:
    one_thread = pool(1)

    async def run() -> list[str]:
        gate = threading.Event()
        first, second = InOrder(one_thread), InOrder(one_thread)
        ran: list[str] = []

        def job(name: str) -> str:
            if name == "a0":
                gate.wait(10)
            ran.append(name)
            return name

        outcomes = [first.submit(job, f"a{i}") for i in range(3)]
        outcomes += [second.submit(job, f"b{i}") for i in range(3)]
        gate.set()
        await asyncio.gather(*outcomes)
        return ran

    # Each call gives way after one job while the other's turn waits for the thread.
    assert asyncio.run(run()) == ["a0", "b0", "a1", "b1", "a2", "b2"]
    assert one_thread.waiting == 0


def test_a_closed_call_runs_no_more_of_its_turn_and_its_failures_come_back(
    pool: Callable[[int], CountingPool],
) -> None:
    threads = pool(2)

    async def run() -> tuple[list[int], list[Any]]:
        gate = threading.Event()
        calls = InOrder(threads)
        ran: list[int] = []

        def job(index: int) -> int:
            ran.append(index)
            if index == 0:
                raise ValueError("the first job fails")
            if index == 1:
                gate.wait(10)
                calls.close()  # while its turn still has jobs queued
            return index

        outcomes = [calls.submit(job, index) for index in range(4)]
        gate.set()
        settled = await asyncio.gather(*outcomes, return_exceptions=True)
        return ran, settled

    ran, settled = asyncio.run(run())
    assert ran == [0, 1]
    assert isinstance(settled[0], ValueError)
    assert settled[1] == 1
    assert all(isinstance(each, asyncio.CancelledError) for each in settled[2:])
