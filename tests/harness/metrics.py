"""Read the cache's ``GET /metrics`` (Prometheus text format).

Contract: ``scrape(url)`` returns a ``Metrics`` snapshot; ``snapshot.value(name,
**labels)`` is the sum of every sample called ``name`` whose labels include the
given ones (0.0 when there is none), so ``value("registry_cache_fill_resumes_total")``
counts every reason and ``value(..., reason="broken")`` one of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import urllib3
from prometheus_client.parser import text_string_to_metric_families

_http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=10))


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Metrics:
    samples: tuple[Sample, ...]
    text: str

    def value(self, name: str, **labels: str) -> float:
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )


def scrape(base_url: str, *, fresh: bool = False) -> Metrics:
    """``GET base_url/metrics``; raises AssertionError unless it answers 200.

    ``fresh``: on a new connection (with ``--workers N``, any worker may answer).
    """
    headers = {"Connection": "close"} if fresh else {}
    response = _http.request("GET", f"{base_url}/metrics", headers=headers)
    assert response.status == 200, f"/metrics answered {response.status}"
    text = response.data.decode()
    samples = tuple(
        Sample(s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    )
    return Metrics(samples, text)


def settled_value(
    base_url: str, name: str, expected: float, timeout: float = 3.0, **labels: str
) -> float:
    """Scrape until ``value(name, **labels)`` equals ``expected`` (or ``timeout`` passes).

    A request is counted when its handler returns, which for a streamed blob can be
    a moment after the client got the last byte; returns the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = scrape(base_url).value(name, **labels)
        if value == expected or time.monotonic() >= deadline:
            return value
        time.sleep(0.05)
