"""Benchmark report: summary lines and JSON from known runs."""

from __future__ import annotations

import re

import pytest

from registry_cache.bench.refs import parse_image
from registry_cache.bench.report import BenchReport, run_line, summary_lines
from registry_cache.bench.runner import SCENARIOS, BenchConfig, RunResult, Target

DIGEST = "sha256:" + "a" * 64


def make_report() -> BenchReport:
    config = BenchConfig(
        image=parse_image("alpine:3.19"),
        upstream_url="http://127.0.0.1:1",
        cache_url="http://127.0.0.1:2",
        pulls=4,
    )
    target = Target(
        digest=DIGEST,
        platform="linux/amd64",
        config_digest=DIGEST,
        config_size=10,
        image_bytes=4_000_000,
        layers=2,
        blob_digest=DIGEST,
        blob_size=2_000_000,
    )
    seconds = {
        "tag-upstream": [2.0, 4.0, 6.0, 8.0],  # avg 5
        "tag-cache": [1.0, 1.0, 1.0, 2.0],  # avg 1.25 → 4x
        "digest-upstream": [3.0, 3.0, 3.0, 3.0],
        "digest-cache": [1.5, 1.5, 1.5, 1.5],  # 2x
        "blob-upstream": [1.0, 1.0, 2.0, 2.0],  # 2, 2, 1, 1 MB/s → avg 1.5
        "blob-cache": [0.5, 0.5, 0.5, 0.5],  # 4 MB/s → 2.67x
    }
    runs = [
        RunResult(name, i + 1, s, 2_000_000 if name.startswith("blob") else 4_000_000)
        for name, values in seconds.items()
        for i, s in enumerate(values)
    ]
    return BenchReport(config, target, runs)


def test_summaries_and_speedups() -> None:
    report = make_report()
    summaries = report.summaries()
    assert list(summaries) == [s.name for s in SCENARIOS]
    up = summaries["tag-upstream"]
    assert (up.avg, up.median, up.p95, up.min, up.max) == (5.0, 5.0, 8.0, 2.0, 8.0)
    assert summaries["blob-upstream"].avg == pytest.approx(1.5)  # MB/s
    speedups = report.speedups()
    assert speedups["tag"] == pytest.approx(4.0)
    assert speedups["digest"] == pytest.approx(2.0)
    assert speedups["blob"] == pytest.approx(4 / 1.5)


def test_summary_lines_parse() -> None:
    lines = summary_lines(make_report())
    assert lines[0].startswith("[summary] p95 = nearest-rank")
    pattern = re.compile(
        r"^(?P<name>[a-z-]+)\s+n=(?P<n>\d+)\s+avg=(?P<avg>[\d.]+)(?P<unit>s|MB/s)\s+"
        r"median=[\d.]+(?P=unit)\s+p95=[\d.]+(?P=unit)\s+min=[\d.]+(?P=unit)\s+max=[\d.]+(?P=unit)$"
    )
    rows = {m["name"]: m for m in map(pattern.match, lines[1:7]) if m}
    assert set(rows) == {s.name for s in SCENARIOS}
    assert rows["tag-upstream"]["avg"] == "5.000"
    assert rows["blob-cache"]["unit"] == "MB/s"
    assert rows["blob-cache"]["avg"] == "4.0"
    assert lines[7].startswith("speedup-tag") and "4.00x" in lines[7]
    assert lines[9].startswith("speedup-blob") and "2.67x" in lines[9]


def test_run_line() -> None:
    blob = next(s for s in SCENARIOS if s.name == "blob-cache")
    line = run_line(blob, RunResult("blob-cache", 2, 0.5, 2_000_000), 4)
    assert line.startswith("[run] blob-cache")
    assert "2/4" in line and "4.0 MB/s" in line


def test_json_has_the_summary_keys() -> None:
    doc = make_report().to_json()
    assert doc["image"] == "docker.io/library/alpine:3.19"
    assert len(doc["runs"]) == 24
    for name, summary in doc["summary"].items():
        assert {"unit", "count", "avg", "median", "p95", "min", "max"} <= set(summary), name
    assert doc["summary"]["tag-cache"]["unit"] == "s"
    assert set(doc["speedup"]) == {"tag", "digest", "blob"}
    assert "nearest-rank" in doc["definitions"]["p95"]
