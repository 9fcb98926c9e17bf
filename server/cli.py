"""`centroidal serve`: run the server until SIGTERM or SIGINT, then drain and exit.

Exit status: 0 when everything acknowledged is stored, 1 when a streamed model's newest
version could not be stored (each is logged), 2 when the server could not start.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

from .app import create_server
from .config import ServerConfig, parse_args
from .exceptions import StoreDamaged, StoreUnavailable
from .checks import backup, inspect
from . import replicas
from .supervisor import Supervisor


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    log = logging.getLogger("centroidal.server")
    # A plain list, not a threading.Event: a handler that set an Event could deadlock on the
    # lock the main thread holds inside Event.wait when the signal lands.
    signals: list[int] = []

    def request_stop(signum: int, frame: object) -> None:
        signals.append(signum)

    if config.worker_count > 1 and replicas.worker_index() is None:
        return _supervise(config, argv, log)
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        server, _ = create_server(config)
    except (OSError, StoreDamaged, StoreUnavailable) as exc:
        log.error("cannot start: %s", getattr(exc, "message", None) or exc)
        return 2
    try:
        server.start()
    except OSError as exc:  # the metrics port taken, say
        log.error("cannot start: %s", exc)
        server.stop(0)
        return 2
    replicas.tell_supervisor_ready()
    supervisor = os.getppid() if replicas.worker_index() is not None else None
    while not signals:
        time.sleep(0.1)
        if supervisor is not None and os.getppid() != supervisor:
            log.error("the supervisor (pid %d) is gone: this worker drains and stops", supervisor)
            break
    if signals:
        log.info("received %s, draining for up to %.1fs", signal.Signals(signals[0]).name, config.grace_period)
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


def _supervise(config: ServerConfig, argv: Sequence[str] | None, log: logging.Logger) -> int:
    try:
        supervisor = Supervisor(config, sys.argv[1:] if argv is None else argv)
    except (OSError, StoreDamaged, StoreUnavailable) as exc:
        log.error("cannot start: %s", getattr(exc, "message", None) or exc)
        return 2
    try:
        return supervisor.run()
    except OSError as exc:  # before any worker started
        log.error("cannot start: %s", exc)
        return 2


def store_main(argv: Sequence[str] | None = None) -> int:
    """`centroidal store check|backup`: the operator's tools for a data directory."""
    parser = argparse.ArgumentParser(prog="centroidal store", description="Check or back up a model store.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="verify the store; exit 1 if anything is damaged")
    check.add_argument("--data-dir", default=os.environ.get("CENTROIDAL_DATA_DIR", ServerConfig.data_dir))
    check.add_argument("--store", default=os.environ.get("CENTROIDAL_STORE", ""),
                       help="a postgresql:// URL: check that database instead of --data-dir's SQLite")
    check.add_argument("--store-password-file", default=os.environ.get("CENTROIDAL_STORE_PASSWORD_FILE", ""))
    copy = commands.add_parser("backup", help="copy the store (safe while a server runs)")
    copy.add_argument("target", help="file (or directory) for the copy")
    copy.add_argument("--data-dir", default=os.environ.get("CENTROIDAL_DATA_DIR", ServerConfig.data_dir))
    args = parser.parse_args(argv)
    if args.command == "check" and args.store:
        return _check_postgres(args.store, args.store_password_file)
    try:
        if args.command == "backup":
            models = backup(args.data_dir, args.target)
            print(f"backed up {models} models from {args.data_dir} to {args.target}")
            return 0
        report = inspect(args.data_dir)
    except (OSError, StoreDamaged) as exc:
        print(f"centroidal store: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
        return 1
    held = f"; in use by the server with pid {report.held_by}" if report.held_by else ""
    print(f"{report.path}: {report.models} models, {report.versions} stored versions{held}")
    for problem in report.problems:
        print(f"  DAMAGED: {problem}")
    if report.problems:
        affected = ", ".join(repr(name) for name in report.damaged_models) or "unknown (see above)"
        print(f"models affected: {affected}")
        print("to recover: stop the server, restore from a backup (`centroidal store backup`), or "
              "delete the damaged models through the API once the rest is restored")
        return 1
    for note in report.notes:
        print(f"  note: {note}")
    ending = "the log lost no acknowledged commit" if report.notes else "the log is whole"
    print(f"ok: quick_check passed, every stored version matches its checksum, {ending}")
    return 0


def _check_postgres(url: str, password_file: str) -> int:
    """`centroidal store check --store postgresql://…`: every stored version's checksum.
    (A backup of a PostgreSQL store is the database's own: pg_dump, or its base backups.)"""
    try:
        from .postgres import PostgresStore

        store = PostgresStore(url, password_file=password_file, listen=False)
    except ImportError:
        print("centroidal store: --store postgresql://… needs pip install 'centroidal[postgres]'", file=sys.stderr)
        return 1
    except (StoreUnavailable, StoreDamaged) as exc:
        print(f"centroidal store: {exc.message}", file=sys.stderr)
        return 1
    try:
        names, versions, failures = store.verify_all()
    except (StoreUnavailable, StoreDamaged) as exc:
        print(f"centroidal store: {exc.message}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"{store.location}: {names} models, {versions} stored versions")
    for name, version in failures:
        print(f"  DAMAGED: model {name!r} version {version} fails its checksum")
    if failures:
        print("to recover: delete the damaged models through the API, or restore the database from a backup")
        return 1
    print("ok: every stored version matches its checksum")
    return 0


if __name__ == "__main__":
    sys.exit(main())
