"""The dashboard (``GET /``), its JSON API (``/api/v1/…``) and its two static files.

::

    GET /                          the page (server-rendered HTML, inline SVG charts)
    GET /dashboard/parts?only=a,b  the page's sections again, as {name: html} (the script
                                   swaps them in: fills every second, the rest every 5 s)
    GET /api/v1/stats              everything on the page as JSON
    GET /api/v1/history?range=hour|day|month   the charts' series
    GET /api/v1/fills              fills in flight
    GET /static/dashboard.css, /static/dashboard.js

With ``htpasswd`` set and ``dashboard_auth`` on (its default then), all of these
but the static files ask for the same Basic login as ``/v2``; otherwise they are
open like ``/metrics``. With ``dashboard: false`` every one of them answers 404
(``DASHBOARD_OFF``) and nothing is counted per request. The JSON carries no client
address, user name, credential or secret, whatever the setting.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from ..errors import RegistryError
from ..stats.service import RANGES, StatsService
from .clientauth import ClientAuth
from .dashboard_html import PARTS, render_page, render_parts
from .keys import SETTINGS_KEY

STATS_KEY = web.AppKey("stats", StatsService)
NO_STORE = {"Cache-Control": "no-store"}
PAGE_HEADERS = {
    **NO_STORE,
    # Everything is served from here; no inline script or style, no frames.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
STATIC = {
    "dashboard.css": "text/css",
    "dashboard.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadQuery(RegistryError):
    code, status = "BAD_REQUEST", 400


class DashboardOff(RegistryError):
    code, status = "DASHBOARD_OFF", 404


def guarded(auth: ClientAuth | None, handler: Handler) -> Handler:
    if auth is None:
        return handler

    async def login_first(request: web.Request) -> web.StreamResponse:
        # AuthenticationRequired is a 401 with the Basic challenge (registry_errors).
        request.setdefault("log", {})["user"] = await auth.user(
            request.headers.get("Authorization")
        )
        return await handler(request)

    return login_first


def _links(request: web.Request) -> list[tuple[str, str]]:
    settings = request.app[SETTINGS_KEY]
    links = [("/registries.yaml", "k3s registries.yaml")]
    links += [
        (f"/containerd/{name}/hosts.toml", f"containerd hosts.toml ({name})")
        for name in settings.upstreams
    ]
    if "docker.io" in settings.upstreams:
        links.append(("/daemon.json", "Docker daemon.json"))
    links += [
        ("/registries.conf", "podman/CRI-O registries.conf"),
        ("/api/v1/stats", "JSON API"),
        ("/metrics", "Prometheus metrics"),
    ]
    return links


async def page(request: web.Request) -> web.StreamResponse:
    stats = request.app[STATS_KEY]
    doc = await stats.stats()  # flushes this worker's counters first; the charts need not again
    hour, day = await stats.history("hour", flush=False), await stats.history("day", flush=False)
    text = render_page(doc, hour, day, _links(request))
    return web.Response(text=text, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)


async def parts(request: web.Request) -> web.StreamResponse:
    wanted = [p for p in request.query.get("only", ",".join(PARTS)).split(",") if p]
    unknown = [p for p in wanted if p not in PARTS]
    if unknown:
        raise BadQuery(f"unknown part {unknown[0][:40]!r} (one of {', '.join(PARTS)})")
    stats = request.app[STATS_KEY]
    doc: dict[str, Any]
    if wanted == ["fills"]:
        doc = {"fills": (await stats.fills())["fills"]}  # the cheap, frequent refresh
        hour = day = {}
    else:
        doc = await stats.stats()
        hour = await stats.history("hour", flush=False)
        day = await stats.history("day", flush=False)
    return web.json_response(render_parts(doc, hour, day, wanted), headers=NO_STORE)


async def api_stats(request: web.Request) -> web.StreamResponse:
    return web.json_response(await request.app[STATS_KEY].stats(), headers=NO_STORE)


async def api_history(request: web.Request) -> web.StreamResponse:
    name = request.query.get("range", "hour")
    if name not in RANGES:
        raise BadQuery(f"unknown range {name[:40]!r} (one of {', '.join(RANGES)})")
    return web.json_response(await request.app[STATS_KEY].history(name), headers=NO_STORE)


async def api_fills(request: web.Request) -> web.StreamResponse:
    return web.json_response(await request.app[STATS_KEY].fills(), headers=NO_STORE)


def _static_handler(name: str) -> Handler:
    body = resources.files(__package__).joinpath("static", name).read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'

    async def serve(request: web.Request) -> web.StreamResponse:
        headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type=STATIC[name], charset="utf-8", headers=headers)

    return serve


def add_routes(app: web.Application, auth: ClientAuth | None) -> None:
    """Register the dashboard; ``auth`` (or None for open) guards all but static files."""
    app.router.add_get("/", guarded(auth, page))
    app.router.add_get("/dashboard/parts", guarded(auth, parts))
    app.router.add_get("/api/v1/stats", guarded(auth, api_stats))
    app.router.add_get("/api/v1/history", guarded(auth, api_history))
    app.router.add_get("/api/v1/fills", guarded(auth, api_fills))
    for name in STATIC:
        app.router.add_get(f"/static/{name}", _static_handler(name))


async def dashboard_off(request: web.Request) -> web.StreamResponse:
    raise DashboardOff("the dashboard is off on this cache (dashboard: false)")


def add_off_routes(app: web.Application) -> None:
    """``dashboard: false``: the dashboard's paths answer 404 saying so (``status`` and
    ``doctor`` tell that from a cache that is not there)."""
    paths = ["/", "/dashboard/parts", "/api/v1/stats", "/api/v1/history", "/api/v1/fills"]
    for path in [*paths, *(f"/static/{name}" for name in STATIC)]:
        app.router.add_get(path, dashboard_off)
