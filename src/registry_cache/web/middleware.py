"""The one place errors become responses, and the one access-log line per request."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from .. import metrics, requestid
from ..errors import (
    BadGateway,
    DigestMismatch,
    InsufficientStorage,
    NameUnknown,
    RegistryError,
    Unsupported,
)
from ..logs import AccessEntry
from ..stats import Recorder
from ..store.fill import FillFailed

log = logging.getLogger("registry_cache.web")
access = logging.getLogger("registry_cache.access")

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Probes come every few seconds from every kubelet or load balancer: their
# successes would drown the access log, so only failed probes are logged.
PROBES = frozenset({"/healthz", "/readyz"})
CLIENT_CLOSED = 499  # nginx's status for "no answer could be given", in the access log
REQUEST_ID = "request_id"  # request[...]: the id access_log gave it


def error_response(error: RegistryError) -> web.Response:
    response = web.json_response(error.body(), status=error.status, headers=error.headers())
    return response


def cut_off(request: web.Request) -> web.Response:
    """For a response that cannot be finished: the connection is dropped, so this one
    is never sent; aiohttp sees the closed connection and ends quietly (an exception
    would have it log a traceback for what is only a cut-off download)."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=CLIENT_CLOSED)


@web.middleware
async def registry_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure as an OCI JSON error body with the right status."""
    try:
        return await handler(request)
    except RegistryError as error:
        fields = request.setdefault("log", {})
        fields["error"], fields["message"] = error.code, error.message  # message: dashboard
        return error_response(error)
    except DigestMismatch as mismatch:
        # A fill of unknown size (chunked) fails before its first byte reaches anyone.
        request.setdefault("log", {})["error"] = "DigestMismatch"
        return error_response(BadGateway(f"upstream sent wrong bytes for {mismatch.expected}"))
    except FillFailed as failed:
        # Only reached when headers were already sent: the client is cut off.
        fields = request.setdefault("log", {})
        fields["error"], fields["message"] = type(failed.error).__name__, str(failed.error)
        return cut_off(request)
    except web.HTTPException as exc:
        if exc.status == 405:
            return error_response(Unsupported(f"{request.method} is not supported"))
        if exc.status == 404:
            return error_response(NameUnknown("no such endpoint"))
        raise
    except (ConnectionResetError, BrokenPipeError):
        request.setdefault("log", {})["error"] = "client-gone"
        return cut_off(request)
    except Exception as exc:
        if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
            # The index shares the data directory's disk: full is a 507, like a blob write.
            request.setdefault("log", {})["error"] = "disk-full"
            return error_response(InsufficientStorage("no space left in the data directory"))
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return error_response(RegistryError("internal error (see the cache's log)"))


def access_log(recorder: Recorder | None) -> Middleware:
    """The access-log middleware; ``recorder`` (None: the dashboard is off) counts each
    registry API answer for the dashboard. Given here, once, rather than looked up in
    the application for every request."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        # Read once: each is an attribute lookup through aiohttp's request class
        # (callgrind: a few hundred instructions apiece, on every request).
        path, method = request.path, request.method
        status = CLIENT_CLOSED  # the client went away before an answer
        body_bytes = 0
        rid = requestid.accept(request.headers.get(requestid.HEADER)) or requestid.new()
        request[REQUEST_ID] = rid
        token = requestid.CURRENT.set(rid)  # for upstream requests and log lines made meanwhile
        try:
            response = await handler(request)
            status = response.status
            body_bytes = (response.content_length or 0) if method != "HEAD" else 0
            return response
        finally:
            requestid.CURRENT.reset(token)
            fields = request.get("log", {})
            end = time.perf_counter()
            duration_ms = (end - start) * 1000
            metrics.observe_request(path, fields.get("cache"), status)
            if recorder is not None and path.startswith("/v2"):
                try:
                    recorder.answered(  # the dashboard's counting (stats.recorder)
                        method,
                        path,
                        status,
                        fields,
                        duration_ms / 1000,
                        status == 401 and "Authorization" not in request.headers,
                        end,  # its wall-clock time is worked out at flush time
                    )
                except Exception:  # the dashboard must never cost a request its answer
                    log.exception("could not count %s for the dashboard", path)
            if (path not in PROBES or status >= 400) and access.isEnabledFor(logging.INFO):
                entry = AccessEntry(
                    remote=request.remote or "-",
                    method=method,
                    path=request.path_qs,
                    status=status,
                    upstream=_text(fields.get("upstream")),
                    repo=_text(fields.get("repo")),
                    ref=_text(fields.get("ref")),
                    cache=_text(fields.get("cache")),
                    bytes=int(fields.get("bytes", body_bytes)),
                    duration_ms=duration_ms,
                    error=_text(fields.get("error")),
                    user=_text(fields.get("user")),
                    request_id=rid,
                    user_agent=request.headers.get("User-Agent"),
                )
                access.info("%s", entry, extra={"access": entry})

    return middleware


def _text(value: object) -> str | None:
    return None if value is None or value == "-" else str(value)


async def add_standard_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer carries the API version header (also 401s and errors) and the
    request's id."""
    response.headers[API_VERSION[0]] = API_VERSION[1]
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers[requestid.HEADER] = rid
