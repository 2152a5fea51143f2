"""This process's Prometheus counters, as deltas since the last look.

Upstream bytes, upstream errors and evictions are already counted by ``metrics``
(in the fill and upstream threads); the stats history takes them from there at
each flush instead of counting them a second time on the hot path.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter

from .. import metrics

# (counter, label naming the upstream or None, history column)
SOURCES: tuple[tuple[Counter, str | None, str], ...] = (
    (metrics.UPSTREAM_BYTES, "upstream", "bytes_upstream"),
    (metrics.UPSTREAM_ERRORS, "upstream", "upstream_errors"),
    (metrics.EVICTIONS, None, "evictions"),
    (metrics.EVICTED_BYTES, None, "evicted_bytes"),
)


def _samples(counter: Counter) -> Iterator[tuple[dict[str, str], float]]:
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                yield sample.labels, sample.value


class MetricDeltas:
    def __init__(self) -> None:
        self._last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.read()  # what was counted before this worker's recorder started is not ours

    def read(self) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
        """(upstream ("" for none) -> column -> delta, upstream -> an error kind that grew)."""
        deltas: dict[str, dict[str, int]] = {}
        kinds: dict[str, str] = {}
        for counter, label, column in SOURCES:
            for labels, value in _samples(counter):
                key = (column, tuple(sorted(labels.items())))
                grown = int(value - self._last.get(key, 0.0))
                self._last[key] = value
                if grown <= 0:
                    continue
                upstream = labels.get(label, "") if label else ""
                per = deltas.setdefault(upstream, {})
                per[column] = per.get(column, 0) + grown
                if column == "upstream_errors":
                    kinds[upstream] = labels.get("kind", "error")
        return deltas, kinds
