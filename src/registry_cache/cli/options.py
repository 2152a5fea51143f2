"""Options shared by every command that needs the cache's configuration."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..config import Settings, build_settings, read_environment, unknown_env_warnings
from ..datadir import DataDir, DataDirError, check
from .main import CliError

F = TypeVar("F", bound=Callable[..., Any])

_SETTING_FLAGS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (
        ("--config", "config_file"),
        {
            "type": click.Path(dir_okay=False, path_type=Path),
            "help": "YAML config file (env: REGISTRY_CACHE_CONFIG).",
        },
    ),
    (("--listen",), {"metavar": "HOST:PORT", "help": "Address to listen on [0.0.0.0:5000]."}),
    (
        ("--data-dir",),
        {
            # Not file_okay=False: datadir.check says what is wrong, in one line.
            "type": click.Path(path_type=Path),
            "help": "Where blobs and the index live [./data].",
        },
    ),
    (("--domain",), {"help": "Virtual-host domain: <upstream>.<domain> (env: REGISTRY_DOMAIN)."}),
    (
        ("--upstream", "upstreams"),
        {
            "multiple": True,
            "metavar": "NAME=URL",
            "help": "Add an upstream or override a default's URL; NAME=none removes one.",
        },
    ),
    (
        ("--default-upstream",),
        {"metavar": "NAME|none", "help": "Upstream for requests no other rule routes [docker.io]."},
    ),
    (
        ("--tag-ttl",),
        {
            "metavar": "DURATION",
            "help": "Serve a cached tag this long before revalidating (all upstreams) [5m].",
        },
    ),
    (
        ("--log-level",),
        {"type": click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)},
    ),
    (
        ("--index",),
        {
            "metavar": "URL",
            "help": "postgresql://USER@HOST:PORT/DB shared by replicas (cluster mode)"
            " [SQLite in the data directory].",
        },
    ),
    (
        ("--index-password-file",),
        {
            "type": click.Path(dir_okay=False, path_type=Path),
            "help": "File holding the PostgreSQL password (env: REGISTRY_CACHE_INDEX_PASSWORD).",
        },
    ),
    (
        ("--storage",),
        {
            "metavar": "s3://BUCKET/PREFIX",
            "help": "Shared content tier behind the data directory (credentials: the AWS"
            " environment) [none].",
        },
    ),
    (
        ("--s3-endpoint",),
        {"metavar": "URL", "help": "S3-compatible endpoint of --storage [AWS S3]."},
    ),
]


def settings_options(func: F) -> F:
    """Add the configuration flags; the command receives them as ``**settings_kwargs``."""
    for decls, attrs in reversed(_SETTING_FLAGS):
        func = click.option(*decls, default=None, **attrs)(func)
    return func


def settings_from(params: dict[str, Any], **extra: Any) -> Settings:
    """Build Settings from the flags ``settings_options`` added (plus command extras)."""
    flags = {
        "listen": params.pop("listen", None),
        "data_dir": params.pop("data_dir", None),
        "domain": params.pop("domain", None),
        "default_upstream": params.pop("default_upstream", None),
        "tag_ttl": params.pop("tag_ttl", None),
        "log_level": params.pop("log_level", None),
        "index": params.pop("index", None),
        "index_password_file": params.pop("index_password_file", None),
        "storage": params.pop("storage", None),
        "s3_endpoint": params.pop("s3_endpoint", None),
        **extra,
    }
    settings = build_settings(
        config_file=params.pop("config_file", None),
        flags=flags,
        upstream_flags=list(params.pop("upstreams", None) or ()),
    )
    for line in unknown_env_warnings(read_environment(os.environ, Path(".env"))):
        click.echo(f"registry-cache: warning: {line}", err=True)
    return settings


def data_dir(
    settings: Settings, *, write: bool, create: bool = False, need_space: bool = False
) -> DataDir:
    """``datadir.check`` of the configured data directory; CliError (one line) if unusable."""
    try:
        return check(
            settings.data_dir,
            origin=settings.origin("data_dir"),
            write=write,
            create=create,
            need_space=need_space,
        )
    except DataDirError as exc:
        raise CliError(str(exc)) from None
