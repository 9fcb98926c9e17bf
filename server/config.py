"""Server configuration: command-line flags with CENTROIDAL_* environment variables behind them."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields

from .memory import default_budget, usable_cores

MIB = 1024 * 1024
# The event loops a server can run on (--event-loop).
EVENT_LOOPS = ("uvloop", "asyncio")


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``create_server`` needs; defaults are the embedded ones ``make serve`` uses."""

    host: str = "127.0.0.1"
    port: int = 50051
    data_dir: str = "./centroidal-data"
    max_message_bytes: int = 16 * MIB
    max_models: int = 1000
    max_clusters: int = 4096
    max_features: int = 4096
    max_points: int = 50_000_000
    max_fit_bytes: int = 4096 * MIB
    max_image_pixels: int = 50_000_000
    max_image_bytes: int = 256 * MIB
    max_concurrent_fits: int = 4
    keep_versions: int = 5
    max_concurrent_rpcs: int = 10_000
    idle_timeout: float = 60.0
    cpu_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    grace_period: float = 10.0
    checkpoint_interval: float = 1.0
    memory_budget: int = field(default_factory=default_budget)
    min_free_disk: int = 64 * MIB
    max_store_bytes: int = 0
    max_producers: int = 10_000
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    metrics_auth: bool = False
    tokens: tuple[str, ...] = field(default_factory=tuple)
    token_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    log_level: str = "INFO"
    event_loop: str = "uvloop"
    warmup: bool = True
    warmup_before_serving: bool = False
    workers: str = "1"
    worker_port_base: int = 0
    advertise_host: str = ""
    store: str = ""
    store_password_file: str = ""
    store_notify: bool = True
    store_poll_interval: float = 0.0
    lease_ttl: float = 10.0
    dataset_root: tuple[str, ...] = field(default_factory=tuple)
    dataset_output_root: tuple[str, ...] = field(default_factory=tuple)
    dask_scheduler: str = ""
    dask_local: int = 0
    shared_memory: bool = True

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def poll_interval(self) -> float:
        """--store-poll-interval, or the store's own default: 0.1 s on SQLite, whose look costs
        no table read, and 2 s on PostgreSQL, where NOTIFY hints at writes in between."""
        if self.store_poll_interval:
            return self.store_poll_interval
        return 2.0 if self.store else 0.1

    @property
    def worker_count(self) -> int:
        """--workers as a number: ``auto`` is the cores this process may run on."""
        if self.workers == "auto":
            return usable_cores()
        return int(self.workers)


