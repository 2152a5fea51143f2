"""A urllib3 response read as a stream from another server (upstream, bucket, replica):
what the three readers did alike once the headers are in."""

from __future__ import annotations

import urllib3

from .httpranges import ContentRangeInvalid, body_span


def drop(response: urllib3.BaseHTTPResponse) -> None:
    """Close the connection (it is not returned to the pool with a body half read)."""
    response.close()
    response.release_conn()


def body_timeout(response: urllib3.BaseHTTPResponse, seconds: float) -> None:
    """Headers came within the header timeout; the body may pause up to ``seconds`` per read.

    urllib3 sets the socket's timeout again before it reuses the connection.
    """
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def open_span(
    response: urllib3.BaseHTTPResponse, status: int, offset: int, seconds: float
) -> tuple[int, int | None]:
    """The body's start and the object's size (``httpranges.body_span``), with reads
    allowed to pause ``seconds``; a bad range header drops the connection and raises
    ``ContentRangeInvalid``, which each caller names as its server's error."""
    body_timeout(response, seconds)
    try:
        return body_span(status, response.headers, offset)
    except ContentRangeInvalid:
        drop(response)
        raise
