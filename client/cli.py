"""The `centroidal` command: serve, fit, predict, stream, quantize, models and health."""

from __future__ import annotations

import argparse
import json
import os
import sys
import re
import signal
import threading
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from centroidal.v1 import codec

from tqdm import tqdm

from . import demo, export, figures
from ._scoring import ClusterScores, KScore
from ._wire import FitProgress, ModelInfo
from .client import Client
from .transport import default_target
from .stream import BatchAck
from .errors import CentroidalError


# Init methods a command line can name; given centers come from the Python API.
_NAMED_INITS = [name for name in codec.INIT_METHODS.numbers if name != "given"]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if threading.current_thread() is threading.main_thread():
        # A shell that starts a job in the background, or a CI runner, may hand us SIGINT
        # ignored; Python then keeps it ignored, and Ctrl-C would not end the command.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if args and args[0] in ("serve", "store"):
        return _server_command(args[0], args[1:])
    parser = _parser()
    options = parser.parse_args(args)
    if not hasattr(options, "run"):
        parser.print_help(sys.stderr)
        return 2
    try:
        if bool(options.tls_cert) != bool(options.tls_key):
            parser.error("--tls-cert and --tls-key go together")
        with Client(
            options.target, token=options.token, token_file=options.token_file, tls=options.tls,
            root_certificates=options.tls_ca,
            client_certificate=(options.tls_cert, options.tls_key) if options.tls_cert else None,
            timeout=options.timeout,
        ) as client:
            return int(options.run(client, options))
    except CentroidalError as error:
        detail = f" [field {error.field}]" if error.field else ""
        print(f"centroidal: {error}{detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Closing the channel on the way out cancelled the call: a fit stops, nothing is stored.
        print("centroidal: interrupted; the call was cancelled", file=sys.stderr)
        return 130
    except (OSError, ValueError) as error:
        print(f"centroidal: {error}", file=sys.stderr)
        return 1


def _server_command(command: str, argv: list[str]) -> int:
    """`centroidal serve` and `centroidal store`, which need the server extra."""
    try:
        from centroidal.server import cli as server_cli
    except ImportError as error:
        print(
            f"centroidal {command} needs the server extra: pip install 'centroidal[server]' ({error})",
            file=sys.stderr,
        )
        return 2
    run = server_cli.main if command == "serve" else server_cli.store_main
    code: int = run(argv)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="centroidal", description="k-means clustering service")
    parser.add_argument("--version", action="version", version=f"centroidal {_version()}")
    _connection_options(parser, defaults=True)
    # The same options after the command (`centroidal health --target ...`) win over these.
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, defaults=False)
    commands = parser.add_subparsers(title="commands", metavar="{serve,store,fit,predict,stream,evaluate,suggest-k,quantize,get,export,delete,models,health,demo}")
    commands.add_parser("serve", help="run the server (see `centroidal serve --help`)")
    commands.add_parser("store", help="check or back up a data directory (`centroidal store --help`)")

    def command(name: str, help_text: str, within: Any = commands) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = within.add_parser(name, help=help_text, parents=[common])
        return sub

    fit = command("fit", "fit a model on a .npy or .csv file")
    fit.add_argument("data", type=Path, help="points, one row per sample (.npy or .csv)")
    fit.add_argument("--model", required=True, help="model name")
    fit.add_argument("--clusters", "-k", type=int, required=True, help="number of clusters")
    fit.add_argument("--init", choices=list(_NAMED_INITS), default="k-means++")
    fit.add_argument("--n-init", type=int, default=None, help="restarts (default: auto)")
    fit.add_argument("--max-iter", type=int, default=None, help="iterations per restart (default 300)")
    fit.add_argument("--tol", type=float, default=None, help="relative tolerance (default 1e-4)")
    fit.add_argument("--seed", type=int, default=None)
    fit.add_argument("--metric", choices=list(codec.METRICS.numbers), default="euclidean",
                     help="cosine: spherical k-means, for embeddings (default euclidean)")
    fit.add_argument("--algorithm", choices=list(codec.ALGORITHMS.numbers), default="kmeans",
                     help="spectral: for clusters k-means cannot separate, up to 20,000 rows")
    fit.add_argument("--neighbors", type=int, default=None,
                     help="neighbours per row of a spectral fit's graph (default 10)")
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

    stream = command("stream", "feed a .npy or .csv file to a mini-batch model, batch by batch")
    stream.add_argument("data", type=Path, help="points, one row per sample (.npy or .csv)")
    stream.add_argument("--model", required=True, help="model name")
    stream.add_argument("--batch-size", type=int, default=8192, help="rows per batch (default 8192)")
    stream.add_argument("--clusters", "-k", type=int, default=None,
                        help="create the model with this many clusters if it does not exist")
    stream.add_argument("--init-size", type=int, default=0,
                        help="points a new model seeds from (default: first batch or 3k)")
    stream.add_argument("--reassignment-ratio", type=float, default=None)
    stream.add_argument("--half-life", type=float, default=None, help="forget old data (default: never)")
    stream.add_argument("--half-life-unit", choices=list(codec.HALF_LIFE_UNITS.numbers), default="batches")
    stream.add_argument("--seed", type=int, default=None)
    stream.add_argument("--metric", choices=list(codec.METRICS.numbers), default="euclidean",
                        help="for a new model: cosine or euclidean (default)")
    stream.add_argument("--producer-id", default=None,
                        help="producer identity; with --first-sequence, resumes an earlier run")
    stream.add_argument("--first-sequence", type=int, default=1,
                        help="sequence of the file's first batch; batches the model already has "
                             "are skipped by the server")
    stream.add_argument("--dtype", choices=["float32", "float64"], default=None)
    stream.add_argument("--window", type=int, default=16, help="batches in flight (default 16)")
    stream.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    stream.set_defaults(run=_stream)

    quantize = command("quantize", "reduce an image to a few colours")
    quantize.add_argument("input", type=Path, help="PNG, JPEG, WebP, BMP, TIFF or GIF")
    quantize.add_argument("output", type=Path, help="where to write the result")
    quantize.add_argument("--colors", type=int, default=16, help="palette size, 2-256 (default 16)")
    quantize.add_argument("--dither", action="store_true", help="Floyd-Steinberg dithering")
    quantize.add_argument("--space", choices=list(codec.COLOR_SPACES.numbers), default="rgb",
                          help="colour space of the fit")
    quantize.add_argument("--format", choices=[name.lower() for name in codec.IMAGE_FORMATS.numbers], default=None,
                          help="output format (default: from OUTPUT's suffix, else png)")
    quantize.add_argument("--seed", type=int, default=None)
    quantize.add_argument("--max-samples", type=int, default=0, help="pixels to fit on (0: server default)")
    quantize.add_argument("--palette-model", default="", help="reuse this stored palette")
    quantize.add_argument("--save-palette-as", default="", help="store the palette under this name")
    quantize.add_argument("--plot", type=Path, default=None,
                          help="also draw the palette in colour space (sized by pixel count, over "
                               "10,000 of the image's pixels), both images and the palette's pixel "
                               "shares, to this PNG (needs the plot extra: matplotlib, Pillow)")
    quantize.set_defaults(run=_quantize)

    evaluate = command("evaluate", "score a model on a .npy or .csv file: inertia, silhouette, "
                                   "Calinski-Harabasz, Davies-Bouldin")
    evaluate.add_argument("data", type=Path, help="points, one row per sample (.npy or .csv)")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--version", type=int, default=None, help="pin a model version")
    _silhouette_options(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print the scores as JSON")
    evaluate.set_defaults(run=_evaluate)

    suggest = command("suggest-k", "fit a range of k and recommend one by silhouette")
    suggest.add_argument("data", type=Path, help="points, one row per sample (.npy or .csv)")
    suggest.add_argument("--k", dest="k_range", type=_k_range, default=range(2, 11),
                         help="values of k to try, as FIRST..LAST (default 2..10)")
    suggest.add_argument("--metric", choices=list(codec.METRICS.numbers), default="euclidean")
    suggest.add_argument("--n-init", type=int, default=None, help="restarts per k (default 1)")
    suggest.add_argument("--max-iter", type=int, default=None)
    suggest.add_argument("--seed", type=int, default=None, help="seed of every fit and of the sample")
    _silhouette_options(suggest, seeded=False)
    suggest.add_argument("--dtype", choices=["float32", "float64"], default=None)
    suggest.add_argument("--save-best-as", default="", help="store the recommended k's fit under this name")
    suggest.add_argument("--plot", type=Path, default=None,
                         help="draw inertia, silhouette and the dispersion indices against k to "
                              "this PNG (needs the plot extra: matplotlib)")
    suggest.add_argument("--json", action="store_true", help="print the result as JSON")
    suggest.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    suggest.set_defaults(run=_suggest_k)

    export_command = command("export", "write a model's centers and description to a file")
    export_command.add_argument("name")
    export_command.add_argument("--format", choices=list(export.FORMATS), default=None,
                                help="npz, json or onnx (default: from --out's suffix, else npz)")
    export_command.add_argument("--out", type=Path, default=None,
                                help="where to write (default NAME.FORMAT)")
    export_command.add_argument("--version", type=int, default=None, help="pin a model version")
    export_command.set_defaults(run=_export)

    top_get = command("get", "describe one model as JSON (as `models get`)")
    top_get.add_argument("name")
    top_get.add_argument("--centers", action="store_true", help="include the centers")
    top_get.set_defaults(run=_models_get)
    top_delete = command("delete", "delete one model (as `models delete`)")
    top_delete.add_argument("name")
    top_delete.add_argument("--expected-version", type=int, default=None)
    top_delete.set_defaults(run=_models_delete)

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

    walkthrough = command("demo", "run the k-means walkthrough through the SDK and write its figures")
    walkthrough.add_argument("--out", type=Path, default=Path("centroidal-demo"),
                             help="directory for the PNG figures (default ./centroidal-demo)")
    walkthrough.add_argument("--serve", action="store_true",
                             help="start a private server for the run instead of using --target")
    walkthrough.add_argument("--steps", default=",".join(demo.STEPS),
                             help=f"comma-separated steps to run (default all: {','.join(demo.STEPS)})")
    walkthrough.set_defaults(run=_demo)
    return parser


def _silhouette_options(parser: argparse.ArgumentParser, *, seeded: bool = True) -> None:
    parser.add_argument("--sample-size", type=int, default=0,
                        help="rows the silhouette scores (default: all up to 20,000, else a "
                             "seeded sample of 20,000)")
    parser.add_argument("--all-rows", action="store_true",
                        help="score the silhouette on every row (n^2 work, bounded memory)")
    if seeded:  # suggest-k draws its sample with --seed
        parser.add_argument("--sample-seed", type=int, default=None,
                            help="seed of the silhouette's sample (as scikit-learn's random_state)")


def _k_range(text: str) -> range:
    """FIRST..LAST (inclusive), or a single k."""
    first, dots, last = text.partition("..")
    try:
        values = range(int(first), int(last if dots else first) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k takes FIRST..LAST, such as 2..12; got {text!r}") from None
    if len(values) == 0:
        raise argparse.ArgumentTypeError(f"--k {text}: LAST is below FIRST")
    return values


def _connection_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--target", default=default(default_target()),
        help="server address (env CENTROIDAL_TARGET, else 127.0.0.1:50051)",
    )
    parser.add_argument(
        "--token", default=default(None),
        help="bearer token; it shows in `ps`, so prefer --token-file or env CENTROIDAL_TOKEN",
    )
    parser.add_argument("--token-file", default=default(None), help="file whose first line is the token")
    parser.add_argument("--tls", action="store_true", default=default(False),
                        help="speak TLS (implied by --tls-ca and --tls-cert)")
    parser.add_argument("--tls-ca", default=default(None), help="PEM roots to check the server against")
    parser.add_argument("--tls-cert", default=default(None), help="PEM client certificate, for mutual TLS")
    parser.add_argument("--tls-key", default=default(None), help="PEM private key of --tls-cert")
    parser.add_argument("--timeout", type=float, default=default(60.0), help="seconds per call")


def load_points(path: Path, dtype: str | None) -> np.ndarray:
    """Rows of a .npy file or a comma-separated file (a header line is skipped). A value that
    is not a number is reported with the file's line and column."""
    if path.suffix.lower() == ".npy":
        points = np.load(path, allow_pickle=False)
    else:
        points = _load_csv(path)
    if points.ndim == 1:
        points = points.reshape(-1, 1)
    result: np.ndarray = points.astype(dtype) if dtype else points
    return result


def _load_csv(path: Path) -> np.ndarray:
    skip = 0
    while True:
        try:
            return np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64, skiprows=skip)
        except ValueError as error:
            text = str(error)
            bad_value = re.search(r"could not convert string (.*) to float64 at row (\d+), column (\d+)", text)
            if bad_value and int(bad_value.group(2)) == 0 and skip == 0:
                skip = 1  # a header line
                continue
            if bad_value:
                line = int(bad_value.group(2)) + skip + 1
                raise ValueError(f"{path}, line {line}, column {bad_value.group(3)}: "
                                 f"{bad_value.group(1)} is not a number") from None
            columns = re.search(r"number of columns changed from (\d+) to (\d+) at row (\d+)", text)
            if columns:
                raise ValueError(f"{path}, line {int(columns.group(3)) + skip}: {columns.group(2)} "
                                 f"values, but the rows before have {columns.group(1)}") from None
            raise ValueError(f"{path}: {text}") from None


