"""Client configuration served over HTTP, so a node can fetch it from the cache itself.

::

    GET /registries.yaml                     k3s/k3d   (?style=vhost|single)
    GET /containerd/{registry}/hosts.toml    containerd (404 for an unconfigured registry)
    GET /daemon.json                         Docker
    GET /registries.conf                     podman, CRI-O, skopeo

The advertised host is the request's Host header, so what a client fetched from
the cache points back at the same cache; ``?host=`` overrides it (and, like
``--host``, implies style single). The port is ``?port=``, else the Host
header's, else the default port of the request's scheme. Other query parameters
mirror the CLI options: ``style``, ``scheme=https``, ``ca_file``, ``skip_verify=1``.
Without ``style`` or ``host``: vhost when a domain is configured, else single
(the CLI's ``registries`` insists on vhost instead; the answer is the same
bytes as the CLI's for the same inputs).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ..clientconfig import (
    Advertise,
    ClientConfigError,
    render_daemon_json,
    render_hosts_toml,
    render_registries_conf,
    render_registries_yaml,
    resolve_advertise,
)
from ..clientconfig.endpoints import SCHEMES, STYLES, split_host_header
from ..config import Settings
from ..errors import NameUnknown
from .keys import SETTINGS_KEY

Handler = Callable[[web.Request], Awaitable[web.Response]]
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def advertise_for(request: web.Request, settings: Settings) -> Advertise:
    """The endpoint options of a request (``ClientConfigError`` for a bad one)."""
    query = request.query
    style = query.get("style") or None
    if style is not None and style not in STYLES:
        raise ClientConfigError(f"invalid style {style[:50]!r} (vhost or single)")
    # Fetched over HTTPS: clients are to come back the same way.
    scheme = query.get("scheme", "https" if request.secure else "http")
    if scheme not in SCHEMES:
        raise ClientConfigError(f"invalid scheme {scheme[:50]!r} (http or https)")
    skip_verify = query.get("skip_verify", "").lower()
    if skip_verify not in _TRUE + _FALSE:
        raise ClientConfigError(f"invalid skip_verify {skip_verify[:50]!r} (true or false)")
    header_host, header_port = split_host_header(request.host)
    port: int | None = header_port or request.url.port
    if "port" in query:
        if not query["port"].isdigit():
            raise ClientConfigError(f"invalid port {query['port'][:50]!r}")
        port = int(query["port"])
    return resolve_advertise(
        settings,
        style=style,
        host=query.get("host") or None,
        fallback=header_host,
        port=port,
        scheme=scheme,
        ca_file=query.get("ca_file") or None,
        skip_verify=skip_verify in _TRUE,
    )


def _page(content_type: str, render: Callable[[web.Request, Settings, Advertise], str]) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        settings = request.app[SETTINGS_KEY]
        try:
            text = render(request, settings, advertise_for(request, settings))
        except NameUnknown as exc:
            return web.json_response(exc.body(), status=exc.status)
        except ClientConfigError as exc:
            body = {"errors": [{"code": "BAD_REQUEST", "message": str(exc)}]}
            return web.json_response(body, status=400)
        return web.Response(
            body=text.encode("utf-8"),
            content_type=content_type,
            charset="utf-8",
            # The answer depends on the Host header: never let a proxy reuse it.
            headers={"Cache-Control": "no-store"},
        )

    return handler


def _registries_yaml(_request: web.Request, settings: Settings, adv: Advertise) -> str:
    return render_registries_yaml(settings, adv)


def _hosts_toml(request: web.Request, settings: Settings, adv: Advertise) -> str:
    return render_hosts_toml(settings, adv, request.match_info["registry"])


def _daemon_json(_request: web.Request, settings: Settings, adv: Advertise) -> str:
    return render_daemon_json(settings, adv)


def _registries_conf(_request: web.Request, settings: Settings, adv: Advertise) -> str:
    return render_registries_conf(settings, adv)


registries_yaml = _page("application/yaml", _registries_yaml)
containerd_hosts = _page("application/toml", _hosts_toml)
daemon_json = _page("application/json", _daemon_json)
registries_conf = _page("application/toml", _registries_conf)


def add_routes(app: web.Application) -> None:
    """Register the four pages (GET, and HEAD)."""
    app.router.add_get("/registries.yaml", registries_yaml, name="registries.yaml")
    app.router.add_get(
        "/containerd/{registry}/hosts.toml", containerd_hosts, name="containerd-hosts"
    )
    app.router.add_get("/daemon.json", daemon_json, name="daemon.json")
    app.router.add_get("/registries.conf", registries_conf, name="registries.conf")
