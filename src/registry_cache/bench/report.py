"""Benchmark results as text lines (per run, ``[summary]``) and as JSON.

The text is plain ``key=value`` columns so it reads well and greps well; rich
adds colour only on a terminal. Pull scenarios are summarised in seconds (lower
is better), blob scenarios in MB/s (10^6 bytes per second, higher is better).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .runner import PAIRS, SCENARIOS, BenchConfig, RunResult, Scenario, Target
from .stats import P95_DEFINITION, Summary, speedup, summarize

_BY_NAME = {s.name: s for s in SCENARIOS}
_WIDTH = max(len(s.name) for s in SCENARIOS)


@dataclass(frozen=True, slots=True)
class BenchReport:
    config: BenchConfig
    target: Target
    runs: list[RunResult]

    def summaries(self) -> dict[str, Summary]:
        out: dict[str, Summary] = {}
        for scenario in SCENARIOS:
            values = [r.value(scenario.kind) for r in self.runs if r.scenario == scenario.name]
            if values:
                out[scenario.name] = summarize(values)
        return out

    def speedups(self) -> dict[str, float | None]:
        """Cache vs upstream: upstream avg / cache avg for pulls, cache avg / upstream avg
        for blob speeds; >1 means the cache is faster."""
        summaries = self.summaries()
        out: dict[str, float | None] = {}
        for key, up, cache in PAIRS:
            if up in summaries and cache in summaries:
                higher = _BY_NAME[up].kind == "blob"
                out[key] = speedup(summaries[up].avg, summaries[cache].avg, higher_is_better=higher)
        return out

    def to_json(self) -> dict[str, Any]:
        cfg, target = self.config, self.target
        return {
            "image": str(cfg.image),
            "digest": target.digest,
            "platform": target.platform,
            "client": cfg.client,
            "upstream": cfg.upstream_url,
            "cache": cfg.cache_url,
            "cache_path_style": cfg.cache_style,
            "pulls": cfg.pulls,
            "prune_between": cfg.prune_between,
            "image_bytes": target.image_bytes,
            "layers": target.layers,
            "largest_layer": {"digest": target.blob_digest, "size": target.blob_size},
            "runs": [
                {
                    "scenario": r.scenario,
                    "run": r.run,
                    "seconds": r.seconds,
                    "bytes": r.bytes,
                    "mb_per_s": r.mb_per_s,
                }
                for r in self.runs
            ],
            "summary": {
                name: {"unit": _BY_NAME[name].unit, **summary.as_dict()}
                for name, summary in self.summaries().items()
            },
            "speedup": self.speedups(),
            "definitions": {
                "p95": P95_DEFINITION,
                "speedup": "pulls: upstream avg s / cache avg s; blob: cache avg MB/s / "
                "upstream avg MB/s; > 1 means the cache is faster",
            },
            "notes": target.notes,
        }


def header_lines(config: BenchConfig, target: Target) -> list[str]:
    plat = f" ({target.platform})" if target.platform else ""
    blob = f", largest layer {_mb(target.blob_size)}" if target.blob_size is not None else ""
    return [
        f"[benchmark] image={config.image} digest={target.digest}{plat}",
        f"[benchmark] {target.layers} layers, {_mb(target.image_bytes)}{blob}; "
        f"client={config.client} pulls={config.pulls} prune_between={config.prune_between}",
        f"[benchmark] upstream={config.upstream_url} cache={config.cache_url} "
        f"(path style {config.cache_style})",
        *(f"[note] {note}" for note in target.notes),
    ]


def run_line(scenario: Scenario, result: RunResult, total: int) -> str:
    return (
        f"[run] {scenario.name:<{_WIDTH}}  {result.run:>3}/{total:<3} "
        f"{result.seconds:9.3f}s  {_mb(result.bytes):>10}  {result.mb_per_s:9.1f} MB/s"
    )


def summary_lines(report: BenchReport) -> list[str]:
    lines = [
        f"[summary] {P95_DEFINITION}; pulls in seconds (lower is better), "
        "blob downloads in MB/s (higher is better)"
    ]
    for name, s in report.summaries().items():
        unit = _BY_NAME[name].unit
        cells = "  ".join(
            f"{key}={_fmt(getattr(s, key), unit)}" for key in ("avg", "median", "p95", "min", "max")
        )
        lines.append(f"{name:<{_WIDTH}}  n={s.count:<3} {cells}")
    for key, factor in report.speedups().items():
        how = "cache avg MB/s / upstream avg MB/s" if key == "blob" else "upstream avg / cache avg"
        value = "n/a" if factor is None else f"{factor:.2f}x"
        lines.append(f"speedup-{key:<{_WIDTH - 8}}  {value}  (cache vs upstream: {how})")
    return lines


def _fmt(value: float, unit: str) -> str:
    return f"{value:.3f}s" if unit == "s" else f"{value:.1f}MB/s"


def _mb(size: int | None) -> str:
    return "?" if size is None else f"{size / 1e6:.1f} MB"
