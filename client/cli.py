"""The `centroidal` command: serve, fit, predict, models and health."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ._wire import FitProgress, ModelInfo
from .client import Client, default_target
from .errors import CentroidalError


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "serve":
        return _serve(args[1:])
    parser = _parser()
    options = parser.parse_args(args)
    if not hasattr(options, "run"):
        parser.print_help(sys.stderr)
        return 2
    try:
        with Client(options.target, token=options.token, timeout=options.timeout) as client:
            return int(options.run(client, options))
    except CentroidalError as error:
        detail = f" [field {error.field}]" if error.field else ""
        print(f"centroidal: {error}{detail}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print(f"centroidal: {error}", file=sys.stderr)
        return 1


def _serve(argv: list[str]) -> int:
    try:
        from centroidal.server.cli import main as serve_main
    except ImportError as error:
        print(
            f"centroidal serve needs the server extra: pip install 'centroidal[server]' ({error})",
            file=sys.stderr,
        )
        return 2
    code: int = serve_main(argv)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="centroidal", description="k-means clustering service")
    _connection_options(parser, defaults=True)
    # The same options after the command (`centroidal health --target ...`) win over these.
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, defaults=False)
    commands = parser.add_subparsers(title="commands", metavar="{serve,fit,predict,models,health}")
    commands.add_parser("serve", help="run the server (see `centroidal serve --help`)")

    def command(name: str, help_text: str, within: Any = commands) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = within.add_parser(name, help=help_text, parents=[common])
        return sub

    fit = command("fit", "fit a model on a .npy or .csv file")
    fit.add_argument("data", type=Path, help="points, one row per sample (.npy or .csv)")
    fit.add_argument("--model", required=True, help="model name")
    fit.add_argument("--clusters", "-k", type=int, required=True, help="number of clusters")
    fit.add_argument("--init", choices=["k-means++", "random"], default="k-means++")
    fit.add_argument("--n-init", type=int, default=None, help="restarts (default: auto)")
    fit.add_argument("--max-iter", type=int, default=None, help="iterations per restart (default 300)")
    fit.add_argument("--tol", type=float, default=None, help="relative tolerance (default 1e-4)")
    fit.add_argument("--seed", type=int, default=None)
    fit.add_argument("--dtype", choices=["float32", "float64"], default=None,
                     help="element type to send (default: the file's, float64 for CSV)")
    fit.add_argument("--labels-out", type=Path, default=None, help="write training labels here")
    fit.add_argument("--fit-timeout", type=float, default=24 * 3600.0, help="seconds for the fit")
    fit.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    fit.set_defaults(run=_fit)

    predict = command("predict", "label the points of a .npy or .csv file")
    predict.add_argument("data", type=Path)
    predict.add_argument("--model", required=True)
    predict.add_argument("--version", type=int, default=None, help="pin a model version")
    predict.add_argument("--dtype", choices=["float32", "float64"], default=None)
    predict.add_argument("--distances", action="store_true", help="also output the distance")
    predict.add_argument("--out", type=Path, default=None,
                         help="write labels to .npy or .csv instead of standard output")
    predict.set_defaults(run=_predict)

    models = command("models", "list, show or delete models")
    actions = models.add_subparsers(metavar="{list,get,delete}")
    listing = command("list", "list every model", actions)
    listing.set_defaults(run=_models_list)
    get = command("get", "describe one model as JSON", actions)
    get.add_argument("name")
    get.add_argument("--centers", action="store_true", help="include the centers")
    get.set_defaults(run=_models_get)
    delete = command("delete", "delete one model", actions)
    delete.add_argument("name")
    delete.add_argument("--expected-version", type=int, default=None)
    delete.set_defaults(run=_models_delete)
    models.set_defaults(run=_models_list)

    health = command("health", "exit 0 only when the server is SERVING")
    health.add_argument("--service", default="", help="service name to check (default: overall)")
    health.set_defaults(run=_health)
    return parser


def _connection_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--target", default=default(default_target()),
        help="server address (env CENTROIDAL_TARGET, else 127.0.0.1:50051)",
    )
    parser.add_argument(
        "--token", default=default(os.environ.get("CENTROIDAL_TOKEN")),
        help="bearer token (env CENTROIDAL_TOKEN)",
    )
    parser.add_argument("--timeout", type=float, default=default(60.0), help="seconds per call")


def load_points(path: Path, dtype: str | None) -> np.ndarray:
    """Rows of a .npy file or a comma-separated file (a header line is skipped)."""
    if path.suffix.lower() == ".npy":
        points = np.load(path, allow_pickle=False)
    else:
        try:
            points = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
        except ValueError:
            points = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64, skiprows=1)
    if points.ndim == 1:
        points = points.reshape(-1, 1)
    result: np.ndarray = points.astype(dtype) if dtype else points
    return result


def save_array(path: Path, array: np.ndarray) -> None:
    if path.suffix.lower() == ".npy":
        np.save(path, array)
    else:
        fmt = "%d" if array.dtype.kind == "i" else "%.9g"
        np.savetxt(path, array, delimiter=",", fmt=fmt)


class ProgressBar:
    """One status line on a terminal, or a line per second elsewhere."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self._stream = stream
        self._label = label
        self._tty = stream.isatty()
        self._last = 0.0
        # Upload events arrive on gRPC's sending thread, the others on the caller's.
        self._lock = threading.Lock()

    def __call__(self, event: FitProgress) -> None:
        with self._lock:
            now = time.monotonic()
            final = event.stage in ("restart_done", "data_received")
            if not self._tty and not final and now - self._last < 1.0:
                return
            self._last = now
            self._show(self._describe(event))

    def _describe(self, event: FitProgress) -> str:
        if event.stage == "uploading":
            total = max(1, event.points_total)
            share = event.points_received / total
            bar = "#" * int(share * 20)
            return f"{self._label}: uploading [{bar:<20}] {share:6.1%} of {total} points"
        restart = f"restart {event.restart + 1}/{event.n_init}"
        if event.stage == "seeding":
            return f"{self._label}: {restart} choosing centers ({event.iteration} so far)"
        if event.stage in ("iteration", "restart_done"):
            done = " done" if event.stage == "restart_done" else ""
            return (
                f"{self._label}: {restart} iteration {event.iteration}{done} "
                f"inertia {event.inertia:.6g} shift {event.center_shift:.3g} "
                f"[{event.elapsed_seconds:.1f}s]"
            )
        return f"{self._label}: {event.stage.replace('_', ' ')}"

    def _show(self, line: str) -> None:
        if self._tty:
            self._stream.write("\r\033[K" + line)
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()