def save_array(path: Path, array: np.ndarray) -> None:
    if path.suffix.lower() == ".npy":
        np.save(path, array)
    else:
        fmt = "%d" if array.dtype.kind == "i" else "%.9g"
        np.savetxt(path, array, delimiter=",", fmt=fmt)


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
                    bar.update(event.iteration - bar.n)
                    bar.set_postfix(inertia=f"{event.inertia:.6g}", shift=f"{event.center_shift:.3g}",
                                    skipped=f"{event.distances_skipped:.0%}")
                elif event.stage == "restart_done":
                    bar.update(event.iteration - bar.n)
            elif self._bar is not None:
                self._bar.set_postfix_str(event.stage.replace("_", " "))

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None


def progress_bar(**settings: Any) -> tqdm[Any]:
    """A tqdm bar on standard error; off a terminal it writes at most once every 5 s."""
    interval = 0.1 if sys.stderr.isatty() else 5.0
    return tqdm(file=sys.stderr, mininterval=interval, dynamic_ncols=True, **settings)


def _fit(client: Client, options: argparse.Namespace) -> int:
    points = load_points(options.data, options.dtype)
    bar = None if options.quiet else FitBar(f"fit {options.model}", options.max_iter)
    try:
        result = client.fit(
            options.model, points, options.clusters, init=options.init, n_init=options.n_init,
            max_iter=options.max_iter, tol=options.tol, seed=options.seed, metric=options.metric,
            algorithm=options.algorithm, n_neighbors=options.neighbors,
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


def _stream(client: Client, options: argparse.Namespace) -> int:
    if options.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {options.batch_size}")
    points = load_points(options.data, options.dtype)
    total = points.shape[0]
    bar = None if options.quiet else progress_bar(desc=f"stream {options.model}", total=total, unit="pt",
                                                  unit_scale=True)
    sent = 0

    duplicates = 0

    def progress(ack: BatchAck) -> None:
        nonlocal duplicates
        duplicates += ack.duplicate
        if bar is not None:
            done = min(total, (ack.sequence - options.first_sequence + 1) * options.batch_size)
            bar.update(done - bar.n)
            bar.set_postfix(version=ack.version, durable=ack.durable_version, refresh=False)

    started = time.monotonic()
    stream = client.stream(
        options.model, n_clusters=options.clusters, init_size=options.init_size,
        reassignment_ratio=options.reassignment_ratio, half_life=options.half_life,
        half_life_unit=options.half_life_unit, seed=options.seed, metric=options.metric,
        producer_id=options.producer_id, first_sequence=options.first_sequence,
        window=options.window, on_ack=progress,
    )
    try:
        try:
            for start in range(0, total, options.batch_size):
                stream.send(points[start : start + options.batch_size])
                sent += 1
        except BaseException:
            stream.abort()
            raise
        try:
            stream.close()
        except CentroidalError as refused:
            if not hasattr(refused, "sequence"):
                raise
            # A rejected batch: the stream still closed; every rejection is listed below.
    finally:
        if bar is not None:
            if stream.last_ack is not None:  # the close made the model durable: show it
                bar.set_postfix(version=stream.last_ack.version, durable=stream.last_ack.durable_version,
                                refresh=False)
            bar.close()
    elapsed = time.monotonic() - started
    rejected = len(stream.errors)
    for rejection in stream.errors:
        sequence = getattr(rejection, "sequence", "?")
        print(f"centroidal: batch {sequence} rejected: {rejection}", file=sys.stderr)
    last = stream.last_ack
    version = last.version if last is not None else 0
    print(
        f"model {options.model} version {version}: {sent} batches ({total} points) sent in "
        f"{elapsed:.2f}s: {sent - rejected - duplicates} learnt, {duplicates} already in the "
        f"model, {rejected} rejected; producer {stream.producer_id}, durable through "
        f"sequence {stream.durable_sequence}"
    )
    return 1 if rejected else 0


_SUFFIX_FORMATS = {
    ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".bmp": "bmp", ".tif": "tiff",
    ".tiff": "tiff", ".gif": "gif",
}


def _scores_dict(scores: ClusterScores) -> dict[str, object]:
    return {
        "silhouette": scores.silhouette, "silhouette_rows": scores.silhouette_rows,
        "calinski_harabasz": scores.calinski_harabasz, "davies_bouldin": scores.davies_bouldin,
        "n_clusters_present": scores.n_clusters_present,
    }


def _evaluate(client: Client, options: argparse.Namespace) -> int:
    points = load_points(options.data, None)
    evaluation = client.evaluate(
        options.model, points, version=options.version,
        silhouette_sample_size=None if options.all_rows else options.sample_size, seed=options.sample_seed,
    )
    scores = evaluation.scores
    if options.json:
        print(json.dumps({"model": options.model, "version": evaluation.version,
                          "n_samples": evaluation.n_samples, "inertia": evaluation.inertia,
                          **_scores_dict(scores)}, indent=2))
        return 0
    undefined = "undefined (fewer than 2 clusters among the points)"
    print(f"{options.model} version {evaluation.version} on {evaluation.n_samples} points:")
    print(f"  inertia            {evaluation.inertia:.6g}")
    silhouette = undefined if scores.silhouette is None else (
        f"{scores.silhouette:.6f} (over {scores.silhouette_rows} rows)")
    print(f"  silhouette         {silhouette}")
    for label, value in (("calinski-harabasz", scores.calinski_harabasz), ("davies-bouldin", scores.davies_bouldin)):
        print(f"  {label:<18} {undefined if value is None else f'{value:.6f}'}")
    return 0


def _suggest_k(client: Client, options: argparse.Namespace) -> int:
    points = load_points(options.data, options.dtype)
    if options.plot is not None:
        figures.pyplot()  # a missing extra is said before the work, not after
    ks: range = options.k_range
    bar = None if options.quiet or options.json else progress_bar(desc="suggest-k", total=len(ks), unit="k")

    def progress(event: object) -> None:
        if bar is not None and isinstance(event, KScore):
            silhouette = event.scores.silhouette
            bar.set_postfix_str(f"k={event.n_clusters} silhouette={silhouette if silhouette is None else round(silhouette, 4)}")
            bar.update(1)

    try:
        suggestion = client.suggest_k(
            points, ks, metric=options.metric, n_init=options.n_init, max_iter=options.max_iter,
            seed=options.seed, silhouette_sample_size=None if options.all_rows else options.sample_size,
            save_best_as=options.save_best_as, on_progress=progress,
        )
    finally:
        if bar is not None:
            bar.close()
    if options.plot is not None:
        figures.suggest_k_figure(suggestion, options.plot)
    if options.json:
        print(json.dumps({
            "recommended_k": suggestion.recommended_k, "elbow_k": suggestion.elbow_k, "rule": suggestion.rule,
            "per_k": [{"k": entry.n_clusters, "inertia": entry.inertia, "n_iter": entry.n_iter,
                       **_scores_dict(entry.scores)} for entry in suggestion.per_k],
            "saved": None if suggestion.saved is None else {"name": suggestion.saved.name,
                                                            "version": suggestion.saved.version},
        }, indent=2))
        return 0
    print(suggestion.table())
    print(f"recommended k={suggestion.recommended_k}: {suggestion.rule}")
    if suggestion.saved is not None:
        print(f"saved as {suggestion.saved.name} version {suggestion.saved.version}")
    return 0


def _demo(client: Client, options: argparse.Namespace) -> int:
    steps = tuple(step.strip() for step in options.steps.split(",") if step.strip())
    unknown = [step for step in steps if step not in demo.STEPS]
    if unknown:
        raise ValueError(f"unknown demo steps {unknown}; choose from {', '.join(demo.STEPS)}")
    if not options.serve:
        demo.run(client, options.out, steps=steps)
        return 0
    with demo.private_server() as target, Client(target) as private:
        print(f"centroidal demo: a private server on {target}")
        demo.run(private, options.out, steps=steps)
    return 0


def _export(client: Client, options: argparse.Namespace) -> int:
    export_format = options.format
    if export_format is None and options.out is None:
        export_format = "npz"
    elif export_format is None:
        suffix = options.out.suffix.lstrip(".").lower()
        if suffix not in export.FORMATS:
            raise ValueError(f"cannot tell the format from {str(options.out)!r}: pass --format npz, json or onnx")
        export_format = suffix
    model = client.get_model(options.name, version=options.version, include_centers=True)
    data = export.to_bytes(model, export_format)
    path = options.out or Path(f"{options.name}.{export_format}")
    path.write_bytes(data)
    print(f"{path}: {options.name} version {model.version}, {model.n_clusters} centers of "
          f"{model.n_features} features, {export_format}, {len(data)} bytes")
    return 0


def _quantize(client: Client, options: argparse.Namespace) -> int:
    output_format = options.format or _SUFFIX_FORMATS.get(options.output.suffix.lower())
    if output_format is None:
        raise ValueError(
            f"cannot tell the output format from {options.output.name!r}: name it .png, .jpg, "
            ".webp, .bmp, .tif or .gif, or pass --format (same keeps the input's format)"
        )
    if options.plot is not None:
        figures.pyplot()  # a missing extra is said before the work, not after
    started = time.monotonic()
    result = client.quantize_image(
        options.input, options.colors, seed=options.seed, max_samples=options.max_samples,
        color_space=options.space, dither=options.dither, output_format=output_format,
        palette_model=options.palette_model, save_palette_as=options.save_palette_as,
    )
    options.output.write_bytes(result.image)
    if options.plot is not None:
        figures.quantize_figure(options.input.read_bytes(), result.image, result.palette, result.pixel_counts,
                                options.space, options.plot, options.seed or 0)
    for note in result.notes:
        print(f"centroidal: {note}", file=sys.stderr)
    saved = f", palette saved as version {result.saved_version}" if result.saved_version else ""
    print(
        f"{options.output}: {result.width}x{result.height} {result.format}, "
        f"{result.palette.shape[0]} colours, MSE {result.mse:.2f}, PSNR {result.psnr:.2f} dB, "
        f"{time.monotonic() - started:.3f}s{saved}"
    )
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
        "metric": model.metric,
        "durable_version": model.durable_version,
    }
    if model.kind == "minibatch-kmeans":
        described["n_batches"] = model.n_batches
        described["init_points_buffered"] = model.init_points_buffered
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


def _version() -> str:
    try:
        return metadata.version("centroidal")
    except metadata.PackageNotFoundError:  # run from a tree that is not installed
        return "unknown"


def _health(client: Client, options: argparse.Namespace) -> int:
    status = client.health(options.service)
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
