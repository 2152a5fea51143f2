"""Liveness and readiness for load balancers, Kubernetes probes and Docker HEALTHCHECK.

``/healthz``: the worker's event loop answers; nothing else is looked at, so a
slow disk or a dead upstream never gets the process restarted.

``/readyz``: this worker can do its job: the data directory takes a new file (a
read-only or vanished file system fails both fills and manifest writes): 503
otherwise. The index not answering (PostgreSQL down), or the bucket (``--storage``),
is reported as ``"status": "degraded"`` with 200: hits keep flowing from the local
tier and misses still fill from upstream, so the node stays in the load balancer.
The bucket's probe (a HeadBucket) is also how its recovery is noticed between
requests. A dead upstream
does not make the cache unready (it serves what it has, and stale tags), nor does
a full disk (hits keep flowing and new blobs get clean 507s).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from .services import SERVICES_KEY

PROBE_TIMEOUT = 3.0


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    ctx = request.app[SERVICES_KEY].ctx
    checks: dict[str, str] = {}
    checks["index"] = await _check(ctx.index.ping)
    checks["data_dir"] = await _check(ctx.store.check)
    if ctx.shared is not None:
        checks["bucket"] = await _check(ctx.shared.check)
    # Only the local tier decides: without the index (PostgreSQL down) or the bucket,
    # hits keep flowing and misses fill from upstream, so the node stays in the load
    # balancer and says "degraded" (200). A tier that takes no new files is not ready.
    ready = checks["data_dir"] == "ok"
    status = "ready" if all(v == "ok" for v in checks.values()) else "degraded"
    body: dict[str, Any] = {"status": status if ready else "not ready", "checks": checks}
    free = _free_bytes(ctx.settings.data_dir)
    if free is not None:
        body["disk_free_bytes"] = free
    return web.json_response(body, status=200 if ready else 503)


async def _check(probe: Callable[[], Awaitable[object]]) -> str:
    try:
        # A hung disk or index fails the prober's timeout instead of hanging forever.
        await asyncio.wait_for(probe(), PROBE_TIMEOUT)
    except TimeoutError:
        return f"timed out after {PROBE_TIMEOUT:g}s"
    except Exception as exc:  # the reason goes to the prober, in one line
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return "ok"


def _free_bytes(path: Path) -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
