"""Engine work driven a step at a time on an executor: the event loop stays free, a call that
ends stops the work within one step, and progress goes out a few times a second at most.

The engine's work is a generator of events (``engine.progress.Progress``, a suggest-k's
``Scoring`` and ``KScore``), each of which says whether it is ``skippable``: one that may be
dropped when another follows soon.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from centroidal.engine.progress import Progress, Stage

from .admission import CallWork

log = logging.getLogger("centroidal.server")

PROGRESS_INTERVAL_S = 0.1
# Longest run of engine steps in one executor job while their events are throttled away.
BATCH_STEPS_S = 0.02


class StepEvent(Protocol):
    @property
    def skippable(self) -> bool: ...


# Returned by a job whose steps' events were all throttled away.
_DROPPED = Progress(Stage.ITERATION, 0, 0, 0, math.nan, math.nan)


class FitTally:
    """The step-wise runs of one server: how many engines still run, and where the last
    stopped one stopped."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.last_stopped_iteration: int | None = None
        self.lock = threading.Lock()


class StepRun:
    """A generator of engine events driven a step at a time on ``executor``. ``label`` names
    the work in the log; ``on_iteration`` counts each Lloyd iteration."""

    def __init__(
        self, label: str, steps: Generator[Any, None, Any], work: CallWork,
        executor: ThreadPoolExecutor, tally: FitTally, on_iteration: Callable[[], None],
    ) -> None:
        self._label = label
        self._work = work
        self._executor = executor
        self._tally = tally
        self._on_iteration = on_iteration
        self._steps = steps
        self.result: Any = None
        self._iteration = 0
        self._closed = False
        self._failed = False
        self._last_sent = 0.0
        with tally.lock:
            tally.in_flight += 1

    def _advance(self) -> StepEvent | None:
        """Engine steps on the executor, up to the next event worth sending; None once the
        work has finished.

        Steps whose events the throttle would drop run in the same job for up to
        BATCH_STEPS_S: a hand-over to the event loop per k-means++ center costs more than
        the center on small data, and a cancel still waits at most that long or one step.
        """
        began = time.monotonic()
        while True:
            try:
                event = next(self._steps)
            except StopIteration as done:
                self.result = done.value
                return None
            except BaseException:
                self._failed = True
                raise
            now = time.monotonic()
            if isinstance(event, Progress):
                self._iteration = event.iteration
                if event.stage is Stage.ITERATION:
                    self._on_iteration()
            if event.skippable and now - self._last_sent < PROGRESS_INTERVAL_S:
                if now - began < BATCH_STEPS_S:
                    continue
                return _DROPPED
            self._last_sent = now
            return event  # type: ignore[no-any-return]

    async def events(self) -> AsyncGenerator[Any, None]:
        """The engine's events, a few per second at most; the result is in ``result``."""
        try:
            while True:
                event = await self._work.run(self._executor, self._advance)
                if event is None:
                    return
                if event is not _DROPPED:
                    yield event
        finally:
            # A step may still be running on the executor: stop once it returns, never under it.
            self._work.after(self._stop)

    def _stop(self) -> None:
        tally = self._tally
        with tally.lock:
            if self._closed:
                return
            self._closed = True
            tally.in_flight -= 1
            if self.result is None and not self._failed:
                tally.last_stopped_iteration = self._iteration
        if self.result is None:
            self._steps.close()
            if self._failed:
                return
            log.info("%s stopped at iteration %d: call ended", self._label, self._iteration)
