"""The `centroidal` command: its parser, and the entry point that runs a command against a
server (the commands themselves are in ``commands``). `serve` and `store` are the server's."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from centroidal import codec

from . import commands, demo, export
from .client import Client
from .errors import CentroidalError
from .transport import default_target

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
    except BrokenPipeError:
        # The reader went away (`centroidal predict ... | head`): not an error of ours. What is
        # still buffered goes nowhere, and the exit status is a shell's for SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
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
    subcommands = parser.add_subparsers(title="commands", metavar="{serve,store,fit,predict,stream,evaluate,suggest-k,quantize,get,export,delete,models,health,demo}")
    subcommands.add_parser("serve", help="run the server (see `centroidal serve --help`)")
    subcommands.add_parser("store", help="check or back up a data directory (`centroidal store --help`)")

    def command(name: str, help_text: str, within: Any = subcommands) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = within.add_parser(name, help=help_text, parents=[common])
        return sub

    fit = command("fit", "fit a model on a .npy or .csv file, or on a dataset the server reads")
    _data_options(fit, optional=True)
    _source_options(fit, "instead of a file to upload, a dataset under one of the server's --dataset-root: "
                         "Parquet or .npy files (a path, a directory, a glob, or a URL fsspec knows), fitted on "
                         "the server's Dask cluster when it has one")
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
    fit.set_defaults(run=commands.fit)

    labels = command("predict-dataset", "label every row of a dataset the server reads, into Parquet files "
                     "the server writes")
    labels.add_argument("--model", required=True)
    labels.add_argument("--version", type=int, default=None, help="pin a model version")
    _source_options(labels, "the dataset, under one of the server's --dataset-root (as fit --source)",
                    required=True, weights=False)
    labels.add_argument("--output", required=True, metavar="URI",
                        help="directory under one of the server's --dataset-output-root")
    labels.add_argument("--distances", action="store_true", help="also write each row's distance")
    labels.add_argument("--overwrite", action="store_true", help="replace an earlier run's files")
    labels.add_argument("--call-timeout", dest="fit_timeout", type=float, default=24 * 3600.0,
                        help="seconds for the whole call")
    labels.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    labels.set_defaults(run=commands.predict_dataset)

    predict = command("predict", "label the points of a .npy or .csv file")
    _data_options(predict)
    predict.add_argument("--model", required=True)
    predict.add_argument("--version", type=int, default=None, help="pin a model version")
    predict.add_argument("--dtype", choices=["float32", "float64"], default=None)
    predict.add_argument("--distances", action="store_true", help="also output the distance")
    predict.add_argument("--out", type=Path, default=None,
                         help="write labels to .npy or .csv instead of standard output")
    predict.set_defaults(run=commands.predict)

    stream = command("stream", "feed a .npy or .csv file, or a dataset, to a mini-batch model, batch by batch")
    _data_options(stream, optional=True)
    _source_options(stream, "instead of a file: a Parquet or .npy dataset this machine reads (a path, directory, "
                            "glob, or fsspec URL), sent partition by partition; rerun with the same arguments "
                            "after a crash and the server takes each batch once")
    stream.add_argument("--resume-file", default="", metavar="PATH",
                        help="with --source: keep the last durable batch here, and start after it when the "
                             "file exists (a run that crashed resumes where the server's disk stopped)")
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
                        help="producer identity; with --first-sequence, resumes an earlier run (with --source "
                             "the default is derived from the dataset and batch size)")
    stream.add_argument("--first-sequence", type=int, default=1,
                        help="sequence of the file's first batch; batches the model already has "
                             "are skipped by the server")
    stream.add_argument("--dtype", choices=["float32", "float64"], default=None)
    stream.add_argument("--window", type=int, default=16, help="batches in flight (default 16)")
    stream.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    stream.set_defaults(run=commands.stream)

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
    quantize.set_defaults(run=commands.quantize)

    evaluate = command("evaluate", "score a model on a .npy or .csv file: inertia, silhouette, "
                                   "Calinski-Harabasz, Davies-Bouldin")
    _data_options(evaluate)
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--version", type=int, default=None, help="pin a model version")
    _silhouette_options(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print the scores as JSON")
    evaluate.set_defaults(run=commands.evaluate)

    suggest = command("suggest-k", "fit a range of k and recommend one by silhouette")
    _data_options(suggest)
    suggest.add_argument("--k", dest="k_range", type=_k_range, default=range(2, 11),
                         help="values of k to try, as FIRST..LAST (default 2..10)")
    suggest.add_argument("--metric", choices=list(codec.METRICS.numbers), default="euclidean")
    suggest.add_argument("--init", choices=list(_NAMED_INITS), default="k-means++")
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
    suggest.set_defaults(run=commands.suggest_k)

    export_command = command("export", "write a model's centers and description to a file")
    export_command.add_argument("name")
    export_command.add_argument("--format", choices=list(export.FORMATS), default=None,
                                help="npz, json or onnx (default: from --out's suffix, else npz)")
    export_command.add_argument("--out", type=Path, default=None,
                                help="where to write (default NAME.FORMAT)")
    export_command.add_argument("--version", type=int, default=None, help="pin a model version")
    export_command.set_defaults(run=commands.export_model)

    top_get = command("get", "describe one model as JSON (as `models get`)")
    top_get.add_argument("name")
    top_get.add_argument("--centers", action="store_true", help="include the centers")
    top_get.set_defaults(run=commands.models_get)
    top_delete = command("delete", "delete one model (as `models delete`)")
    top_delete.add_argument("name")
    top_delete.add_argument("--expected-version", type=int, default=None)
    top_delete.set_defaults(run=commands.models_delete)

    models = command("models", "list, show or delete models")
    actions = models.add_subparsers(metavar="{list,get,delete}")
    listing = command("list", "list every model", actions)
    listing.set_defaults(run=commands.models_list)
    get = command("get", "describe one model as JSON", actions)
    get.add_argument("name")
    get.add_argument("--centers", action="store_true", help="include the centers")
    get.set_defaults(run=commands.models_get)
    delete = command("delete", "delete one model", actions)
    delete.add_argument("name")
    delete.add_argument("--expected-version", type=int, default=None)
    delete.set_defaults(run=commands.models_delete)
    models.set_defaults(run=commands.models_list)

    health = command("health", "exit 0 only when the server is SERVING")
    health.add_argument("--service", default="", help="service name to check (default: overall)")
    health.set_defaults(run=commands.health)

    walkthrough = command("demo", "run the k-means walkthrough through the SDK and write its figures")
    walkthrough.add_argument("--out", type=Path, default=Path("centroidal-demo"),
                             help="directory for the PNG figures (default ./centroidal-demo)")
    walkthrough.add_argument("--serve", action="store_true",
                             help="start a private server for the run instead of using --target")
    walkthrough.add_argument("--steps", default=",".join(demo.STEPS),
                             help=f"comma-separated steps to run (default all: {','.join(demo.STEPS)})")
    walkthrough.set_defaults(run=commands.walkthrough)
    return parser


def _source_options(parser: argparse.ArgumentParser, source_help: str, *, required: bool = False,
                    weights: bool = True) -> None:
    """--source and what describes it: --columns, --format and (with ``weights``) --weight-column."""
    given = "" if required else "with --source: "
    parser.add_argument("--source", required=required, default=None, metavar="URI", help=source_help)
    parser.add_argument("--columns", default="", help=f"{given}feature columns, comma-separated (Parquet names, "
                        ".npy column numbers; default all)")
    parser.add_argument("--format", choices=list(codec.DATASET_FORMATS.numbers), default="",
                        help=f"{given}the files' format (default: from the extension)")
    if weights:
        parser.add_argument("--weight-column", default="", help=f"{given}a Parquet column of sample weights")


def _data_options(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    parser.add_argument("data", type=Path, nargs="?" if optional else None,
                        help="points, one row per sample: .npy, or comma-separated "
                        "text (lines counted from 1 in messages; # comments and blank lines skipped)")
    parser.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                        help="the CSV's first line is a header (--no-header: it is data); by default "
                             "a first line of no numbers is a header, and one of numbers and words is "
                             "refused as likely broken data")


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
    parser.add_argument("--token-file", default=default(None),
                        help="token file as the server reads it: one token per line, # comments; "
                             "the first token is sent")
    parser.add_argument("--tls", action="store_true", default=default(False),
                        help="speak TLS (implied by --tls-ca and --tls-cert)")
    parser.add_argument("--tls-ca", default=default(None), help="PEM roots to check the server against")
    parser.add_argument("--tls-cert", default=default(None), help="PEM client certificate, for mutual TLS")
    parser.add_argument("--tls-key", default=default(None), help="PEM private key of --tls-cert")
    parser.add_argument("--timeout", type=float, default=default(60.0), help="seconds per call")


def _version() -> str:
    try:
        return metadata.version("centroidal")
    except metadata.PackageNotFoundError:  # run from a tree that is not installed
        return "unknown"




if __name__ == "__main__":
    sys.exit(main())
