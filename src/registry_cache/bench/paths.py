"""Network path comparison: iperf3 to the cache host, HTTP from the cache vs a CDN.

The measurements answer "where is the bottleneck?" with verdicts computed from
the averages (thresholds in ``Thresholds``, printed with every verdict):

* cache HTTP ≥ 80% of iperf3 → the network path is the limit, not the cache;
* cache HTTP < 50% of iperf3 → look at the cache host (disk, CPU, NIC);
* CDN ≥ 1.5x the cache → the path to the cache is the bottleneck, unless iperf3
  already showed that path carries far more than the cache serves: then the CDN
  confirms the cache host (the verdicts never blame two different places).

HTTP rates depend on how many bytes a download moves (TCP slow start, request
latency), so both sides are timed over the same byte count: the smaller of the two
files (``compared_bytes``), the larger download stopped there.

The iperf3 reference is the ``-R -P 4`` run (the cache host sends to us, as in a
pull); without it, the best iperf3 average. Rates are in bits per second.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from .registry import CHUNK, PullError, RegistryClient

# name → extra iperf3 arguments; the seed's three tests.
IPERF_MODES: dict[str, list[str]] = {
    "single": [],
    "-P 4": ["-P", "4"],
    "-R -P 4": ["-R", "-P", "4"],
}
REFERENCE_MODE = "-R -P 4"
DEFAULT_CDN_URL = "https://proof.ovh.net/files/100Mb.dat"


class IperfError(Exception):
    """iperf3 could not measure (the message says why, on one line)."""


class IperfMissing(IperfError):
    """No iperf3 binary on PATH."""


class IperfNoServer(IperfError):
    """iperf3 runs but no server answered."""


def parse_iperf(text: str) -> float:
    """Bits per second received, from ``iperf3 -J`` output (``end.sum_received``).

    iperf3 3.12 exits 0 even when it cannot connect: the JSON's ``error`` tells.
    """
    try:
        doc: Any = json.loads(text)
    except ValueError:
        raise IperfError("iperf3 printed no JSON") from None
    if not isinstance(doc, dict):
        raise IperfError("iperf3 printed unexpected JSON")
    error = doc.get("error")
    if error:
        message = str(error).splitlines()[0]
        if "connect" in message or "refused" in message or "control" in message:
            raise IperfNoServer(message)
        raise IperfError(message)
    try:
        return float(doc["end"]["sum_received"]["bits_per_second"])
    except (KeyError, TypeError, ValueError):
        raise IperfError("iperf3 JSON has no end.sum_received.bits_per_second") from None


def iperf_argv(
    binary: str, host: str, port: int, duration: int, mode: str, *, nbytes: int | None = None
) -> list[str]:
    """``-n nbytes`` (the HTTP downloads' byte count, so the rates compare) or ``-t``."""
    amount = ["-n", str(nbytes)] if nbytes else ["-t", str(duration)]
    return [
        binary,
        "-c",
        host,
        "-p",
        str(port),
        "-J",
        *amount,
        "--connect-timeout",
        "5000",
        *IPERF_MODES[mode],
    ]


async def run_iperf(
    host: str,
    port: int,
    duration: int,
    mode: str,
    *,
    binary: str = "iperf3",
    nbytes: int | None = None,
) -> float:
    """One iperf3 client run (``nbytes`` or ``duration`` s; at most ``duration`` + 20 s);
    bits/s received. Raises IperfMissing/IperfNoServer/IperfError."""
    path = shutil.which(binary)
    if path is None:
        raise IperfMissing(f"{binary} not found on PATH")
    proc = await asyncio.create_subprocess_exec(
        *iperf_argv(path, host, port, duration, mode, nbytes=nbytes),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=duration + 20)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise IperfError(f"iperf3 did not finish within {duration + 20} s") from None
    if not out.strip() and proc.returncode:
        lines = err.decode(errors="replace").strip().splitlines()
        raise IperfError(lines[-1] if lines else f"iperf3 exited {proc.returncode}")
    return parse_iperf(out.decode(errors="replace"))


@dataclass(frozen=True, slots=True)
class Download:
    bytes: int
    seconds: float

    @property
    def bits_per_second(self) -> float:
        return self.bytes * 8 / self.seconds if self.seconds > 0 else 0.0


async def download(
    client: RegistryClient, url: str, *, scope: str, what: str, limit: int | None = None
) -> Download:
    """GET ``url`` (bytes discarded); time from the request to the last byte, or to the
    ``limit``-th byte when given (the rest is not read: the connection is dropped)."""
    received = 0
    started = time.perf_counter()
    async with client.get(url, scope=scope, what=what) as resp:
        async for chunk in resp.content.iter_chunked(CHUNK):
            received += len(chunk)
            if limit is not None and received >= limit:
                received = limit
                break
        seconds = time.perf_counter() - started
    if received == 0:
        raise PullError(f"{what}: empty response from {url}")
    return Download(received, seconds)


async def content_length(client: RegistryClient, url: str, *, scope: str, what: str) -> int | None:
    """The size a GET of ``url`` announces (headers only; the body is not read)."""
    async with client.get(url, scope=scope, what=what) as resp:
        return resp.content_length


def compared_bytes(cache_size: int | None, cdn_size: int | None) -> int | None:
    """Both sides are timed over this many bytes: the smaller file (None: sizes unknown)."""
    sizes = [size for size in (cache_size, cdn_size) if size]
    return min(sizes) if sizes else None


def open_client(url: str, *, verify_tls: bool = True) -> RegistryClient:
    """A client for any HTTP URL (redirects followed, registry auth answered if asked)."""
    return RegistryClient(
        url,
        verify_tls=verify_tls,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
    )


@dataclass(frozen=True, slots=True)
class Thresholds:
    network_limit: float = 0.80  # cache ≥ 80% of iperf3: the path is the limit
    cache_host: float = 0.50  # cache < 50% of iperf3: the cache host is the limit
    cdn_faster: float = 1.5  # CDN ≥ 1.5x cache: the path to the cache is the bottleneck


@dataclass(frozen=True, slots=True)
class Verdict:
    # network-limit | cache-host | in-between | path-bottleneck | cdn-faster | cache-not-slower
    key: str
    message: str
    rule: str
    blames: str | None = None  # "path" | "cache-host": where it puts the bottleneck


def verdicts(
    cache_bps: float | None,
    iperf_bps: float | None,
    cdn_bps: float | None,
    t: Thresholds = Thresholds(),
) -> list[Verdict]:
    """Interpret the averages; a comparison is skipped when either side is missing."""
    out: list[Verdict] = []
    if cache_bps is not None and iperf_bps:
        ratio = cache_bps / iperf_bps
        pct = f"cache HTTP = {ratio:.0%} of iperf3"
        if ratio >= t.network_limit:
            out.append(
                Verdict(
                    "network-limit",
                    f"{pct}: the network path is the limit, not the cache",
                    f"cache >= {t.network_limit:.0%} of iperf3",
                    "path",
                )
            )
        elif ratio < t.cache_host:
            out.append(
                Verdict(
                    "cache-host",
                    f"{pct}: look at the cache host (disk, CPU, NIC)",
                    f"cache < {t.cache_host:.0%} of iperf3",
                    "cache-host",
                )
            )
        else:
            out.append(
                Verdict(
                    "in-between",
                    f"{pct}: some overhead on the cache host, but the path "
                    "carries most of the cost",
                    f"{t.cache_host:.0%} <= cache < {t.network_limit:.0%} of iperf3",
                )
            )
    if cache_bps and cdn_bps is not None:
        factor = cdn_bps / cache_bps
        iperf_blames_host = any(v.blames == "cache-host" for v in out)
        if factor >= t.cdn_faster and iperf_blames_host:
            out.append(
                Verdict(
                    "cdn-faster",
                    f"the CDN is {factor:.1f}x faster than the cache, and iperf3 shows the "
                    "path carries far more than the cache serves: the cache host is the "
                    "bottleneck, not the path",
                    f"CDN >= {t.cdn_faster}x cache and cache < {t.cache_host:.0%} of iperf3",
                    "cache-host",
                )
            )
        elif factor >= t.cdn_faster:
            out.append(
                Verdict(
                    "path-bottleneck",
                    f"the CDN is {factor:.1f}x faster than the cache: "
                    "the path to the cache is the bottleneck",
                    f"CDN >= {t.cdn_faster}x cache",
                    "path",
                )
            )
        else:
            out.append(
                Verdict(
                    "cache-not-slower",
                    f"the CDN is {factor:.2f}x the cache: the cache is not "
                    "slower than the public internet path",
                    f"CDN < {t.cdn_faster}x cache",
                )
            )
    return out
