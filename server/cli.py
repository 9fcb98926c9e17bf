"""`centroidal serve`: run the server until SIGTERM or SIGINT, then drain and exit.

Exit status: 0 when everything acknowledged is stored, 1 when a streamed model's newest
version could not be stored (each is logged), 2 when the server could not start.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence

from .app import create_server
from .config import parse_args
from .exceptions import StoreDamaged, StoreUnavailable


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    log = logging.getLogger("centroidal.server")
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        log.info("received %s, draining for up to %.1fs", signal.Signals(signum).name, config.grace_period)
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        server, _ = create_server(config)
    except (OSError, StoreDamaged, StoreUnavailable) as exc:
        log.error("cannot start: %s", getattr(exc, "message", None) or exc)
        return 2
    server.start()
    while not stop_requested.wait(0.5):
        pass
    unsaved = server.stop()
    if unsaved:
        for line in unsaved:
            log.error("not stored: %s", line)
        log.error(
            "stopped with %d streamed models not stored; their producers still hold the batches "
            "since the stored version and resend them to the next server", len(unsaved),
        )
        return 1
    log.info("stopped cleanly: everything acknowledged is stored")
    return 0


if __name__ == "__main__":
    sys.exit(main())
