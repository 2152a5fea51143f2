"""The length and range headers of a response from another server (RFC 9110 §14.4, §8.6).

Upstreams, the bucket and other replicas all answer a ranged GET with 206 and
``Content-Range: bytes <first>-<last>/<total or *>``, and a 416 with ``bytes */<total>``.
One parser for the three: what it cannot read raises ``ContentRangeInvalid``
(a ``ValueError``), which each caller turns into its own error for that server
(502 for an upstream, a failed source for a bucket or replica). The request side
(a client's ``Range``) is parsed in web.responses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

_UNIT = "bytes "


class ContentRangeInvalid(ValueError):
    """A Content-Range header that is missing, malformed or contradicts itself."""


@dataclass(frozen=True, slots=True)
class ContentRange:
    """``bytes first-last/total``: bytes ``first`` to ``last`` inclusive of ``total``."""

    first: int
    last: int
    total: int | None  # None: the server sent ``*`` (it does not know the total)


def header_int(value: str | None) -> int | None:
    """A non-negative decimal header (Content-Length); None when absent or not one.

    Stricter than ``int()``, which also takes ``-1``, ``+1``, ``1_000`` and non-ASCII digits.
    """
    if value is None:
        return None
    text = value.strip()
    return int(text) if text.isascii() and text.isdigit() else None


def parse_content_range(value: str | None, starting_at: int | None = None) -> ContentRange:
    """A 206's ``Content-Range``; ContentRangeInvalid when there is none, it makes no
    sense, or (with ``starting_at``) it does not start at the byte the request asked from."""
    span, total = _split(value)
    first_text, dash, last_text = span.partition("-")
    first, last = header_int(first_text), header_int(last_text)
    if not dash or first is None or last is None or last < first:
        raise ContentRangeInvalid(f"sent an invalid Content-Range ({_shown(value)})")
    size = None
    if total != "*":
        size = header_int(total)
        if size is None or last >= size:
            raise ContentRangeInvalid(f"sent an invalid Content-Range ({_shown(value)})")
    if starting_at is not None and first != starting_at:
        raise ContentRangeInvalid(f"sent bytes from {first} when asked from {starting_at}")
    return ContentRange(first, last, size)


def body_span(status: int, headers: Mapping[str, str], offset: int) -> tuple[int, int | None]:
    """Where a 200 or 206 body to a GET from ``offset`` starts, and the object's whole
    size (None: unknown); ContentRangeInvalid for a 206 that does not start at ``offset``
    or says nothing sensible. A 200 is the whole object from byte 0 (a server may ignore
    Range)."""
    if status == 206:
        return offset, parse_content_range(headers.get("Content-Range"), offset).total
    return 0, header_int(headers.get("Content-Length"))


def parse_unsatisfied_total(value: str | None) -> int:
    """A 416's ``Content-Range: bytes */total`` → total; ContentRangeInvalid otherwise."""
    span, total = _split(value)
    size = header_int(total)
    if span != "*" or size is None:
        raise ContentRangeInvalid(f"sent an invalid Content-Range ({_shown(value)})")
    return size


def _split(value: str | None) -> tuple[str, str]:
    if value is None:
        raise ContentRangeInvalid("sent no Content-Range")
    text = value.strip()
    if text[: len(_UNIT)].lower() != _UNIT or "/" not in text:
        raise ContentRangeInvalid(f"sent an invalid Content-Range ({_shown(value)})")
    span, _, total = text[len(_UNIT) :].partition("/")
    return span.strip(), total.strip()


def _shown(value: str | None) -> str:
    """The header as it may appear in a message: short, printable (it came from outside)."""
    text = "".join(c if c.isprintable() else "?" for c in (value or "")[:64])
    return text + ("…" if value is not None and len(value) > 64 else "")
