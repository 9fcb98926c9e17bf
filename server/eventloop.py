"""The process's one event loop for gRPC servers: uvloop's or asyncio's, in a daemon thread
of its own, so that a server's ``start`` and ``stop`` are plain calls."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger("centroidal.server")

T = TypeVar("T")


class EventLoop:
    """The process's one event loop for gRPC servers, running in a daemon thread."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def loop(cls) -> asyncio.AbstractEventLoop | None:
        return cls._loop

    @classmethod
    def run(cls, coroutine: Coroutine[Any, Any, T], timeout: float | None = None, kind: str = "uvloop") -> T:
        """Run ``coroutine`` on the loop, started on the first call as ``kind`` (``--event-loop``)."""
        with cls._lock:
            if cls._loop is None:
                loop = new_loop(kind)
                threading.Thread(target=loop.run_forever, name="centroidal-loop", daemon=True).start()
                cls._loop = loop
        return asyncio.run_coroutine_threadsafe(coroutine, cls._loop).result(timeout)


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's, unless ``kind`` is asyncio or uvloop is not installed (it
    is not built for Windows). Under h2load a small Predict cost the server less CPU on
    uvloop: 0.148 against 0.183 CPU s per 1,000 calls, medians of five runs each taking turns
    (bench.floors.small_calls; its trivial handler, on asyncio's loop in both, 0.110 and 0.127)."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed: running on asyncio's event loop")
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()
