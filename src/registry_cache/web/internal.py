"""The replicas' internal endpoint (cluster mode): blobs for other replicas.

Signed requests only (``cluster/peers.py``); never behind client logins, never
listed. A replica answers what its local tier holds, or a fill it runs right now
(any worker), streamed as it grows with the last byte held back until verified.
"""

from __future__ import annotations

from aiohttp import web

from ..cluster.peers import BLOBS, HEADER, verify
from ..digest import Digest
from ..errors import BlobUnknown, Unauthorized
from ..store.body import Body, GrowingBody
from ..store.fill import FillFailed, LocalFills
from .handlers import note
from .responses import ByteRange, blob_headers, parse_range, send_body
from .services import SERVICES_KEY


class PeerDenied(Unauthorized):
    pass


def add_routes(app: web.Application, secret: str) -> None:
    async def blob(request: web.Request) -> web.StreamResponse:
        if not verify(secret, request.method, request.path, request.headers.get(HEADER)):
            raise PeerDenied("peer authentication required")
        digest = Digest.parse(request.match_info["digest"])
        ctx = request.app[SERVICES_KEY].ctx
        note(request, ref=str(digest), upstream="cluster-peer")
        body: Body | None = await ctx.store.open(digest)
        if body is None:
            local = getattr(ctx.fills, "local", ctx.fills)
            reader = local.follow(digest) if isinstance(local, LocalFills) else None
            if reader is None:
                raise BlobUnknown(f"this replica holds no {digest}")
            try:
                size = await reader.wait_size()
            except FillFailed as failed:
                reader.detach()
                raise BlobUnknown(f"fill of {digest} failed here: {failed}") from None
            body = GrowingBody(reader, size)
        note(request, cache="PEER")
        try:
            span = parse_range(request.headers.get("Range"), body.size)
            whole = span or ByteRange(0, body.size)
            response = web.StreamResponse(
                status=206 if span else 200, headers=blob_headers(str(digest), body.size, span)
            )
            response.content_length = whole.length
            sent = await send_body(request, response, body, whole)
        finally:
            await body.close()
        note(request, bytes=sent)
        return response

    app.router.add_get(BLOBS + "{digest}", blob)
