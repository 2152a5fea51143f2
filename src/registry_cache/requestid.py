"""The id of the request being served, for log lines and upstream tracing.

The access-log middleware sets ``CURRENT`` for each request: the client's own
``X-Request-Id`` when it is sane (``accept``), else a fresh one (``new``). It is a
context variable, so it follows the request into the thread pool
(``ProxyContext.call`` runs each call in a copy of the context) and into a fill
thread the request starts; the upstream client sends it as ``X-Request-Id``.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

HEADER = "X-Request-Id"
MAX_LENGTH = 128
# Characters that need no escaping in a log line, a header or a JSON string.
_SANE = re.compile(rf"[A-Za-z0-9._:+/=-]{{1,{MAX_LENGTH}}}")

CURRENT: ContextVar[str | None] = ContextVar("registry_cache_request_id", default=None)


def new() -> str:
    """128 random bits as 32 hex digits (the size of a W3C trace id)."""
    return secrets.token_hex(16)


def accept(given: str | None) -> str | None:
    """``given`` when it is a bounded run of safe characters, else None."""
    if given is not None and _SANE.fullmatch(given):
        return given
    return None


def current() -> str | None:
    return CURRENT.get()
