"""The command line's progress bars (tqdm, on standard error)."""

from __future__ import annotations

import sys
import threading
from typing import Any

from tqdm import tqdm

from .results import FitProgress


class FitBar:
    """A fit's progress on tqdm bars: the upload in points, then each restart's iterations.

    Upload events arrive on gRPC's sending thread, the others on the caller's.
    """

    def __init__(self, label: str, max_iter: int | None) -> None:
        self._label = label
        self._max_iter = max_iter or 300
        self._lock = threading.Lock()
        self._bar: tqdm[Any] | None = None
        self._phase = ""

    def _switch(self, phase: str, **settings: Any) -> tqdm[Any]:
        if self._bar is None or self._phase != phase:
            if self._bar is not None:
                self._bar.close()
            self._bar = progress_bar(desc=f"{self._label} {phase}", **settings)
            self._phase = phase
        return self._bar

    def __call__(self, event: FitProgress) -> None:
        with self._lock:
            if event.stage == "uploading":
                bar = self._switch("upload", total=max(1, event.points_total), unit="pt", unit_scale=True)
                bar.update(event.points_received - bar.n)
            elif event.stage in ("seeding", "iteration", "restart_done"):
                bar = self._switch(f"restart {event.restart + 1}/{event.n_init}", total=self._max_iter, unit="it")
                if event.stage == "iteration":
                    # Shown at the bar's next draw: drawing now would write every event off a terminal.
                    bar.set_postfix(inertia=f"{event.inertia:.6g}", shift=f"{event.center_shift:.3g}",
                                    skipped=f"{event.distances_skipped:.0%}", refresh=False)
                    bar.update(event.iteration - bar.n)
                elif event.stage == "restart_done":
                    # Converged before max_iter: the bar ends full, with the restart's final inertia.
                    bar.total = max(event.iteration, 1)
                    bar.set_postfix(inertia=f"{event.inertia:.6g}", refresh=False)
                    bar.update(event.iteration - bar.n)
            elif event.stage == "compiling":
                # A server just started compiles its kernels (about a minute, the first time).
                self._switch("waiting for the server to compile its kernels (first start only)", total=None)
            elif self._bar is not None:
                self._bar.set_postfix_str(event.stage.replace("_", " "), refresh=False)

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None


def progress_bar(**settings: Any) -> tqdm[Any]:
    """A tqdm bar on standard error; off a terminal it draws at most once every 5 s (and
    when it closes). Postfixes are set without drawing, so only updates draw."""
    interval = 0.1 if sys.stderr.isatty() else 5.0
    return tqdm(file=sys.stderr, mininterval=interval, maxinterval=max(interval, 10.0), dynamic_ncols=True,
                **settings)
