"""The aiohttp application of one worker process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import urllib3
from aiohttp import web
from aiohttp.typedefs import Middleware

from .. import metrics
from ..config import Settings
from ..htpasswd import Htpasswd
from ..proxy.context import ProxyContext
from ..proxy.eviction import EvictionTask
from ..stats import Recorder, StatsDB, StatsService
from ..store.blobs import FileBlobStore
from ..store.fill import FillManager
from ..store.index import Index
from ..store.layout import Layout
from ..upstream.client import UpstreamClient
from .clientauth import ClientAuth
from .clientauth import middleware as client_auth
from .dashboard import STATS_KEY
from .dashboard import add_routes as add_dashboard
from .handlers import api
from .keys import RECORDER_KEY, SETTINGS_KEY
from .middleware import access_log, add_api_version, registry_errors
from .services import SERVICES_KEY, Services

log = logging.getLogger("registry_cache.app")

TOUCH_FLUSH_INTERVAL = 5.0
FILL_COMMIT_WAIT = 2.0
STATS_FILE = "stats.sqlite3"  # the dashboard's history (stats/history.py), not the index


def build_context(settings: Settings) -> ProxyContext:
    """Open the store and index and create one upstream client per upstream."""
    layout = Layout(settings.data_dir)
    layout.create()
    store = FileBlobStore(layout)
    pool = urllib3.PoolManager(num_pools=len(settings.upstreams) * 4 + 8, maxsize=32, block=False)
    clients = {
        name: UpstreamClient(cfg, pool, on_ratelimit=metrics.ratelimit)
        for name, cfg in settings.upstreams.items()
    }
    return ProxyContext(
        settings=settings,
        index=Index(layout.index),
        store=store,
        fills=FillManager(layout, store, fill_timeout=settings.fill_timeout),
        clients=clients,
        executor=ThreadPoolExecutor(max_workers=32, thread_name_prefix="upstream"),
    )


async def _services(app: web.Application) -> AsyncIterator[None]:
    ctx = build_context(app[SETTINGS_KEY])
    app[SERVICES_KEY] = Services.build(ctx)
    db = StatsDB(ctx.settings.data_dir / STATS_FILE)
    stats = app[STATS_KEY] = StatsService(ctx, app[RECORDER_KEY], db)
    flusher = asyncio.create_task(_flush_touches(ctx, stats))
    evictor = EvictionTask.start(ctx)  # None when the cache is unbounded
    log.debug("worker %d ready", os.getpid())
    yield
    flusher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flusher
    if evictor is not None:
        await evictor.stop()
    # A fill whose last client just finished is still fsyncing and committing: let it
    # record its object before the index closes (bounded; an abandoned fill is not waited for).
    committing = [f.finished for f in list(ctx.fills.fills.values()) if f.verified]
    if committing:
        await asyncio.wait(committing, timeout=FILL_COMMIT_WAIT)
    stats.flush_now()
    ctx.executor.shutdown(wait=False, cancel_futures=True)
    db.close()
    ctx.index.close()


async def _flush_touches(ctx: ProxyContext, stats: StatsService) -> None:
    """Access times are written in batches so hits never wait for a write lock; the same
    beat drops remembered tags and links once eviction or ``cache prune``/``gc`` removed
    rows (``Index.refresh_memos``), and hands the dashboard's counters to its history."""
    while True:
        await asyncio.sleep(TOUCH_FLUSH_INTERVAL)
        try:
            ctx.index.flush_touches()
            if ctx.index.refresh_memos():
                log.info(
                    "index rows were removed by maintenance: remembered tags and links dropped"
                )
        except Exception:
            log.exception("could not record access times")
        await stats.flush()  # never raises; the write itself runs off the loop


async def metrics_page(request: web.Request) -> web.Response:
    """Prometheus text format; every worker answers for all of them (see metrics.py)."""
    response = web.Response(body=metrics.render())
    response.headers["Content-Type"] = metrics.CONTENT_TYPE
    return response


def build_app(settings: Settings) -> web.Application:
    recorder = Recorder()
    middlewares: list[Middleware] = [access_log, registry_errors]
    auth: ClientAuth | None = None
    if settings.htpasswd is not None:
        # Only when configured: an open cache pays nothing per request.
        auth = ClientAuth(Htpasswd(settings.htpasswd))
        middlewares.append(client_auth(auth))
    app = web.Application(middlewares=middlewares)
    app[SETTINGS_KEY] = settings
    app[RECORDER_KEY] = recorder
    app.on_response_prepare.append(add_api_version)
    app.cleanup_ctx.append(_services)
    from .health import add_routes as add_health
    from .pages import add_routes as add_pages

    add_pages(app)
    add_health(app)
    add_dashboard(app, auth if settings.dashboard_login else None)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_route("*", "/v2", api)
    app.router.add_route("*", "/v2/{tail:.*}", api)
    return app
