"""``registry-cache compare-paths``: iperf3 and HTTP A/B to find the bottleneck.

Replaces the seed's ``compare-paths.sh`` (``./compare-paths.sh`` still runs it).
iperf3 needs ``iperf3 -s`` on the cache host; without the binary or a server the
HTTP part still runs. The seed's interpretation guidelines are computed verdicts.

Every rate compared is taken over the same byte count (``compared_bytes``: the
smaller of the cache blob and the CDN file; iperf3 moves it too, with ``-n``), so a
verdict does not follow from one file being larger than the other.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import click

from ..bench.paths import (
    DEFAULT_CDN_URL,
    IPERF_MODES,
    REFERENCE_MODE,
    Download,
    IperfError,
    IperfMissing,
    IperfNoServer,
    Thresholds,
    Verdict,
    compared_bytes,
    content_length,
    download,
    open_client,
    run_iperf,
    verdicts,
)
from ..bench.pullclient import DEFAULT_PLATFORM, image_blobs, parse_platform, resolve
from ..bench.refs import RefError, base_url, cache_repository, parse_image, resolve_style
from ..bench.registry import PullError, RegistryClient, pull_scope
from ..reference import display_reference
from .common import cache_host_option, cache_path_style_option, console, image_options, json_option
from .main import CliError


@dataclass
class PathsResult:
    cache_url: str
    blob_url: str
    cdn_url: str
    cache_size: int | None = None  # bytes of the cache blob
    cdn_size: int | None = None  # bytes the CDN announced (None: no Content-Length / failed)
    compared: int | None = None  # bytes every timed transfer moves
    iperf: dict[str, list[float]] = field(default_factory=dict)  # mode → bits/s per run
    cache: list[Download] = field(default_factory=list)
    cdn: list[Download] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def iperf_reference(self) -> tuple[str, float] | None:
        avgs = {mode: statistics.fmean(v) for mode, v in self.iperf.items() if v}
        if REFERENCE_MODE in avgs:
            return REFERENCE_MODE, avgs[REFERENCE_MODE]
        return max(avgs.items(), key=lambda kv: kv[1]) if avgs else None

    def cdn_comparable(self) -> bool:
        """Every cache and CDN run moved the same bytes (a smaller CDN file would not)."""
        moved = {d.bytes for d in (*self.cache, *self.cdn)}
        return bool(self.cache and self.cdn) and len(moved) == 1

    def verdicts(self) -> list[Verdict]:
        ref = self.iperf_reference()
        cdn = _avg(self.cdn) if self.cdn_comparable() else None
        return verdicts(_avg(self.cache), ref[1] if ref else None, cdn)

    def to_json(self) -> dict[str, Any]:
        ref = self.iperf_reference()
        t = Thresholds()
        return {
            "cache": self.cache_url,
            "cache_blob_url": self.blob_url,
            "cdn_url": self.cdn_url,
            "iperf3": {
                m: {"runs_bps": v, "avg_bps": statistics.fmean(v)}
                for m, v in self.iperf.items()
                if v
            },
            "iperf3_reference": ref[0] if ref else None,
            "sizes": {"cache": self.cache_size, "cdn": self.cdn_size, "compared": self.compared},
            "http": {
                name: {
                    "runs": [
                        {"bytes": d.bytes, "seconds": d.seconds, "bps": d.bits_per_second}
                        for d in runs
                    ],
                    "avg_bps": _avg(runs),
                }
                for name, runs in (("cache", self.cache), ("cdn", self.cdn))
            },
            "thresholds": {
                "network_limit": t.network_limit,
                "cache_host": t.cache_host,
                "cdn_faster": t.cdn_faster,
            },
            "verdicts": [
                {"key": v.key, "message": v.message, "rule": v.rule, "blames": v.blames}
                for v in self.verdicts()
            ],
            "notes": self.notes,
        }


@click.command("compare-paths")
@cache_host_option("The cache (env: CACHE_HOST); iperf3 targets its host.")
@click.option(
    "--runs",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    envvar="RUNS",
    help="Runs of every measurement (env: RUNS).",
)
@click.option("--skip-iperf", is_flag=True, envvar="SKIP_IPERF", help="Only the HTTP A/B.")
@click.option("--iperf-port", type=click.IntRange(1, 65535), default=5201, show_default=True)
@click.option(
    "--duration",
    type=click.IntRange(1, 300),
    default=40,
    show_default=True,
    help="iperf3 moves the compared byte count (-n); a run may take this + 20 s at most.",
)
@click.option(
    "--cdn-url",
    default=DEFAULT_CDN_URL,
    show_default=True,
    envvar="CDN_URL",
    help="A public file to compare the cache with (env: CDN_URL).",
)
@click.option(
    "--cache-blob-url",
    metavar="URL",
    help="The cache blob to download [the largest layer of --repo:--tag].",
)
@image_options("Image whose largest layer is fetched from the cache (env: REPO).")
@click.option("--platform", default=DEFAULT_PLATFORM, show_default=True)
@cache_path_style_option("How the cache names repositories (see benchmark).")
@json_option()
def compare_paths(  # noqa: PLR0917 - one parameter per click option
    cache_host: str,
    runs: int,
    skip_iperf: bool,
    iperf_port: int,
    duration: int,
    cdn_url: str,
    cache_blob_url: str | None,
    repo: str,
    tag: str | None,
    platform: str,
    cache_path_style: str,
    as_json: bool,
) -> None:
    """Compare the network path to the cache (iperf3) with HTTP downloads from the cache
    and from a public CDN, and say where the bottleneck is.

    Verdicts: cache HTTP >= 80% of iperf3 (-R -P 4) means the network path is the
    limit; < 50% means look at the cache host (disk, CPU, NIC); a CDN >= 1.5x faster
    than the cache means the path to the cache is the bottleneck.
    """
    try:
        cache_url = base_url(cache_host)
        image = parse_image(repo, tag)
        style = resolve_style(cache_path_style, cache_url, image)
        parse_platform(platform)
        base_url(cdn_url, "https")
    except (RefError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from None
    out = console(stderr=as_json, quiet=as_json)

    def say(line: str) -> None:
        out.print(line, markup=False)

    async def main() -> PathsResult:
        size: int | None
        if cache_blob_url:
            blob_url, scope, size = cache_blob_url, _scope_of(cache_blob_url), None
        else:
            blob_url, scope, size = await _largest_layer(
                cache_url, cache_repository(image, style), image.reference, platform
            )
            say(f"[paths] cache blob: largest layer of {image} ({size / 1e6:.1f} MB)")
        result = PathsResult(cache_url, blob_url, cdn_url)
        say(f"[paths] cache blob URL: {blob_url}")
        say(f"[paths] CDN URL: {cdn_url}")
        await _sizes(result, scope, size, say)
        host = urlsplit(cache_url).hostname or "localhost"
        if skip_iperf:
            result.notes.append("iperf3 skipped (--skip-iperf)")
            say("[iperf3] skipped (--skip-iperf)")
        else:
            say(f"[iperf3] {host}:{iperf_port}, {_mb(result.compared)} per run (-n)")
            await _iperf(result, host=host, port=iperf_port, duration=duration, runs=runs, say=say)
        await _http(result, scope, runs, say)
        return result

    try:
        result = asyncio.run(main())
    except PullError as exc:
        raise CliError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    for line in _summary(result):
        say(line)


async def _largest_layer(
    cache_url: str, repository: str, reference: str, platform: str
) -> tuple[str, str, int]:
    async with RegistryClient(cache_url, verify_tls=False) as client:
        try:
            _, manifest, _ = await resolve(client, repository, reference, platform)
            _, layers = image_blobs(manifest.json(), manifest.digest)
        except PullError as exc:
            raise type(exc)(f"cache {exc}") from None
        if not layers:
            raise PullError(f"{display_reference(repository, reference)} has no layers to download")
        largest = max(layers, key=lambda d: d.size)
        return client.blob_url(repository, largest.digest), pull_scope(repository), largest.size


async def _sizes(
    result: PathsResult, scope: str, cache_size: int | None, say: Callable[[str], None]
) -> None:
    """Learn both sizes (headers only) and the byte count every measurement moves."""
    async with open_client(_origin(result.blob_url), verify_tls=False) as cache:
        if cache_size is None:
            try:
                cache_size = await content_length(
                    cache, result.blob_url, scope=scope, what="cache blob"
                )
            except PullError as exc:
                raise type(exc)(f"cache {exc}") from None
    if not cache_size:
        raise PullError(f"cache blob {result.blob_url} announces no size (Content-Length)")
    result.cache_size = cache_size
    async with open_client(_origin(result.cdn_url)) as cdn:
        try:
            result.cdn_size = await content_length(cdn, result.cdn_url, scope="", what="CDN file")
        except PullError:
            pass  # the timed download reports the failure
    result.compared = compared_bytes(result.cache_size, result.cdn_size)
    cdn_text = _mb(result.cdn_size) if result.cdn_size else "size unknown"
    say(
        f"[paths] sizes: cache blob {_mb(result.cache_size)}, CDN file {cdn_text}; "
        f"every transfer is timed over the same {_mb(result.compared)}"
    )


async def _iperf(
    result: PathsResult,
    *,
    host: str,
    port: int,
    duration: int,
    runs: int,
    say: Callable[[str], None],
) -> None:
    for mode in IPERF_MODES:
        for index in range(1, runs + 1):
            try:
                bps = await run_iperf(host, port, duration, mode, nbytes=result.compared)
            except IperfMissing as exc:
                note = (
                    f"{exc}: iperf3 part skipped "
                    "(install iperf3; run `iperf3 -s` on the cache host)"
                )
            except IperfNoServer as exc:
                note = (
                    f"no iperf3 server at {host}:{port} ({exc}): iperf3 part skipped "
                    "(run `iperf3 -s` on the cache host)"
                )
            except IperfError as exc:
                say(f"[iperf3] {mode:<8} run {index}/{runs}  failed: {exc}")
                result.notes.append(f"iperf3 {mode} run {index}: {exc}")
                continue
            else:
                result.iperf.setdefault(mode, []).append(bps)
                say(f"[iperf3] {mode:<8} run {index}/{runs}  {_mbit(bps)}")
                continue
            result.notes.append(note)
            say(f"[iperf3] {note}")
            return


async def _http(result: PathsResult, scope: str, runs: int, say: Callable[[str], None]) -> None:
    cache = open_client(_origin(result.blob_url), verify_tls=False)
    cdn = open_client(_origin(result.cdn_url))
    cdn_ok = True
    async with cache, cdn:
        for index in range(1, runs + 1):  # A/B interleaved: both see the same conditions
            limit = result.compared
            try:
                got = await download(
                    cache, result.blob_url, scope=scope, what="cache blob", limit=limit
                )
            except PullError as exc:
                raise type(exc)(f"cache {exc}") from None
            result.cache.append(got)
            say(f"[http] cache    run {index}/{runs}  {_dl(got)}")
            if not cdn_ok:
                continue
            try:
                got = await download(cdn, result.cdn_url, scope="", what="CDN file", limit=limit)
            except PullError as exc:
                cdn_ok = False
                result.notes.append(f"CDN download failed: {exc}")
                say(f"[http] cdn      failed: {exc} (CDN comparison skipped)")
                continue
            result.cdn.append(got)
            say(f"[http] cdn      run {index}/{runs}  {_dl(got)}")
        if result.cache and result.cdn and not result.cdn_comparable():
            note = (
                "the CDN file ended before the compared byte count "
                f"({_mb(result.cdn[-1].bytes)} < {_mb(result.cache[-1].bytes)}): "
                "no CDN verdict, the rates would not compare"
            )
            result.notes.append(note)
            say(f"[http] {note}")


def _summary(result: PathsResult) -> list[str]:
    lines = [
        "[averages] Mbit/s = 10^6 bits per second, every transfer "
        f"{_mb(result.compared)} (cache blob {_mb(result.cache_size)}, CDN file "
        f"{_mb(result.cdn_size) if result.cdn_size else 'size unknown'})"
    ]
    for mode, values in result.iperf.items():
        if values:
            lines.append(f"iperf3 {mode:<9} {_stats(values)}")
    for name, runs in (("cache", result.cache), ("cdn", result.cdn)):
        if runs:
            lines.append(f"http {name:<11} {_stats([d.bits_per_second for d in runs])}")
    t = Thresholds()
    ref = result.iperf_reference()
    lines.append(
        f"[verdict] thresholds: cache >= {t.network_limit:.0%} of iperf3 -> the network path is "
        f"the limit; cache < {t.cache_host:.0%} of iperf3 -> look at the cache host; "
        f"CDN >= {t.cdn_faster}x cache -> the path to the cache is the bottleneck"
        + (f" (iperf3 reference: {ref[0]})" if ref else " (no iperf3 figures)")
    )
    found = result.verdicts()
    lines += [f"[verdict] {v.key}: {v.message} (rule: {v.rule})" for v in found]
    if not found:
        lines.append("[verdict] none: not enough measurements to compare")
    return lines


def _stats(values: list[float]) -> str:
    return (
        f"avg={_mbit(statistics.fmean(values))}  min={_mbit(min(values))}  "
        f"max={_mbit(max(values))}  (n={len(values)})"
    )


def _avg(runs: list[Download]) -> float | None:
    return statistics.fmean(d.bits_per_second for d in runs) if runs else None


def _mb(nbytes: int | None) -> str:
    return f"{(nbytes or 0) / 1e6:.1f} MB"


def _mbit(bps: float) -> str:
    return f"{bps / 1e6:.1f} Mbit/s"


def _dl(d: Download) -> str:
    return f"{d.bytes / 1e6:8.1f} MB in {d.seconds:7.3f} s  {_mbit(d.bits_per_second)}"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _scope_of(url: str) -> str:
    """``/v2/<repo>/blobs/<digest>`` → the pull scope (registry token auth), else none."""
    path = urlsplit(url).path
    if path.startswith("/v2/") and "/blobs/" in path:
        return pull_scope(path[4:].rsplit("/blobs/", 1)[0])
    return ""
