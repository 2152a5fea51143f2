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
@click.option(
    "--advertise",
    metavar="URL",
    default=None,
    help="Cluster mode: how the other replicas reach this one, e.g. http://10.0.0.5:5000.",
)
@click.option(
    "--cluster-secret-file",
    metavar="FILE",
    default=None,
    help="Cluster mode: the secret every replica shares (env: REGISTRY_CACHE_CLUSTER_SECRET).",
)
@click.option(
    "--shared-max-size",
    metavar="SIZE",
    default=None,
    help="Evict least recently used objects from --storage beyond this, e.g. 2TiB [unbounded].",
)
@click.option(
    "--redirect-hits",
    is_flag=True,
    default=None,
    help="Answer blob GETs the bucket holds with a 307 to a presigned URL [off].",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"], case_sensitive=False),
    default=None,
    help="Log lines as text or as one JSON object each [text].",
)
@click.option(
    "--client-header-timeout",
    metavar="DURATION",
    default=None,
    help="Close a connection that sends no complete request headers this long [30s].",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    default=None,
    help="Open client connections per worker; more are closed at once [4096].",
)
@click.option(
    "--dashboard/--no-dashboard",
    default=None,
    help="The dashboard (GET /, /api/v1) and its per-request counting; off: 404 there [on].",
)
def serve(**params: Any) -> None:
    """Run the pull-through cache server (read-only registry API on one port)."""
    own = ("workers", "max_size", "max_disk_percent", "max_age", "shutdown_grace", "tls_cert")
    cluster = ("advertise", "cluster_secret_file")
    limits = ("log_format", "client_header_timeout", "max_connections")
    shared = ("shared_max_size", "redirect_hits")
    keys = (*own, *cluster, "tls_key", "htpasswd", *limits, *shared, "dashboard")
    settings = settings_from(params, **{key: params.pop(key) for key in keys})
    if settings.clustered:
        settings.cluster_key()  # unreadable or too short: one line, exit 2
        settings.index_secret()
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
