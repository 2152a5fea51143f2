"""The registry API (pull side): parse, validate, route, call a service, respond."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from ..digest import Digest
from ..errors import ManifestUnknown, NameUnknown, TagInvalid, Unsupported
from ..proxy.policy import CacheStatus
from ..reference import validate_tag
from ..routing import Route, host_upstream, route
from ..store.body import RedirectBody
from .keys import CACHE_HEADER, RECORDER_KEY, SETTINGS_KEY, UPSTREAM_HEADER
from .responses import ByteRange, blob_headers, parse_range, send_body
from .services import SERVICES_KEY

API_PATH = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs|tags|referrers)/(?P<ref>[^/]+)$")
READ_METHODS = frozenset({"GET", "HEAD"})


def note(request: web.Request, **fields: Any) -> None:
    """Details for the access log line (see middleware.access_log)."""
    request.setdefault("log", {}).update(fields)


async def api(request: web.Request) -> web.StreamResponse:
    path = request.path
    match = API_PATH.match(path)
    if request.method not in READ_METHODS:
        if match is not None and match.group("kind") == "manifests":
            # Malformed input is a 400 whatever the method (the conformance suite's
            # error-code check sends a write with a broken digest).
            _check_reference(match.group("ref"))
        raise Unsupported(f"{request.method} is not supported: this cache is read-only")
    if path in ("/v2", "/v2/"):
        return web.json_response({}, headers={CACHE_HEADER: "NONE"})
    if path == "/v2/_catalog":
        return await catalog(request)
    if match is None:
        raise NameUnknown("no such repository endpoint")
    kind, ref = match.group("kind"), match.group("ref")
    settings = request.app[SETTINGS_KEY]
    where = route(settings, match.group("name"), ns=request.query.get("ns"), host=request.host)
    note(request, upstream=where.upstream.name, repo=where.repository, ref=ref)
    if kind == "manifests":
        return await manifest(request, where, ref)
    if kind == "blobs":
        return await blob(request, where, Digest.parse(ref))
    if kind == "tags":
        if ref != "list":
            raise NameUnknown("no such repository endpoint")
        return await tags(request, where)
    return await referrers(request, where, Digest.parse(ref))


def _check_reference(reference: str) -> None:
    """A digest must parse (400 DIGEST_INVALID); a tag outside the grammar cannot
    exist anywhere, so it is a 404 like any unknown manifest (as distribution and
    the OCI conformance suite have it) — answered without asking upstream."""
    if ":" in reference:
        Digest.parse(reference)
        return
    try:
        validate_tag(reference)
    except TagInvalid as exc:
        raise ManifestUnknown(exc.message, detail={"Tag": reference[:128]}) from None


async def manifest(request: web.Request, where: Route, reference: str) -> web.StreamResponse:
    _check_reference(reference)
    services = request.app[SERVICES_KEY]
    result = await services.manifests.get(where, reference, request.headers.getall("Accept", []))
    note(request, cache=result.status.value, digest=result.digest)
    headers = {
        "Docker-Content-Digest": result.digest,
        "ETag": f'"{result.digest}"',
        CACHE_HEADER: result.status.value,
        UPSTREAM_HEADER: where.upstream.name,
    }
    if _not_modified(request, result.digest):
        return web.Response(status=304, headers=headers)
    response = web.Response(body=result.body, headers=headers, content_type=None)
    # Byte-exact media type as stored (Response would otherwise add a charset).
    response.headers["Content-Type"] = result.media_type
    note(request, bytes=0 if request.method == "HEAD" else len(result.body))
    return response


async def blob(request: web.Request, where: Route, digest: Digest) -> web.StreamResponse:
    services = request.app[SERVICES_KEY]
    digest_text = str(digest)
    if request.method == "HEAD":
        answer = await services.blobs.head(where, digest)
        note(request, cache=answer.status.value)
        headers = blob_headers(digest_text, answer.size or 0, None)
        headers[CACHE_HEADER], headers[UPSTREAM_HEADER] = answer.status.value, where.upstream.name
        response = web.StreamResponse(status=200, headers=headers)
        if answer.size is not None:
            response.content_length = answer.size
        await response.prepare(request)
        await response.write_eof()
        return response
    answer = await services.blobs.get(where, digest)
    note(request, cache=answer.status.value)
    recorder = request.app.get(RECORDER_KEY)  # None: the dashboard is off
    if answer.status is CacheStatus.MISS and recorder is not None:  # the dashboard shows the fill
        recorder.fill_started(digest_text, where.upstream.name, where.repository)
    mark = {CACHE_HEADER: answer.status.value, UPSTREAM_HEADER: where.upstream.name}
    body = answer.body
    assert body is not None
    try:
        size = answer.size if answer.size is not None else 0
        if _not_modified(request, digest_text):
            return web.Response(status=304, headers=blob_headers(digest_text, size, None) | mark)
        if isinstance(body, RedirectBody):
            # To the bucket (--redirect-hits): a bodiless 307; the client sends its
            # Range there. The URL is a credential while it lives: never logged.
            note(request, cache="REDIRECT", bytes=0)
            return web.Response(
                status=307,
                headers={"Location": body.url, "Docker-Content-Digest": digest_text} | mark,
            )
        span = parse_range(request.headers.get("Range"), size)
        whole = span or ByteRange(0, size)
        response = web.StreamResponse(
            status=206 if span else 200, headers=blob_headers(digest_text, size, span) | mark
        )
        response.content_length = whole.length
        sent = await send_body(request, response, body, whole)
    finally:
        await body.close()
    note(request, bytes=sent)
    return response


async def tags(request: web.Request, where: Route) -> web.StreamResponse:
    n, last = _pagination(request)
    services = request.app[SERVICES_KEY]
    result = await services.listing.tags(where, n, last)
    note(request, cache=result.status.value)
    client_name = where.prefix + _client_name(request, where)
    response = web.json_response({"name": client_name, "tags": result.tags})
    if result.more and result.tags:
        response.headers["Link"] = _next_link(request, result.tags[-1], n)
    return response


async def catalog(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS_KEY]
    ns = request.query.get("ns")
    upstream: str | None = None
    if ns is not None:
        if ns not in settings.upstreams:
            raise NameUnknown(f"registry {ns[:100]!r} is not mirrored by this cache")
        upstream = ns
    else:
        by_host = host_upstream(settings, request.host)
        upstream = by_host.name if by_host is not None else None
    n, last = _pagination(request)
    repos, more = await request.app[SERVICES_KEY].listing.catalog(upstream, n, last)
    note(request, upstream=upstream or "-", cache="HIT")
    response = web.json_response({"repositories": repos})
    if more and repos:
        response.headers["Link"] = _next_link(request, repos[-1], n)
    return response


async def referrers(request: web.Request, where: Route, digest: Digest) -> web.StreamResponse:
    artifact_type = request.query.get("artifactType")
    answer = await request.app[SERVICES_KEY].listing.referrers(where, digest, artifact_type)
    note(request, cache=answer.status.value)
    body = json.dumps(answer.index, separators=(",", ":")).encode()
    response = web.Response(body=body)
    response.headers["Content-Type"] = "application/vnd.oci.image.index.v1+json"
    if answer.filtered:
        response.headers["OCI-Filters-Applied"] = "artifactType"
    return response


def _client_name(request: web.Request, where: Route) -> str:
    match = API_PATH.match(request.path)
    name = match.group("name") if match else where.repository
    return name[len(where.prefix) :] if where.prefix and name.startswith(where.prefix) else name


def _pagination(request: web.Request) -> tuple[int | None, str | None]:
    raw_n = request.query.get("n")
    n: int | None = None
    if raw_n is not None:
        try:
            n = int(raw_n)
        except ValueError:
            raise TagInvalid(f"invalid page size n={raw_n[:20]!r}") from None
        if n < 0:
            raise TagInvalid("page size n must not be negative")
    return n, request.query.get("last") or None


def _next_link(request: web.Request, last: str, n: int | None) -> str:
    query = dict(request.query)
    query["last"] = last
    if n is not None:
        query["n"] = str(n)
    url = request.rel_url.with_query(query)
    return f'<{url}>; rel="next"'


def _not_modified(request: web.Request, digest: str) -> bool:
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    tags = {t.strip().removeprefix("W/").strip('"') for t in header.split(",")}
    return digest in tags or "*" in tags
