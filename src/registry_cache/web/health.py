"""Liveness and readiness for load balancers, Kubernetes probes and Docker HEALTHCHECK.

``/healthz``: the worker's event loop answers; nothing else is looked at, so a
slow disk or a dead upstream never gets the process restarted.

``/readyz``: this worker can do its job: the index answers a query and the data
directory takes a new file (a read-only or vanished file system fails both
fills and manifest writes). A dead upstream does not make the cache unready (it
serves what it has, and stale tags), nor does a full disk (hits keep flowing and
new blobs get clean 507s): both are reported, not failed on.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..store.layout import Layout
from .services import SERVICES_KEY


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    ctx = request.app[SERVICES_KEY].ctx
    layout = ctx.store.layout
    checks: dict[str, str] = {}
    # Both touch the disk: off the event loop, so a hung disk fails the probe's
    # timeout instead of stalling every other request of this worker.
    checks["index"] = await asyncio.to_thread(_check, ctx.index.ping)
    checks["data_dir"] = await asyncio.to_thread(_check, lambda: _writable(layout))
    ready = all(result == "ok" for result in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": checks}
    free = _free_bytes(layout)
    if free is not None:
        body["disk_free_bytes"] = free
    return web.json_response(body, status=200 if ready else 503)


def _check(probe: Callable[[], object]) -> str:
    try:
        probe()
    except Exception as exc:  # the reason goes to the prober, in one line
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return "ok"


def _writable(layout: Layout) -> None:
    with tempfile.NamedTemporaryFile(dir=layout.tmp, prefix=".ready-"):
        pass


def _free_bytes(layout: Layout) -> int | None:
    try:
        st = os.statvfs(layout.root)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
