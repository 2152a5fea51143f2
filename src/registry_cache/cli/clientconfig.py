"""``registries``, ``containerd-hosts``, ``docker-daemon``, ``registries-conf``.

Each takes the ``serve`` configuration flags (same config file, .env and
environment as the server) plus the endpoint options below, and prints or writes
what ``clientconfig`` renders.

The advertised host: ``--host`` if given (then every client uses that one name,
style ``single``); else the virtual hosts ``<upstream>.<domain>`` when a domain
is configured; else the listen host unless it is a wildcard (0.0.0.0, ::);
else this machine's host name. ``registries`` defaults to ``--style vhost`` and
fails without a domain (the seed's behaviour); the others fall back to single.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from ..clientconfig import (
    Advertise,
    DaemonJsonError,
    Login,
    merge_daemon_json,
    render_all_hosts_toml,
    render_daemon_json,
    render_registries_conf,
    render_registries_yaml,
    resolve_advertise,
)
from ..clientconfig.containerd_hosts import HOSTS_FILE
from ..clientconfig.endpoints import Scheme, Style, fallback_host
from ..config import Settings
from .main import CliError
from .options import settings_from, settings_options

F = TypeVar("F", bound=Callable[..., Any])
ENDPOINT_KEYS = ("style", "host", "port", "https", "ca_file", "insecure_skip_verify")


def endpoint_options(func: F) -> F:
    """The options that say how clients reach the cache (see ``resolve_advertise``)."""
    options = [
        click.option(
            "--style",
            type=click.Choice(["vhost", "single"]),
            default=None,
            help="vhost: <upstream>.<domain>:PORT per upstream; single: one HOST:PORT for all.",
        ),
        click.option(
            "--host",
            metavar="NAME",
            default=None,
            help="Name or IP clients use to reach the cache (implies --style single).",
        ),
        click.option(
            "--port",
            type=click.IntRange(1, 65535),
            default=None,
            help="Port clients connect to [the listen port].",
        ),
        click.option(
            "--https", is_flag=True, help="Clients connect with TLS [when tls_cert is set]."
        ),
        click.option(
            "--ca-file",
            metavar="PATH",
            default=None,
            help="CA certificate path ON THE CLIENT (https only; not read here).",
        ),
        click.option(
            "--insecure-skip-verify",
            is_flag=True,
            help="Clients skip TLS verification (https with a self-signed certificate).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


K3S_LOGIN_HELP = "Write configs.<endpoint>.auth for this user (a cache started with --htpasswd)."


def login_options(help_text: str = K3S_LOGIN_HELP) -> Callable[[F], F]:
    """``--login USER --password-file FILE``: for a cache whose clients must log in."""

    def decorate(func: F) -> F:
        func = click.option(
            "--password-file",
            type=click.File("r"),
            default=None,
            help="File holding --login's password (- for stdin); never a flag, so not in ps.",
        )(func)
        return click.option("--login", metavar="USER", default=None, help=help_text)(func)

    return decorate


def login_from(params: dict[str, Any]) -> Login | None:
    """The ``Login`` popped from ``params`` (``login_options``), or None."""
    user = params.pop("login", None)
    handle = params.pop("password_file", None)
    if user is None and handle is None:
        return None
    if user is None or handle is None:
        raise click.UsageError("--login and --password-file go together")
    password = handle.read().rstrip("\r\n")
    if not password:
        raise click.UsageError("--password-file is empty")
    return Login(user, password)


def advertise_from(
    settings: Settings,
    params: dict[str, Any],
    *,
    default_style: Style | None = None,
    default_host: str | None = None,
) -> Advertise:
    """Resolve the endpoint options popped from ``params``."""
    # A cache configured to serve TLS is reached with https without saying so.
    https = params.pop("https", False) or settings.tls_cert is not None
    scheme: Scheme = "https" if https else "http"
    return resolve_advertise(
        settings,
        style=cast("Style | None", params.pop("style", None)),
        host=params.pop("host", None),
        fallback=default_host or fallback_host(settings, socket.gethostname()),
        port=params.pop("port", None),
        scheme=scheme,
        ca_file=params.pop("ca_file", None),
        skip_verify=bool(params.pop("insecure_skip_verify", False)),
        default_style=default_style,
    )


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (temp file, fsync, rename); keeps its mode."""
    path = path.absolute()
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    import tempfile  # only when writing: printing commands start faster without it

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@click.command(name="registries")
@endpoint_options
@login_options()
@settings_options
def registries(**params: Any) -> None:
    """Print k3s/k3d registries.yaml (mirrors for every upstream).

    \b
    k3d:  registry-cache registries > registries.yaml
          k3d cluster create dev --registry-config registries.yaml
    k3s:  registry-cache registries > /etc/rancher/k3s/registries.yaml
    """
    login = login_from(params)
    settings = settings_from(params)
    adv = advertise_from(settings, params, default_style="vhost")
    click.echo(render_registries_yaml(settings, adv, login), nl=False)


@click.command(name="containerd-hosts")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="certs.d directory, e.g. /etc/containerd/certs.d (created if missing).",
)
@endpoint_options
@settings_options
def containerd_hosts(out_dir: Path, **params: Any) -> None:
    """Write OUT/<registry>/hosts.toml for every upstream."""
    settings = settings_from(params)
    files = render_all_hosts_toml(settings, advertise_from(settings, params))
    for registry, text in files.items():
        target = out_dir / registry / HOSTS_FILE
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, text)
        except OSError as exc:
            raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
        click.echo(f"wrote {target}")


@click.command(name="docker-daemon")
@click.option(
    "--merge",
    "merge_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Merge into this daemon.json in place (other keys kept); created if missing.",
)
@endpoint_options
@settings_options
def docker_daemon(merge_file: Path | None, **params: Any) -> None:
    """Print Docker daemon.json (Docker Hub mirror), or merge it into a file."""
    settings = settings_from(params)
    adv = advertise_from(settings, params)
    if merge_file is None:
        click.echo(render_daemon_json(settings, adv), nl=False)
        return
    try:
        existing = merge_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        existing = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {merge_file}: {exc}") from None
    try:
        merged = merge_daemon_json(existing, settings, adv)
    except DaemonJsonError as exc:
        raise CliError(f"{merge_file}: {exc}; file left unchanged") from None
    if merged == existing:
        click.echo(f"{merge_file} already up to date")
        return
    try:
        atomic_write(merge_file, merged)
    except OSError as exc:
        raise CliError(f"cannot write {merge_file}: {exc.strerror or exc}") from None
    click.echo(f"updated {merge_file} (restart dockerd to apply)")


@click.command(name="registries-conf")
@endpoint_options
@settings_options
def registries_conf(**params: Any) -> None:
    """Print containers registries.conf (podman, CRI-O, skopeo, buildah)."""
    settings = settings_from(params)
    click.echo(render_registries_conf(settings, advertise_from(settings, params)), nl=False)
