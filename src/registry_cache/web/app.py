"""The aiohttp application of one worker process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Middleware

from .. import metrics
from ..config import Settings
from ..htpasswd import Htpasswd
from ..proxy.build import build
from ..proxy.context import ProxyContext
from ..stats import Recorder, StatsDB, StatsService
from .clientauth import ClientAuth
from .clientauth import middleware as client_auth
from .dashboard import STATS_KEY
from .dashboard import add_off_routes as add_dashboard_off
from .dashboard import add_routes as add_dashboard
from .handlers import api
from .keys import RECORDER_KEY, SETTINGS_KEY
from .middleware import access_log, add_standard_headers, registry_errors
from .services import SERVICES_KEY, Services

log = logging.getLogger("registry_cache.app")

TOUCH_FLUSH_INTERVAL = 5.0
STATS_FILE = "stats.sqlite3"  # the dashboard's history (stats/history.py), not the index


async def _services(app: web.Application) -> AsyncIterator[None]:
    components = await build(app[SETTINGS_KEY])
    ctx = components.ctx
    app[SERVICES_KEY] = Services.build(ctx, components.flight)
    recorder = app.get(RECORDER_KEY)  # None: the dashboard is off
    db = StatsDB(ctx.settings.data_dir / STATS_FILE) if recorder is not None else None
    stats = None
    if recorder is not None and db is not None:
        stats = app[STATS_KEY] = StatsService(ctx, recorder, db)
    background = [
        asyncio.create_task(_flush_touches(ctx, stats), name="flush-touches"),
        asyncio.create_task(ctx.index.watch(TOUCH_FLUSH_INTERVAL), name="index-watch"),
    ]
    components.start()
    log.debug("worker %d ready", os.getpid())
    yield
    for task in background:
        task.cancel()
    for task in background:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if stats is not None and db is not None:
        stats.flush_now()
        db.close()
    await components.close()


async def _flush_touches(ctx: ProxyContext, stats: StatsService | None) -> None:
    """Access times are written in batches so hits never wait for a write lock; the same
    beat hands the dashboard's counters to its history (``stats``, None when it is off)."""
    while True:
        await asyncio.sleep(TOUCH_FLUSH_INTERVAL)
        try:
            await ctx.index.flush()
        except Exception:
            log.exception("could not record access times")
        if stats is not None:
            await stats.flush()  # never raises; the write itself runs off the loop


async def metrics_page(request: web.Request) -> web.Response:
    """Prometheus text format; every worker answers for all of them (see metrics.py)."""
    response = web.Response(body=metrics.render())
    response.headers["Content-Type"] = metrics.CONTENT_TYPE
    return response


def build_app(settings: Settings) -> web.Application:
    # The dashboard off: no counting per request, no stats file, 404 at its paths.
    recorder = Recorder() if settings.dashboard else None
    middlewares: list[Middleware] = [access_log(recorder), registry_errors]
    auth: ClientAuth | None = None
    if settings.htpasswd is not None:
        # Only when configured: an open cache pays nothing per request.
        auth = ClientAuth(Htpasswd(settings.htpasswd))
        middlewares.append(client_auth(auth))
    app = web.Application(middlewares=middlewares)
    app[SETTINGS_KEY] = settings
    if recorder is not None:  # for the stats service and the fills a MISS starts
        app[RECORDER_KEY] = recorder
    app.on_response_prepare.append(add_standard_headers)
    app.cleanup_ctx.append(_services)
    from .health import add_routes as add_health
    from .pages import add_routes as add_pages

    add_pages(app)
    add_health(app)
    if settings.dashboard:
        add_dashboard(app, auth if settings.dashboard_login else None)
    else:
        add_dashboard_off(app)
    app.router.add_get("/metrics", metrics_page)
    if settings.clustered:
        from .internal import add_routes as add_internal

        add_internal(app, settings.cluster_key())
    app.router.add_route("*", "/v2", api)
    app.router.add_route("*", "/v2/{tail:.*}", api)
    return app
