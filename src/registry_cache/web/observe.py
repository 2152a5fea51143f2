"""What the stats recorder sees of each registry API request, and the cache-status mark.

``observe(recorder)`` sits inside ``registry_errors`` so it sees the error a
request failed with (its OCI code and message) before it becomes a JSON body.
It does a few dictionary additions per request and nothing else (see
``stats.recorder``). Only ``/v2`` requests are observed: the dashboard, probes
and ``/metrics`` do not count as traffic.

``mark_response(recorder)`` runs as headers are prepared: every ``/v2`` answer
says ``X-Registry-Cache: HIT|MISS|STALE|COALESCED|REVALIDATED|UPSTREAM`` (``NONE``
when no content was involved: ``/v2/``, errors, the login challenge) and, once
routed, ``X-Registry-Cache-Upstream: <name>`` — what ``registry-cache doctor``
looks for to prove a node's pull went through the cache. A blob ``MISS`` is the
moment a fill starts: the recorder notes its repository for the fills table.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..errors import RegistryError
from ..stats.recorder import Recorder
from ..store.fill import FillFailed
from .middleware import Handler

CACHE_HEADER = "X-Registry-Cache"
UPSTREAM_HEADER = "X-Registry-Cache-Upstream"


def observe(recorder: Recorder) -> Middleware:
    @web.middleware
    async def stats(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/v2"):
            return await handler(request)
        start = time.perf_counter()
        status, error, message = 499, "client-gone", ""  # until an answer or error says
        try:
            response = await handler(request)
            status, error = response.status, ""
            return response
        except RegistryError as exc:
            status, error, message = exc.status, exc.code, exc.message
            raise
        except FillFailed as exc:  # the body was cut after its headers went out
            status, error, message = 502, type(exc.error).__name__, str(exc.error)
            raise
        except web.HTTPException as exc:
            status, error = exc.status, ""
            raise
        finally:
            recorder.answered(
                method=request.method,
                path=request.path,
                status=status,
                fields=request.get("log", {}),
                duration=time.perf_counter() - start,
                error=error,
                message=message,
                challenge=status == 401 and "Authorization" not in request.headers,
            )

    return stats


def mark_response(
    recorder: Recorder,
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    async def mark(request: web.Request, response: web.StreamResponse) -> None:
        if not request.path.startswith("/v2"):
            return
        fields = request.get("log") or {}
        cache = fields.get("cache")
        response.headers[CACHE_HEADER] = cache or "NONE"
        upstream = fields.get("upstream")
        if upstream and upstream != "-":
            response.headers[UPSTREAM_HEADER] = upstream
            if cache == "MISS" and request.method == "GET" and "/blobs/" in request.path:
                recorder.fill_started(str(fields.get("ref")), upstream, str(fields.get("repo")))

    return mark
