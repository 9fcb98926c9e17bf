"""Flags, CENTROIDAL_* variables and defaults."""

from __future__ import annotations

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