_HELP = {
    "host": "address to bind",
    "port": "port to bind; 0 picks a free one",
    "data_dir": "directory of the SQLite model store",
    "max_message_bytes": "largest gRPC message accepted or sent",
    "max_models": "most models the server holds",
    "max_clusters": "largest n_clusters of a fit",
    "max_features": "most features (columns) per point",
    "max_points": "most points in one fit or one predict message",
    "max_fit_bytes": "largest fit dataset in bytes",
    "max_image_pixels": "largest image QuantizeImage decodes, in pixels (checked before decoding)",
    "max_image_bytes": "largest encoded image QuantizeImage accepts, in bytes",
    "max_concurrent_fits": "fits running at once; more are refused with RESOURCE_EXHAUSTED",
    "keep_versions": "fit versions kept per model for pinned predicts",
    "max_concurrent_rpcs": "calls open at once (an open stream is one; health checks are not "
    "counted); more are refused with RESOURCE_EXHAUSTED",
    "idle_timeout": "seconds a call may wait for the client's next message; past that it ends "
    "with DEADLINE_EXCEEDED",
    "cpu_workers": "threads that run Predict and streamed batches (numba kernels release the GIL)",
    "grace_period": "seconds in-flight calls get to finish on SIGTERM",
    "checkpoint_interval": "seconds between checkpoints of models fed by StreamMiniBatch",
    "memory_budget": "bytes the server may hold in models, uploads and images (a size such as 2G, "
    "K/M/G/T being powers of 1024, like every size here); a request that "
    "would go past it is refused up front with RESOURCE_EXHAUSTED (default: 60%% of the "
    "machine's or the container's memory)",
    "min_free_disk": "writes are refused (RESOURCE_EXHAUSTED) while the data directory's disk has "
    "fewer free bytes than this; reads and deletes go on",
    "max_store_bytes": "largest the model store may grow, in bytes; 0 leaves it to the disk",
    "max_producers": "most producer ids whose last sequence one streamed model remembers",
    "metrics_port": "port for Prometheus metrics at /metrics; 0 turns them off",
    "metrics_host": "address the metrics endpoint binds (loopback unless you expose it)",
    "metrics_auth": "the metrics endpoint requires the same bearer token as gRPC calls",
    "tokens": "bearer tokens clients must send: one per line in --token-file, or comma-separated "
    "in CENTROIDAL_TOKEN (the variable the SDK reads); none means no authentication",
    "token_file": "file of bearer tokens, one per line (# comments); re-read when it changes, "
    "so tokens rotate without a restart",
    "tls_cert": "PEM certificate chain; with --tls-key the server speaks TLS only",
    "tls_key": "PEM private key of --tls-cert",
    "tls_client_ca": "PEM CA bundle: clients must present a certificate it signed (mutual TLS)",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
    "event_loop": "uvloop (the default: less CPU per call) or asyncio, Python's own loop, which "
    "is also used where uvloop is not installed",
    "shared_memory": "let Predict callers and StreamMiniBatch producers on this host name their "
    "rows in a POSIX shared-memory object (/dev/shm) that belongs to the server's user, instead "
    "of sending them",
    "warmup": "compile every kernel at start (in the background once SERVING, unless "
    "--warmup-before-serving); a request for a kernel not yet compiled compiles it first",
    "warmup_before_serving": "finish the warm-up before reporting SERVING (slower start, and "
    "no request ever waits for a compilation)",
    "workers": "server processes sharing the port and the store (SO_REUSEPORT), each a replica "
    "under one supervisor that restarts any that dies; a number, or auto for the cores available",
    "worker_port_base": "with --workers, worker i also listens on this port + i, the address producers "
    "are sent to when it owns their model's stream (publish these ports from a container); 0 "
    "lets each worker pick a free one",
    "advertise_host": "host that producers sent to this worker's own port use to reach it "
    "(default: --host, or this machine's name when --host binds every address)",
    "store": "where models are kept: empty for SQLite in --data-dir (one host); a postgresql:// URL "
    "(libpq's: sslmode and the rest go in it) for one database that replicas on many hosts share "
    "(needs the postgres extra: pip install 'centroidal[postgres]'); keep a password out of it "
    "(PGPASSFILE, or --store-password-file)",
    "store_password_file": "file whose first line is the PostgreSQL password (never logged)",
    "store_notify": "on PostgreSQL, LISTEN for the NOTIFY other replicas send with each write; "
    "--no-store-notify leaves only the poll (for a pooler that does not pass LISTEN through, such "
    "as PgBouncer in transaction mode)",
    "store_poll_interval": "seconds between a replica's looks at the store for other replicas' "
    "writes; 0 is 0.1 on SQLite (which is also asked before every read of a model) and 2 on "
    "PostgreSQL (where a NOTIFY brings other replicas' writes at once)",
    "lease_ttl": "seconds a stream's owner holds its lease without renewing it; a replica that "
    "dies without its supervisor noticing gives its streams up this long after",
    "dataset_root": "a directory (or an fsspec URL prefix such as s3://bucket/points) under which a "
    "Fit may name its dataset instead of uploading it; repeat for more, or comma-separate in "
    "CENTROIDAL_DATASET_ROOT; none means the server reads no datasets",
    "dataset_output_root": "a directory (or fsspec URL prefix) under which PredictDataset may write "
    "labels; repeat for more, or comma-separate in CENTROIDAL_DATASET_OUTPUT_ROOT; none means "
    "PredictDataset writes nowhere",
    "dask_scheduler": "address of a Dask scheduler (tcp://host:8786) whose workers fit datasets, one "
    "task per partition (they need centroidal[server,dask] and the dataset roots at the same paths)",
    "dask_local": "start a Dask LocalCluster of this many worker processes here to fit datasets; 0: "
    "none (datasets are fitted in this process unless --dask-scheduler is set)",
}


def _env_name(name: str) -> str:
    return "CENTROIDAL_" + name.upper()


# Settings counted in bytes, which take a size with a unit too ("2G").
SIZE_SETTINGS = ("max_message_bytes", "max_fit_bytes", "max_image_bytes", "memory_budget",
                 "min_free_disk", "max_store_bytes")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", re.IGNORECASE)


