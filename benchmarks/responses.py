"""When each of the upstream's responses ran, from distribution's own log.

distribution logs ``msg="response completed"`` as a handler returns, with the
request's URI and ``http.response.duration`` (Go's notation, quoted by logrus when
in microseconds: "898.0µs"): its start is the line's time minus that. The same
record for a pull straight from the upstream and for one through a cache, so the
WAN scenarios can split either pull the same way:
the layers' transfer on the link, and everything outside it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from .measure import LogTail

_COMPLETED = re.compile(
    r'^time="(?P<time>[^"]+)".*msg="response completed".*'
    r"http\.request\.method=(?P<method>[A-Z]+) .*"
    r'http\.request\.uri="(?P<uri>[^"]+)".*'
    r'http\.response\.duration="?(?P<duration>[^" ]+)"? .*'
    r"http\.response\.status=(?P<status>\d{3})"
)
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class Response:
    method: str
    uri: str
    status: int
    start: float  # seconds since the epoch
    end: float


def go_duration(text: str) -> float:
    """Seconds in Go's ``time.Duration.String()`` notation ("1m2.5s", "852.1ms")."""
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Go duration: {text!r}")
    return sum(float(number) * _UNIT[unit] for number, unit in parts)


def _epoch(stamp: str) -> float:
    # Go writes nanoseconds; Python 3.11's fromisoformat takes at most microseconds.
    head, dot, tail = stamp.rstrip("Z").partition(".")
    fraction = float(f"0.{tail}") if dot else 0.0
    return datetime.fromisoformat(f"{head}+00:00").timestamp() + fraction


def parse(text: str) -> list[Response]:
    out: list[Response] = []
    for line in text.splitlines():
        match = _COMPLETED.match(line)
        if match is None:
            continue
        end = _epoch(match["time"])
        start = end - go_duration(match["duration"])
        out.append(Response(match["method"], match["uri"], int(match["status"]), start, end))
    return out


class ResponseLog(LogTail):
    """distribution's log from a mark on: ``mark()``, then ``blob_gets(mark, digests)``."""

    def since(self, mark: int) -> list[Response]:
        return parse(self.text_since(mark))

    def blob_gets(
        self, mark: int, digests: Collection[str], timeout: float = 5.0
    ) -> list[Response]:
        """The successful blob GETs of ``digests`` since ``mark``, once each has one
        (distribution logs a response as its handler returns, a moment after the
        client's last byte)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [
                r
                for r in self.since(mark)
                if r.method == "GET"
                and r.status in (200, 206)
                and r.uri.rsplit("/", 1)[-1] in digests
            ]
            if {r.uri.rsplit("/", 1)[-1] for r in found} >= set(digests):
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.path}: no response logged for some of {digests}")
            time.sleep(0.05)


@dataclass(frozen=True, slots=True)
class LinkSplit:
    """One pull's layers on the link, from the upstream's side."""

    layers: float  # the first layer request's start to the last layer response's end
    last_alone: float  # the last layer's time after every other layer had finished


def split(responses: list[Response]) -> LinkSplit:
    if not responses:
        raise ValueError("no responses to split")
    ends = sorted(r.end for r in responses)
    first = min(r.start for r in responses)
    alone = ends[-1] - ends[-2] if len(ends) > 1 else 0.0
    return LinkSplit(ends[-1] - first, alone)