def _fit(client: Client, options: argparse.Namespace) -> int:
    points = load_points(options.data, options.dtype)
    bar = None if options.quiet else ProgressBar(sys.stderr, f"fit {options.model}")
    try:
        result = client.fit(
            options.model, points, options.clusters, init=options.init, n_init=options.n_init,
            max_iter=options.max_iter, tol=options.tol, seed=options.seed,
            return_labels=options.labels_out is not None, on_progress=bar,
            timeout=options.fit_timeout,
        )
    finally:
        if bar is not None:
            bar.close()
    if options.labels_out is not None and result.labels is not None:
        save_array(options.labels_out, result.labels)
    print(
        f"model {result.model.name} version {result.version}: {result.n_samples} points, "
        f"{result.model.n_clusters} clusters, inertia {result.inertia:.6g}, "
        f"{result.n_iter} iterations, {result.elapsed_seconds:.2f}s"
    )
    return 0


def _predict(client: Client, options: argparse.Namespace) -> int:
    points = load_points(options.data, options.dtype)
    labels, distances = client.predict(
        options.model, points, version=options.version, return_distance=True
    )
    output = np.column_stack([labels, distances]) if options.distances else labels
    if options.out is not None:
        save_array(options.out, output)
    elif options.distances:
        for label, distance in zip(labels, distances):
            print(f"{label},{distance:.9g}")
    else:
        sys.stdout.write("\n".join(map(str, labels.tolist())) + "\n")
    return 0


def _describe(model: ModelInfo) -> dict[str, object]:
    described: dict[str, object] = {
        "name": model.name,
        "version": model.version,
        "kind": model.kind,
        "n_clusters": model.n_clusters,
        "n_features": model.n_features,
        "dtype": model.dtype.name,
        "inertia": model.inertia,
        "n_iter": model.n_iter,
        "n_samples_seen": model.n_samples_seen,
        "created_at": model.created_at.isoformat(),
        "updated_at": model.updated_at.isoformat(),
        "config": model.config,
    }
    if model.centers is not None:
        described["centers"] = model.centers.tolist()
    return described


def _models_list(client: Client, options: argparse.Namespace) -> int:
    models = client.list_models()
    print(f"{'NAME':<32} {'VERSION':>7} {'K':>6} {'FEATURES':>8} {'DTYPE':>7} {'POINTS':>10}  UPDATED")
    for model in models:
        print(
            f"{model.name:<32} {model.version:>7} {model.n_clusters:>6} {model.n_features:>8} "
            f"{model.dtype.name:>7} {model.n_samples_seen:>10}  {model.updated_at:%Y-%m-%d %H:%M:%S}"
        )
    return 0


def _models_get(client: Client, options: argparse.Namespace) -> int:
    model = client.get_model(options.name, include_centers=options.centers)
    print(json.dumps(_describe(model), indent=2))
    return 0


def _models_delete(client: Client, options: argparse.Namespace) -> int:
    version = client.delete_model(options.name, expected_version=options.expected_version)
    print(f"deleted {options.name} (version {version})")
    return 0


def _health(client: Client, options: argparse.Namespace) -> int:
    status = client.health(options.service)
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