def byte_size(text: str) -> int:
    """A number of bytes, plain ("1073741824") or with a unit: K, M, G or T, each a power of
    1024, alone or as KiB/KB ("512M", "2G", "1.5GiB" are all read so)."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size: give bytes, or a number with K, M, G or T (powers of 1024)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def parse_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> ServerConfig:
    """Build a ServerConfig from flags, falling back to CENTROIDAL_* variables, then defaults."""
    env = os.environ if env is None else env
    defaults = ServerConfig()
    parser = argparse.ArgumentParser(
        prog="centroidal serve",
        description="Serve k-means models over gRPC. Every flag also reads CENTROIDAL_<FLAG>.",
    )
    for spec in fields(ServerConfig):
        flag = "--" + spec.name.replace("_", "-")
        env_key = _env_name(spec.name)
        default = getattr(defaults, spec.name)
        help_text = f"{_HELP[spec.name]} (env {env_key}; default {default!r})"
        if spec.name in ("dataset_root", "dataset_output_root"):
            parser.add_argument(flag, dest=spec.name, action="append", default=None, help=help_text)
            continue
        if spec.name == "tokens":
            # On the command line a token shows in `ps`: the flag is kept, with a warning.
            parser.add_argument("--token", dest="tokens", action="append", default=None,
                                help=argparse.SUPPRESS)
            continue
        if isinstance(default, bool):
            value = env.get(env_key)
            switch = default if value is None else value.lower() not in ("0", "false", "no")
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=switch,
                                help=help_text)
            continue
        kind: Callable[[str], object] = byte_size if spec.name in SIZE_SETTINGS else type(default)
        raw_env = env.get(env_key)
        try:
            env_default = kind(raw_env) if raw_env is not None else default
        except ValueError as exc:
            parser.error(f"{env_key}={raw_env!r} is not valid: {exc}")
        parser.add_argument(flag, type=_named(kind), default=env_default, help=help_text)
    # Threads per call are gone with the grpc.aio server; the flag is still accepted.
    parser.add_argument("--max-workers", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    values = vars(args)
    if values.pop("max_workers") is not None or env.get("CENTROIDAL_MAX_WORKERS"):
        print(
            "centroidal serve: --max-workers (CENTROIDAL_MAX_WORKERS) no longer does anything: "
            "an open call costs no thread; see --max-concurrent-rpcs and --cpu-workers",
            file=sys.stderr,
        )
    values["tokens"] = _tokens(values["tokens"], env)
    for name in ("dataset_root", "dataset_output_root"):
        roots = values[name] or [root.strip() for root in env.get(_env_name(name), "").split(",")]
        values[name] = tuple(root for root in roots if root)
    config = ServerConfig(**values)
    _check(config, parser, sys.argv[1:] if argv is None else argv)
    return config


def _named(kind: Callable[[str], object]) -> Callable[[str], object]:
    """``kind`` as an argparse type whose refusal says why (argparse shows a ValueError's
    message only for an ArgumentTypeError)."""
    def parse(text: str) -> object:
        try:
            return kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


TOKEN_ENV = "CENTROIDAL_TOKEN"


def _tokens(flagged: list[str] | None, env: Mapping[str, str]) -> tuple[str, ...]:
    """Tokens from CENTROIDAL_TOKEN (comma-separated), or from the old places with a warning:
    --token, which shows in `ps`, and CENTROIDAL_TOKENS, which the SDK never read."""
    tokens = [token.strip() for token in env.get(TOKEN_ENV, "").split(",") if token.strip()]
    if flagged:
        print("centroidal serve: --token shows in `ps` to every user of the machine; use "
              "--token-file or CENTROIDAL_TOKEN", file=sys.stderr)
        tokens += flagged
    old = [token.strip() for token in env.get("CENTROIDAL_TOKENS", "").split(",") if token.strip()]
    if old:
        print("centroidal serve: CENTROIDAL_TOKENS is read for now, but renamed CENTROIDAL_TOKEN, "
              "the variable the SDK and the CLI read", file=sys.stderr)
        tokens += old
    return tuple(dict.fromkeys(tokens))


def read_token_file(path: str) -> tuple[str, ...]:
    """Tokens in a file: one per line; blank lines and # comments are skipped."""
    with open(path, encoding="utf-8") as handle:
        lines = (line.split("#", 1)[0].strip() for line in handle)
        return tuple(dict.fromkeys(line for line in lines if line))


