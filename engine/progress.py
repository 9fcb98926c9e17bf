"""What a running fit reports: its stages and progress events, and how to drive a step generator."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Stage(Enum):
    """What a Progress event reports."""

    SEEDING = "seeding"
    INITIALIZED = "initialized"
    ITERATION = "iteration"
    RESTART_DONE = "restart_done"


@dataclass(frozen=True)
class Progress:
    """One step of a running fit."""

    stage: Stage
    restart: int
    n_init: int
    iteration: int
    inertia: float
    center_shift: float
    # In an ITERATION event: the share of point-to-center distances the bounds skipped.
    distances_skipped: float = 0.0

    @property
    def skippable(self) -> bool:
        """A caller that reports progress may drop this event when another follows soon:
        every iteration or seeded center after the first of its run."""
        return self.stage in (Stage.ITERATION, Stage.SEEDING) and self.iteration > 1


def run_to_end(steps: Generator[Any, None, Any], on_progress: Callable[[Any], None] | None = None) -> Any:
    """Exhaust a step generator, passing each event to on_progress; returns its value."""
    while True:
        try:
            event = next(steps)
        except StopIteration as done:
            return done.value
        if on_progress is not None:
            on_progress(event)
