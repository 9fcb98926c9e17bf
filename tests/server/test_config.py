"""Flags, CENTROIDAL_* variables and defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from centroidal.server.config import ServerConfig, parse_args


def test_defaults_are_the_embedded_ones() -> None:
    config = parse_args([], env={})
    assert config == ServerConfig()
    assert config.address == "127.0.0.1:50051"
    assert config.data_dir == "./centroidal-data"


def test_environment_fills_in_for_missing_flags() -> None:
    env = {"CENTROIDAL_PORT": "6000", "CENTROIDAL_DATA_DIR": "/srv/models",
           "CENTROIDAL_TOKENS": "a, b", "CENTROIDAL_WARMUP": "false"}
    config = parse_args(["--port", "7000"], env=env)
    assert config.port == 7000
    assert config.data_dir == "/srv/models"
    assert config.tokens == ("a", "b")
    assert config.warmup is False


@pytest.mark.parametrize(
    "argv, env",
    [(["--port", "70000"], {}), (["--max-models", "0"], {}), ([], {"CENTROIDAL_PORT": "http"})],
)
def test_bad_settings_are_refused(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(SystemExit) as raised:
        parse_args(argv, env=env)
    assert raised.value.code == 2


def test_the_old_max_workers_flag_is_accepted_with_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    config = parse_args(["--max-workers", "8"], env={})
    assert config == ServerConfig()
    assert "--max-workers" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, size",
    [("2G", 2 << 30), ("512M", 512 << 20), ("1.5GiB", 3 << 29), ("64kb", 64 << 10), ("1T", 1 << 40),
     ("1073741824", 1 << 30)],
)
def test_sizes_take_units(text: str, size: int) -> None:
    assert parse_args(["--memory-budget", text], env={}).memory_budget == size
    assert parse_args([], env={"CENTROIDAL_MAX_FIT_BYTES": text}).max_fit_bytes == size


def test_a_size_that_is_not_one_is_refused_saying_how(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--memory-budget", "2X"], env={})
    assert "K, M, G or T" in capsys.readouterr().err


def test_servers_run_on_uvloop_unless_asked_for_asyncio(start_server) -> None:
    import asyncio

    import uvloop

    from centroidal.server.eventloop import EventLoop, new_loop

    start_server(port=0)
    assert isinstance(EventLoop.loop(), uvloop.Loop)  # the default, --event-loop uvloop
    assert parse_args(["--event-loop", "asyncio"], env={}).event_loop == "asyncio"
    for kind, expected, other in (("asyncio", asyncio.BaseEventLoop, uvloop.Loop),
                                  ("uvloop", uvloop.Loop, asyncio.BaseEventLoop)):
        loop = new_loop(kind)
        try:
            assert isinstance(loop, expected) and not isinstance(loop, other)
            assert loop.run_until_complete(asyncio.sleep(0, kind)) == kind
        finally:
            loop.close()


def test_the_log_names_the_port_bound_not_0(start_server, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.INFO, "centroidal.server")
    server = start_server(port=0)
    auth = next(record.getMessage() for record in caplog.records if record.getMessage().startswith("auth: OFF"))
    assert f"127.0.0.1:{server.port}" in auth and server.port != 0


@pytest.mark.parametrize(
    "argv, field",
    [(["--workers", "0"], "--workers"), (["--workers", "many"], "--workers"),
     (["--workers", "2", "--worker-port-base", "65535"], "--worker-port-base"),
     (["--lease-ttl", "0.5"], "--lease-ttl"), (["--store-poll-interval", "-1"], "--store-poll-interval"),
     (["--store", "mysql://db/models"], "--store"), (["--store-password-file", "/nowhere"], "--store-password-file"),
     (["--store", "postgresql://db/m", "--store-password-file", "/nowhere"], "--store-password-file"),
     (["--event-loop", "trio"], "--event-loop")],
)
def test_bad_replica_settings_name_their_flag(argv: list[str], field: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv, env={})
    assert field in capsys.readouterr().err


def test_workers_auto_is_the_cores_this_process_may_use() -> None:
    import os

    assert parse_args(["--workers", "auto"], env={}).worker_count == len(os.sched_getaffinity(0))
    assert parse_args([], env={"CENTROIDAL_WORKERS": "3"}).worker_count == 3



def test_the_store_poll_interval_defaults_to_each_stores_own() -> None:
    assert parse_args([], env={}).poll_interval == 0.1
    on_postgres = parse_args([], env={"CENTROIDAL_STORE": "postgresql://db.internal/models"})
    assert on_postgres.store == "postgresql://db.internal/models" and on_postgres.poll_interval == 2.0
    assert parse_args(["--store-poll-interval", "0.5"], env={}).poll_interval == 0.5


def test_a_password_in_a_store_flag_is_warned_about_and_never_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    parse_args(["--store", "postgresql://centroidal:hunter2@db/models"], env={})
    assert "shows in `ps`" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--store", "mysql://centroidal:hunter2@db/models"], env={})
    assert "hunter2" not in capsys.readouterr().err


def test_dataset_roots_repeat_as_flags_or_list_in_the_environment(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    flags = parse_args(["--dataset-root", str(first), "--dataset-root", str(second)], env={})
    assert flags.dataset_root == (str(first), str(second))
    listed = parse_args([], env={"CENTROIDAL_DATASET_ROOT": f"{first}, {second}",
                                 "CENTROIDAL_DATASET_OUTPUT_ROOT": str(second)})
    assert listed.dataset_root == (str(first), str(second)) and listed.dataset_output_root == (str(second),)
    assert parse_args([], env={}).dataset_root == ()


@pytest.mark.parametrize("argv, message", [
    (["--dataset-root", "/no/such/dir"], "--dataset-root '/no/such/dir' is not a directory"),
    (["--dataset-output-root", "relative"], "must be an absolute path"),
    (["--dask-local", "2"], "give --dataset-root too"),
    (["--dataset-root", "{tmp}", "--dask-local", "2", "--dask-scheduler", "tcp://h:8786"], "give one"),
    (["--dataset-root", "{tmp}", "--dask-scheduler", "h:8786"], "an address such as tcp://host:8786"),
    (["--dataset-root", "{tmp}", "--dask-local", "2", "--workers", "2"], "give every worker --dask-scheduler"),
])
def test_bad_dataset_settings_name_their_flag(argv: list[str], message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args([arg.format(tmp=tmp_path) for arg in argv], env={})
    assert message in capsys.readouterr().err