def _check(config: ServerConfig, parser: argparse.ArgumentParser, arguments: Sequence[str]) -> None:
    positive = ("memory_budget", "max_message_bytes", "max_models", "max_clusters", "max_features", "max_points",
                "max_fit_bytes", "max_concurrent_fits", "keep_versions", "max_concurrent_rpcs",
                "cpu_workers",
                "max_producers", "max_image_pixels", "max_image_bytes")
    for name in positive:
        if getattr(config, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    for name in ("port", "metrics_port", "worker_port_base"):
        if not 0 <= getattr(config, name) <= 65535:
            parser.error(f"--{name.replace('_', '-')} must be 0-65535, got {getattr(config, name)}")
    for name in ("min_free_disk", "max_store_bytes"):
        if getattr(config, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(config, name)}")
    if config.grace_period < 0:
        parser.error(f"--grace-period must be >= 0, got {config.grace_period}")
    if not config.idle_timeout > 0:
        parser.error(f"--idle-timeout must be > 0, got {config.idle_timeout}")
    if config.workers != "auto" and not (config.workers.isdigit() and 1 <= int(config.workers) <= 256):
        parser.error(f"--workers must be a number from 1 to 256, or auto, got {config.workers!r}")
    if config.worker_port_base and config.worker_port_base + config.worker_count - 1 > 65535:
        parser.error(f"--worker-port-base {config.worker_port_base} leaves no port for worker "
                     f"{config.worker_count - 1}: the last is --worker-port-base + workers - 1")
    if not config.store_poll_interval >= 0:
        parser.error(f"--store-poll-interval must be >= 0 (0: the store's default), got {config.store_poll_interval}")
    _check_store(config, parser, any(arg == "--store" or arg.startswith("--store=") for arg in arguments))
    if not config.lease_ttl >= 1:
        parser.error(f"--lease-ttl must be at least 1 second, got {config.lease_ttl}")
    if not config.checkpoint_interval > 0:
        parser.error(f"--checkpoint-interval must be > 0, got {config.checkpoint_interval}")
    if bool(config.tls_cert) != bool(config.tls_key):
        parser.error("--tls-cert and --tls-key go together: give both, or neither")
    if config.tls_client_ca and not config.tls_cert:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key: client certificates are checked over TLS")
    for name in ("tls_cert", "tls_key", "tls_client_ca", "token_file"):
        path = getattr(config, name)
        if path and not os.path.isfile(path):
            parser.error(f"--{name.replace('_', '-')} {path!r} is not a readable file")
    if config.token_file:
        try:
            if not read_token_file(config.token_file):
                parser.error(f"--token-file {config.token_file!r} holds no token")
        except (OSError, UnicodeDecodeError) as exc:
            parser.error(f"--token-file {config.token_file!r} cannot be read: {exc}")
    if config.metrics_auth and not (config.tokens or config.token_file):
        parser.error("--metrics-auth needs tokens (--token-file or CENTROIDAL_TOKEN)")
    _check_datasets(config, parser)
    if config.event_loop not in EVENT_LOOPS:
        parser.error(f"--event-loop must be {' or '.join(EVENT_LOOPS)}, got {config.event_loop!r}")
    if config.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        parser.error(f"--log-level must be DEBUG, INFO, WARNING or ERROR, got {config.log_level}")


def _check_store(config: ServerConfig, parser: argparse.ArgumentParser, flagged: bool) -> None:
    """flagged: the URL came as a flag, which every user of the machine sees in `ps`."""
    if config.store and not config.store.startswith(("postgresql://", "postgres://")):
        shown = config.store.split("@")[-1]  # never echo what may be a password
        parser.error(f"--store must be empty (SQLite in --data-dir) or a postgresql:// URL, got one ending {shown!r}")
    if config.store_password_file and not config.store:
        parser.error("--store-password-file is for a PostgreSQL --store")
    if config.store_password_file and not os.path.isfile(config.store_password_file):
        parser.error(f"--store-password-file {config.store_password_file!r} is not a readable file")
    if flagged and re.match(r"postgres(?:ql)?://[^/@]*:[^/@]*@", config.store):
        print("centroidal serve: the --store URL holds a password, which shows in `ps` when given as "
              "a flag; prefer CENTROIDAL_STORE, PGPASSFILE or --store-password-file", file=sys.stderr)


def _check_datasets(config: ServerConfig, parser: argparse.ArgumentParser) -> None:
    from centroidal.sources import DatasetError, Roots

    try:
        Roots(config.dataset_root)
        Roots(config.dataset_output_root, "--dataset-output-root")
    except (ValueError, DatasetError) as exc:
        parser.error(str(exc))
    if config.dask_scheduler and config.dask_local:
        parser.error("--dask-scheduler and --dask-local are two ways to reach a cluster: give one")
    if not 0 <= config.dask_local <= 256:
        parser.error(f"--dask-local must be 0-256 worker processes, got {config.dask_local}")
    if (config.dask_scheduler or config.dask_local) and not config.dataset_root:
        parser.error("--dask-scheduler and --dask-local fit datasets: give --dataset-root too")
    if config.dask_local and config.workers != "1":
        parser.error("--dask-local starts a cluster in each of the --workers processes: run one Dask cluster "
                     "(dask scheduler, dask worker) and give every worker --dask-scheduler instead")
    if config.dask_scheduler and "://" not in config.dask_scheduler:
        parser.error(f"--dask-scheduler must be an address such as tcp://host:8786, got {config.dask_scheduler!r}")
    if config.dask_scheduler or config.dask_local:
        try:
            import distributed  # noqa: F401
        except ImportError:
            parser.error("--dask-scheduler and --dask-local need Dask: pip install 'centroidal[dask]'")
