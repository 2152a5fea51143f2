"""``registry-cache serve``."""

from __future__ import annotations

import logging
from typing import Any

import click

from ..errors import ConfigError
from ..htpasswd import load as load_htpasswd
from ..logs import setup_logging
from ..server import ServeError
from ..server import serve as run_server
from ..tls import server_context
from .main import CliError
from .options import data_dir, settings_from, settings_options

log = logging.getLogger("registry_cache.server")


@click.command()
@settings_options
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Worker processes sharing the port and data directory [1].",
)
@click.option(
    "--max-size",
    metavar="SIZE",
    default=None,
    help="Evict least recently used objects beyond this size, e.g. 50GiB [unbounded].",
)
@click.option(
    "--max-disk-percent",
    type=click.FloatRange(0, 100, min_open=True),
    default=None,
    help="Evict while the data directory's file system is fuller than this [unbounded].",
)
@click.option(
    "--max-age",
    metavar="DURATION",
    default=None,
    help="Evict objects not pulled for this long, e.g. 30d [never].",
)
@click.option(
    "--shutdown-grace",
    metavar="DURATION",
    default=None,
    help="On SIGTERM, let in-flight responses finish this long before exiting [30s].",
)
@click.option(
    "--tls-cert",
    metavar="PEM",
    default=None,
    help="Serve HTTPS with this certificate (chain); needs --tls-key [plain HTTP].",
)
@click.option("--tls-key", metavar="PEM", default=None, help="The private key of --tls-cert.")
@click.option(
    "--htpasswd",
    metavar="FILE",
    default=None,
    help="Clients must log in (HTTP Basic) as a user of this bcrypt htpasswd file [open].",
)
def serve(**params: Any) -> None:
    """Run the pull-through cache server (read-only registry API on one port)."""
    own = ("workers", "max_size", "max_disk_percent", "max_age", "shutdown_grace", "tls_cert")
    settings = settings_from(
        params, **{key: params.pop(key) for key in (*own, "tls_key", "htpasswd")}
    )
    # A bad certificate, htpasswd file or data directory stops us here, in one line.
    server_context(settings)
    if settings.htpasswd is not None:
        try:
            load_htpasswd(settings.htpasswd)
        except ConfigError as exc:
            raise ConfigError(f"{exc} ({settings.origin('htpasswd')})") from None
    data_dir(settings, write=True, create=True, need_space=True)
    setup_logging(settings)
    if settings.htpasswd is not None and settings.tls_cert is None:
        log.warning(
            "client passwords travel in clear text: serve TLS (--tls-cert) or put TLS in front"
        )
    try:
        code = run_server(settings)
    except ServeError as exc:
        raise CliError(str(exc)) from None
    raise SystemExit(code)
