"""Hit latency as one client sees it: sequential requests on one keep-alive connection.

``python -m benchmarks.bigcache.probe --port P --sample FILE --kind tag|head|get|mixed
[--count N | --until-file F --max-seconds S] [--rate R] [--ready-file F]`` prints one JSON document:
per kind (and with ``mixed`` for all of them together) the count, statuses,
p50/p99/max in ms. Run as its own process so the
benchmark's other work never shares its interpreter (GIL) with the measurement.

Each request names a different object (a sample of the data set, round robin),
so the cache's memos do not answer them all: a hit costs what it costs at that
size. ``--rate`` paces requests (an eviction pass is measured under a steady
trickle, not a flood); without it they go back to back.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .sample import Ref, Sample

ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
KINDS = ("tag", "head", "get")
ALL = "all"  # the summary of every request of a mixed probe


def requests(sample: Sample, kind: str) -> Iterator[tuple[str, str, str]]:
    """(kind, method, path) forever, round robin over the sample."""

    def one(k: str, ref: Ref) -> tuple[str, str, str]:
        if k == "tag":
            return k, "GET", f"/v2/{ref.repo}/manifests/{ref.name}?ns={ref.upstream}"
        method = "HEAD" if k == "head" else "GET"
        return k, method, f"/v2/{ref.repo}/blobs/{ref.name}?ns={ref.upstream}"

    sources = {"tag": sample.tags, "head": sample.layers, "get": sample.configs}
    kinds = KINDS if kind == "mixed" else (kind,)
    cycles = [itertools.cycle([one(k, ref) for ref in sources[k]]) for k in kinds if sources[k]]
    for source in itertools.cycle(cycles):
        yield next(source)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summarize(
    latencies: dict[str, list[float]], statuses: dict[str, dict[int, int]]
) -> dict[str, object]:
    """Per kind; with more than one kind also ``ALL`` (every request, whatever its kind)."""
    summary: dict[str, object] = {
        kind: _figures(values, statuses[kind]) for kind, values in latencies.items()
    }
    if len(latencies) > 1:
        every: dict[int, int] = {}
        for counts in statuses.values():
            for status, n in counts.items():
                every[status] = every.get(status, 0) + n
        summary[ALL] = _figures([v for values in latencies.values() for v in values], every)
    return summary


def _figures(values: list[float], statuses: dict[int, int]) -> dict[str, object]:
    return {
        "count": len(values),
        "statuses": {str(s): n for s, n in sorted(statuses.items())},
        "p50_ms": _ms(percentile(values, 0.50)),
        "p99_ms": _ms(percentile(values, 0.99)),
        "max_ms": _ms(max(values) if values else None),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def run(
    port: int,
    sample: Sample,
    kind: str,
    *,
    count: int | None,
    until_file: Path | None,
    max_seconds: float,
    rate: float | None,
    ready_file: Path | None = None,
) -> dict[str, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies: dict[str, list[float]] = {k: [] for k in (KINDS if kind == "mixed" else (kind,))}
    statuses: dict[str, dict[int, int]] = {k: {} for k in latencies}
    deadline = time.monotonic() + max_seconds
    interval = 1.0 / rate if rate else 0.0
    next_at = time.monotonic()
    for done, (k, method, path) in enumerate(requests(sample, kind)):
        now = time.monotonic()
        if (count is not None and done >= count) or now > deadline:
            break
        if until_file is not None and done % 16 == 0 and until_file.exists():
            break
        if interval:
            if now < next_at:
                time.sleep(next_at - now)
            next_at += interval
        began = time.perf_counter()
        try:
            conn.request(method, path, headers={"Accept": ACCEPT})
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            status = 0
        latencies[k].append(time.perf_counter() - began)
        statuses[k][status] = statuses[k].get(status, 0) + 1
        if ready_file is not None and done == 0:
            ready_file.touch()  # requests are flowing: what runs beside may start
    conn.close()
    return summarize(latencies, statuses)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bigcache.probe")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sample", type=Path, required=True)
    parser.add_argument("--kind", choices=[*KINDS, "mixed"], default="mixed")
    parser.add_argument("--count", type=int)
    parser.add_argument("--until-file", type=Path)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--ready-file", type=Path, help="touched once the first answer came")
    args = parser.parse_args()
    sample = Sample.from_json(json.loads(args.sample.read_text()))
    result = run(
        args.port,
        sample,
        args.kind,
        count=args.count,
        until_file=args.until_file,
        max_seconds=args.max_seconds,
        rate=args.rate,
        ready_file=args.ready_file,
    )
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
