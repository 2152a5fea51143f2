"""Configuration errors name where a value came from (flag, variable, file key) with the
value; unknown REGISTRY_CACHE_* variables are warnings naming the closest known one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from registry_cache.cli.main import cli
from registry_cache.config import (
    ENV_SETTINGS,
    build_settings,
    known_env_names,
    unknown_env_warnings,
)
from registry_cache.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith(("REGISTRY_", "DOCKERHUB_", "GHCR_", "QUAY_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def error(**kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        build_settings(dotenv=None, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def test_errors_name_the_flag_variable_or_file_key_with_the_value(tmp_path: Path) -> None:
    assert error(environ={}, flags={"tag_ttl": "soon"}).startswith(
        "invalid configuration: tag_ttl (--tag-ttl soon): invalid duration 'soon'"
    )
    assert error(environ={"REGISTRY_CACHE_WORKERS": "many"}).startswith(
        "invalid configuration: workers (REGISTRY_CACHE_WORKERS=many): "
    )
    config = tmp_path / "sub" / "cache.yaml"
    config.parent.mkdir()
    config.write_text("max_size: huge\n")
    assert error(environ={}, config_file=Path("sub/cache.yaml")).startswith(
        f"invalid configuration: max_size (max_size: huge in {config}): "
    )


def test_where_a_value_came_from_never_shows_a_secret() -> None:
    message = error(environ={}, flags={"proxy_password": "hunter2"})
    assert message == (
        "invalid configuration: proxy_password (--proxy-password ********): unknown setting"
    )
    message = error(
        environ={},
        flags={"index": "postgresql://u@db/x", "cluster_secret": "s3cr3t-value-0123456789"},
    )
    assert "advertise" in message and "s3cr3t-value" not in message
    message = error(environ={"REGISTRY_CACHE_LISTEN": "http://bob:hunter2@host:1"})
    assert "REGISTRY_CACHE_LISTEN=http://bob:********@host:1" in message
    assert "hunter2" not in message


def test_config_file_errors_give_the_absolute_path(tmp_path: Path) -> None:
    assert error(environ={}, config_file=Path("missing.yaml")) == (
        f"cannot read config file {tmp_path / 'missing.yaml'}: No such file or directory"
    )


def test_origin_of_a_valid_setting() -> None:
    env = {"REGISTRY_CACHE_DATA_DIR": "d"}
    assert build_settings(environ=env, dotenv=None).origin("data_dir") == (
        "REGISTRY_CACHE_DATA_DIR=d"
    )
    assert build_settings(environ={}, dotenv=None).origin("data_dir") == "default data_dir: data"


def test_unknown_variables_name_the_closest_known_one() -> None:
    env = {"REGISTRY_CACHE_MAXSIZE": "1GB", "REGISTRY_CACHE_TAG_TTL": "5m", "PATH": "/bin"}
    assert unknown_env_warnings(env) == [
        "REGISTRY_CACHE_MAXSIZE is not a known setting; did you mean REGISTRY_CACHE_MAX_SIZE?"
    ]
    assert unknown_env_warnings({"REGISTRY_CACHE_ZZZZZZZZZZZZZZ": "1"}) == [
        "REGISTRY_CACHE_ZZZZZZZZZZZZZZ is not a known setting"
    ]


def test_known_variables_come_from_env_settings() -> None:
    """One list: a setting added to ENV_SETTINGS is known, with no other change."""
    assert set(known_env_names()) == {
        "REGISTRY_CACHE_CONFIG",
        *(f"REGISTRY_CACHE_{key.upper()}" for key in ENV_SETTINGS),
    }
    assert unknown_env_warnings({f"REGISTRY_CACHE_{k.upper()}": "x" for k in ENV_SETTINGS}) == []


def test_the_cli_warns_once_on_stderr_and_carries_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_CACHE_MAXSIZE", "1GB")
    result = CliRunner().invoke(cli, ["registries", "--domain", "example.test"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "registry-cache: warning: REGISTRY_CACHE_MAXSIZE is not a known setting; "
        "did you mean REGISTRY_CACHE_MAX_SIZE?"
    ]
