"""The one place errors become responses, and the one access-log line per request."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from .. import metrics
from ..errors import InsufficientStorage, NameUnknown, RegistryError, Unsupported
from ..store.fill import FillFailed
from .keys import RECORDER_KEY

log = logging.getLogger("registry_cache.web")
access = logging.getLogger("registry_cache.access")

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Probes come every few seconds from every kubelet or load balancer: their
# successes would drown the access log, so only failed probes are logged.
PROBES = frozenset({"/healthz", "/readyz"})


def error_response(error: RegistryError) -> web.Response:
    response = web.json_response(error.body(), status=error.status, headers=error.headers())
    return response


@web.middleware
async def registry_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure as an OCI JSON error body with the right status."""
    try:
        return await handler(request)
    except RegistryError as error:
        fields = request.setdefault("log", {})
        fields["error"], fields["message"] = error.code, error.message  # message: dashboard
        return error_response(error)
    except FillFailed as failed:
        # Only reached when headers were already sent: the transport is aborted.
        fields = request.setdefault("log", {})
        fields["error"], fields["message"] = type(failed.error).__name__, str(failed.error)
        raise
    except web.HTTPException as exc:
        if exc.status == 405:
            return error_response(Unsupported(f"{request.method} is not supported"))
        if exc.status == 404:
            return error_response(NameUnknown("no such endpoint"))
        raise
    except (ConnectionResetError, BrokenPipeError):
        request.setdefault("log", {})["error"] = "client-gone"
        raise
    except Exception as exc:
        if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
            # The index shares the data directory's disk: full is a 507, like a blob write.
            request.setdefault("log", {})["error"] = "disk-full"
            return error_response(InsufficientStorage("no space left in the data directory"))
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return error_response(RegistryError("internal error (see the cache's log)"))


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    status = 499  # the client went away before an answer
    body_bytes = 0
    try:
        response = await handler(request)
        status = response.status
        body_bytes = (response.content_length or 0) if request.method != "HEAD" else 0
        return response
    finally:
        fields = request.get("log", {})
        duration_ms = (time.perf_counter() - start) * 1000
        metrics.observe_request(request.path, fields.get("cache"), status)
        if request.path.startswith("/v2"):
            try:
                request.app[RECORDER_KEY].answered(  # the dashboard's counters: a few additions
                    request.method,
                    request.path,
                    status,
                    fields,
                    duration_ms / 1000,
                    status == 401 and "Authorization" not in request.headers,
                )
            except Exception:  # the dashboard must never cost a request its answer
                log.exception("could not count %s for the dashboard", request.path)
        if request.path not in PROBES or status >= 400:
            access.info(
                '%s "%s %s" %d upstream=%s repo=%s ref=%s cache=%s bytes=%s duration=%.1fms%s%s',
                request.remote or "-",
                request.method,
                request.path_qs,
                status,
                fields.get("upstream", "-"),
                fields.get("repo", "-"),
                fields.get("ref", "-"),
                fields.get("cache", "-"),
                fields.get("bytes", body_bytes),
                duration_ms,
                f" error={fields['error']}" if "error" in fields else "",
                f" user={fields['user']}" if "user" in fields else "",
            )


async def add_api_version(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer carries the API version header (also 401s and errors)."""
    response.headers[API_VERSION[0]] = API_VERSION[1]
