"""One function per scenario; each returns a ScenarioResult (see results.py).

Contenders: ``registry-cache`` (this project), ``distribution-proxy`` (CNCF
distribution in proxy mode), ``nginx`` (sendfile: the machine's limit for one
file), ``upstream`` (docker-registry itself, no proxy). Within a repetition
every contender is measured back to back, starting with a different one each
time, so drift in a noisy machine falls on all of them. A repetition during
which processes outside the suite kept more than ``max_noise`` cores busy is
measured again (up to ``retries`` times); what they took is reported either way.

"Cold" means not in the proxy: a new process with an empty data directory for
every cold GET, of the cache and of the distribution proxy alike. The upstream's
own file is in the page cache for every contender (it was just written) unless
``drop_caches`` is set, which runs ``sync; echo 3 > /proc/sys/vm/drop_caches``
before each cold GET.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from . import placement, pullers
from .actions import (
    ScenarioError,
    await_stored,
    blob_url,
    concurrent_gets,
    drop_caches,
    fetch,
    tmpfs_with_room,
    write_speed,
)
from .content import MANIFEST_ACCEPT, Blob
from .httpio import Transfer, request
from .lab import Lab
from .load import LoadResult, run_load
from .measure import (
    CpuMeter,
    NoiseMonitor,
    RssMonitor,
    UpstreamLog,
    log_mark,
    requests_per_process,
)
from .pullers import BUILTIN, CTR_FETCH, CTR_PULL, SKOPEO_DIR, SKOPEO_OCI
from .readers import MIB_READS
from .results import GB, ScenarioResult
from .servers import Cache, Server, clean_env

CACHE = "registry-cache"
PROXY = "distribution-proxy"
NGINX = "nginx"
UPSTREAM = "upstream"
TMPFS_CACHE = f"{CACHE}, data on tmpfs"
TLS_CACHE = f"{CACHE} over HTTPS"
WARM_GETS = 5  # per contender and repetition; the median counts
GIB = 1 << 30
MEMORY_PAUSE = 6.0  # seconds: long enough for freed memory to go back to the host
RSS = f"{CACHE} peak RSS"
# A prefork cache's physical memory: its processes' PSS summed (the pages the workers
# share with their parent by fork counted once, not once per process as summed RSS).
PSS = f"{CACHE} peak PSS"
NOISE = "other processes' CPU"
T = TypeVar("T")

__all__ = ["SCENARIOS", "Plan", "ScenarioError", "rotated"]


@dataclass(frozen=True, slots=True)
class Plan:
    reps: int = 5
    herd_clients: int = 16
    load_seconds: float = 5.0
    load_tool: str = "auto"  # wrk | builtin | auto
    pull_client: str = "auto"  # auto | skopeo | ctr | builtin (PULL_CLIENTS)
    drop_caches: bool = False
    max_noise: float = 0.25  # cores other processes may take before a repetition is redone
    retries: int = 2
    memory_pause: float = MEMORY_PAUSE  # quiet before the "fresh memory" write probe (0: skip)
    wan_reps: int = 2  # WAN scenarios: each repetition takes a minute or two
    quick: bool = False
    progress: Callable[[str], None] = field(default=lambda _msg: None)


Repetition = Callable[[int, ScenarioResult], None]


def repeat(plan: Plan, result: ScenarioResult, one: Repetition) -> None:
    """Run ``one(rep, sample)`` ``plan.reps`` times; redo a noisy one; merge the samples."""
    for rep in range(plan.reps):
        for attempt in range(plan.retries + 1):
            plan.progress(f"{result.name}: repetition {rep + 1}/{plan.reps}")
            sample = ScenarioResult(result.name, result.title)
            with NoiseMonitor() as noise:
                one(rep, sample)
            if noise.foreign_cores <= plan.max_noise or attempt == plan.retries:
                break
            plan.progress(f"  other processes took {noise.foreign_cores:.2f} cores: again")
        sample.add(NOISE, "cores", noise.foreign_cores)
        if noise.foreign_cores > plan.max_noise:
            result.note(
                f"repetition {rep + 1} kept despite other processes taking "
                f"{noise.foreign_cores:.2f} cores"
            )
        for key, figure in sample.figures.items():
            for value in figure.values:
                result.add(key, figure.unit, value)


def rotated(items: Sequence[T], rep: int) -> list[T]:
    shift = rep % len(items)
    return [*items[shift:], *items[:shift]]


# ---------------------------------------------------------------- blob GETs


def warm_blob(lab: Lab, plan: Plan) -> ScenarioResult:
    blob, repo = lab.content.big, lab.content.repo
    result = ScenarioResult("warm-blob", f"Warm blob GET, {_size(blob.size)}")
    urls = {
        CACHE: blob_url(lab.cache, repo, blob.digest),
        PROXY: blob_url(lab.proxy, repo, blob.digest),
        NGINX: f"{lab.nginx.url}/{blob.path.name}",
        UPSTREAM: blob_url(lab.upstream, repo, blob.digest),
    }
    # Not a target: what serving HTTPS itself costs (no sendfile through TLS).
    tls = lab.tls_cache()
    if tls is not None:
        urls[TLS_CACHE] = blob_url(tls, repo, blob.digest)
    else:
        result.note("no openssl command: the HTTPS figure is left out")
    # Real clients read less at a time than the 1 MiB reader: 32 KiB (Go's io.Copy) and
    # curl's default buffer. Each is measured against every plain-HTTP contender.
    readers = [MIB_READS]
    for reader, missing in lab.readers.available().items():
        if reader == MIB_READS:
            continue
        if missing is None:
            readers.append(reader)
        else:
            result.note(f"{reader}: left out ({missing})")
    plan.progress("warm-blob: filling the proxies")
    for who, server in ((CACHE, lab.cache), (PROXY, lab.proxy), (TLS_CACHE, tls)):
        if server is not None:
            fetch(urls[who], blob.size)
            await_stored(server, blob)

    servers = {CACHE: lab.cache, PROXY: lab.proxy, NGINX: lab.nginx, UPSTREAM: lab.upstream}
    if tls is not None:
        servers[TLS_CACHE] = tls
    result.note(f"every contender alike: {placement.choose().describe()} (placement.py)")

    def warm_rate(who: str, reader: str) -> tuple[float, float]:
        """GB/s (median) and the server's CPU ms per GiB (all the GETs)."""
        # A warm 1 GiB GET lasts 0.2-0.5 s, short enough for one scheduling hiccup to
        # halve it: the median of a few GETs, with server and reader on their own core.
        # The server's CPU per GiB is steadier than its rate on a busy host (the time
        # other guests take from it is not counted).
        with placement.separate_cores(servers[who].pid), CpuMeter([servers[who].pid]) as cpu:
            rates = [
                fetch(urls[who], blob.size, lab.readers, reader).rate for _ in range(WARM_GETS)
            ]
        return statistics.median(rates) / GB, cpu.seconds * 1e3 / (WARM_GETS * blob.size / GIB)

    def one(rep: int, out: ScenarioResult) -> None:
        for reader in readers:
            contenders = [w for w in urls if reader == MIB_READS or w != TLS_CACHE]
            rates: dict[str, float] = {}
            cpu: dict[str, float] = {}
            for who in rotated(contenders, rep):
                if who == CACHE:
                    with RssMonitor(lab.cache.pid) as rss:
                        rates[who], cpu[who] = warm_rate(who, reader)
                    out.add(RSS, "MB", rss.peak_mb)
                else:
                    rates[who], cpu[who] = warm_rate(who, reader)
            suffix = "" if reader == MIB_READS else f", {reader}"
            for who in contenders:
                out.add(f"{who}{suffix}", "GB/s", rates[who])
            for who in (CACHE, NGINX):
                out.add(f"{who} server CPU per GiB{suffix}", "ms", cpu[who])
            out.add(f"vs nginx{suffix}", "x", rates[CACHE] / rates[NGINX])
            if cpu[NGINX] > 0:  # a small blob (--quick) may take less than a clock tick
                out.add(f"server CPU per GiB vs nginx{suffix}", "x", cpu[CACHE] / cpu[NGINX])
            out.add(f"vs {PROXY}{suffix}", "x", rates[CACHE] / rates[PROXY])
            if TLS_CACHE in rates:
                out.add("HTTPS vs plain HTTP", "x", rates[TLS_CACHE] / rates[CACHE])

    repeat(plan, result, one)
    return result


def cold_blob(lab: Lab, plan: Plan) -> ScenarioResult:
    blob, repo = lab.content.big, lab.content.repo
    result = ScenarioResult("cold-blob", f"Cold blob GET, {_size(blob.size)}")
    log = UpstreamLog(lab.upstream.access_log)
    if plan.drop_caches:
        result.note("page cache dropped before every cold GET (upstream reads its disk)")
    # The cache's clients read the file being filled, so the data disk's write speed
    # bounds a cold GET; the same GET with the data directory on tmpfs shows the rest.
    tmpfs = tmpfs_with_room(3 * blob.size)
    contenders = [CACHE, PROXY, UPSTREAM] + ([TMPFS_CACHE] if tmpfs else [])
    # Every cold GET writes the blob into fresh page cache. Where freed memory goes
    # back to the host after a while, that costs far more than the copy itself:
    # "after a pause" vs "right after another write" shows how much.
    for name, where in (("data disk", lab.workdir), ("tmpfs", tmpfs)):
        if where is not None:
            write_speed(where, blob.size)  # whatever state memory is in, recycle it
            recycled = write_speed(where, blob.size)
            result.add(f"{name}: buffered write, recycled memory", "GB/s", recycled)
            if plan.memory_pause:
                paused = write_speed(where, blob.size, pause=plan.memory_pause)
                label = f"{name}: buffered write after {plan.memory_pause:.0f} s of quiet"
                result.add(label, "GB/s", paused)

    def one(rep: int, out: ScenarioResult) -> None:
        rates: dict[str, float] = {}
        for who in rotated(contenders, rep):
            drop_caches(plan.drop_caches)
            if who == UPSTREAM:
                rates[who] = fetch(blob_url(lab.upstream, repo, blob.digest), blob.size).rate / GB
                continue
            cold = _cold_get(lab, who, blob, log, under=tmpfs if who == TMPFS_CACHE else None)
            rates[who] = cold.transfer.rate / GB
            out.add(f"{who} upstream bytes", "x blob", cold.upstream_bytes / blob.size)
            out.add(f"{who} time to first byte", "ms", cold.transfer.ttfb * 1e3)
            cpu = cold.monitor.cpu_seconds * (1 << 30) / blob.size
            out.add(f"{who} CPU per GiB", "s", cpu)
            if who == CACHE:
                out.add(RSS, "MB", cold.monitor.peak_mb)
        for who in contenders:
            out.add(who, "GB/s", rates[who])
        out.add(f"vs {PROXY}", "x", rates[CACHE] / rates[PROXY])
        out.add(f"vs {UPSTREAM}", "x", rates[CACHE] / rates[UPSTREAM])

    repeat(plan, result, one)
    return result


@dataclass(frozen=True, slots=True)
class ColdGet:
    transfer: Transfer
    upstream_bytes: int
    monitor: RssMonitor  # the server's memory and CPU during the GET (and its storing)


def _cold_get(
    lab: Lab, who: str, blob: Blob, log: UpstreamLog, *, under: Path | None = None
) -> ColdGet:
    """One GET from a fresh proxy, and what it cost upstream."""
    fresh = lab.fresh_proxy() if who == PROXY else lab.fresh_cache(under=under)
    with fresh as server:
        mark = log.mark()
        url = blob_url(server, lab.content.repo, blob.digest)
        with RssMonitor(server.pid) as monitor:
            got = fetch(url, blob.size)
            await_stored(server, blob)  # distribution: its second fetch, into storage
        traffic = log.settled_traffic(mark, blob.digest)
    return ColdGet(got, traffic.bytes, monitor)


def herd(lab: Lab, plan: Plan) -> ScenarioResult:
    blob, n = lab.content.herd, plan.herd_clients
    title = f"Herd: {n} concurrent cold GETs of one {_size(blob.size)} blob"
    result = ScenarioResult("herd", title)
    log = UpstreamLog(lab.upstream.access_log)
    nginx_url = f"{lab.nginx.url}/{blob.path.name}"
    limit = f"{NGINX} {n} clients (delivery limit)"

    def one(rep: int, out: ScenarioResult) -> None:
        # What delivering n copies costs here at all: nginx, file in the page cache.
        nginx_wall = concurrent_gets(nginx_url, blob.size, n)
        out.add(limit, "s", nginx_wall)
        for who in rotated([CACHE, PROXY], rep):
            drop_caches(plan.drop_caches)
            single = _cold_get(lab, who, blob, log)
            drop_caches(plan.drop_caches)
            wall, fetched, herd_monitor = _herd_get(lab, who, blob, log, n)
            out.add(f"{who} single cold GET", "s", single.transfer.seconds)
            out.add(f"{who} {n} clients", "s", wall)
            out.add(f"{who} wall vs single", "x", wall / single.transfer.seconds)
            out.add(f"{who} upstream bytes", "x blob", fetched / blob.size)
            out.add(f"{who} delivered", "GB/s", n * blob.size / wall / GB)
            out.add(f"{who} wall vs nginx {n} clients", "x", wall / nginx_wall)
            out.add(f"{who} CPU, {n} clients", "s", herd_monitor.cpu_seconds)
            if who == CACHE:
                out.add(f"{RSS}, single GET", "MB", single.monitor.peak_mb)
                out.add(f"{RSS}, {n} clients", "MB", herd_monitor.peak_mb)
                out.add(RSS, "MB", max(single.monitor.peak_mb, herd_monitor.peak_mb))

    repeat(plan, result, one)
    return result


def _herd_get(
    lab: Lab, who: str, blob: Blob, log: UpstreamLog, clients: int
) -> tuple[float, int, RssMonitor]:
    """``clients`` simultaneous GETs from a fresh proxy: (wall s, upstream bytes, monitor)."""
    fresh = lab.fresh_cache() if who == CACHE else lab.fresh_proxy()
    with fresh as server:
        url = blob_url(server, lab.content.repo, blob.digest)
        mark = log.mark()
        with RssMonitor(server.pid) as monitor:
            wall = concurrent_gets(url, blob.size, clients)
            await_stored(server, blob)
        traffic = log.settled_traffic(mark, blob.digest)
    return wall, traffic.bytes, monitor


# ---------------------------------------------------------------- manifests


def manifest_tag(lab: Lab, plan: Plan) -> ScenarioResult:
    title = "Manifest by tag (within the TTL), 32 connections"
    return _manifests(lab, plan, ScenarioResult("manifest-tag", title), lab.content.image.tag)


def manifest_digest(lab: Lab, plan: Plan) -> ScenarioResult:
    title = "Manifest by digest, 32 connections"
    return _manifests(lab, plan, ScenarioResult("manifest-digest", title), lab.content.image.digest)


def _manifest_url(server: Server, lab: Lab, reference: str) -> str:
    return f"{server.url}/v2/{lab.content.repo}/manifests/{reference}"


def _check_manifest(url: str, digest: str) -> None:
    reply = request("GET", url, {"Accept": MANIFEST_ACCEPT})
    if reply.status != 200 or reply.headers.get("docker-content-digest") != digest:
        raise ScenarioError(f"GET {url}: HTTP {reply.status}, not manifest {digest}")


def _load(url: str, plan: Plan, who: str) -> LoadResult:
    headers = {"Accept": MANIFEST_ACCEPT}
    return run_load(url, headers, plan.load_seconds, plan.load_tool).check(f"{who} {url}")


def _manifests(lab: Lab, plan: Plan, result: ScenarioResult, reference: str) -> ScenarioResult:
    servers: dict[str, Server] = {CACHE: lab.cache, PROXY: lab.proxy}
    urls = {who: _manifest_url(server, lab, reference) for who, server in servers.items()}
    for url in urls.values():
        _check_manifest(url, lab.content.image.digest)  # also fills both proxies

    def one(rep: int, out: ScenarioResult) -> None:
        runs: dict[str, LoadResult] = {}
        for who in rotated(list(urls), rep):
            if who == CACHE:
                with RssMonitor(lab.cache.pid) as rss:
                    runs[who] = _load(urls[who], plan, who)
                out.add(RSS, "MB", rss.peak_mb)
                out.add(f"{CACHE} CPU", "cores", rss.cores)
                out.add("load generator CPU", "cores", runs[who].cores)
            else:
                runs[who] = _load(urls[who], plan, who)
        for who, run in runs.items():
            out.add(f"{who} requests/s", "req/s", run.rps)
            out.add(f"{who} p50", "ms", run.p50_ms)
            out.add(f"{who} p99", "ms", run.p99_ms)
        out.add(f"vs {PROXY}", "x", runs[CACHE].rps / runs[PROXY].rps)
        result.note(f"load generator: {runs[CACHE].tool}")

    repeat(plan, result, one)
    return result


def workers(lab: Lab, plan: Plan) -> ScenarioResult:
    result = ScenarioResult("workers", "Tag manifests: --workers 2 vs 1, 32 connections")
    reference = lab.content.image.tag
    with lab.fresh_cache(workers=2) as two:
        servers: dict[str, Cache] = {"1 worker": lab.cache, "2 workers": two}
        urls = {who: _manifest_url(server, lab, reference) for who, server in servers.items()}
        for url in urls.values():
            for _ in range(8):  # so that every worker has answered the tag once
                _check_manifest(url, lab.content.image.digest)

        def one(rep: int, out: ScenarioResult) -> None:
            runs: dict[str, LoadResult] = {}
            peaks: list[float] = []
            pss_peaks: list[float] = []
            for who in rotated(list(urls), rep):
                mark = log_mark(servers[who].log_path)
                with RssMonitor(servers[who].pid, pss=True) as rss:
                    runs[who] = _load(urls[who], plan, who)
                peaks.append(rss.peak_mb)
                pss_peaks.append(rss.peak_pss_mb)
                out.add(f"{RSS}, {who}", "MB", rss.peak_mb)
                # Forked workers share their parent's pages: PSS splits them fairly.
                out.add(f"{PSS}, {who}", "MB", rss.peak_pss_mb)
                out.add(f"{CACHE} CPU, {who}", "cores", rss.cores)
                out.add(f"load generator CPU, {who}", "cores", runs[who].cores)
                shares = requests_per_process(servers[who].log_path, mark)
                if who == "2 workers" and sum(shares) > 0:
                    busiest = 100 * max(shares) / sum(shares)
                    out.add("busiest worker's share of requests", "%", busiest)
            for who, run in runs.items():
                out.add(f"{who} requests/s", "req/s", run.rps)
                out.add(f"{who} p99", "ms", run.p99_ms)
            out.add("2 vs 1 workers", "x", runs["2 workers"].rps / runs["1 worker"].rps)
            out.add(RSS, "MB", max(peaks))
            out.add(PSS, "MB", max(pss_peaks))
            result.note(f"load generator: {runs['1 worker'].tool}")

        repeat(plan, result, one)
    return result


# ---------------------------------------------------------------- whole image


PULL_CLIENTS = {
    "auto": (SKOPEO_DIR, SKOPEO_OCI, CTR_FETCH, CTR_PULL),
    "skopeo": (SKOPEO_DIR, SKOPEO_OCI),
    "ctr": (CTR_FETCH, CTR_PULL),
    "builtin": (BUILTIN,),
}


# Warm pulls per contender, client and repetition, interleaved: a pull is mostly the
# client's own work (hashing, writing, unpacking) and moves with the host; the median of
# three pairs sits much closer to the proxies' real difference than one pair.
PULL_PAIRS = 3


def image_pull(lab: Lab, plan: Plan) -> ScenarioResult:
    image, repo = lab.content.image, lab.content.repo
    # The client writes what it pulls: on tmpfs, so that the data disk's erratic write
    # speed (see cold-blob) does not decide between the contenders.
    tmpfs = tmpfs_with_room(6 * image.size)
    work = lab.scratch(tmpfs) / "pulls"
    clients: list[str] = []
    left_out: list[str] = []
    for client in PULL_CLIENTS[plan.pull_client]:
        why = pullers.missing(client, work)
        if why is None:
            clients.append(client)
        elif plan.pull_client == "auto":
            left_out.append(f"{client}: left out ({why})")
        else:
            raise ScenarioError(f"{client}: {why}")
    clients = clients or [BUILTIN]
    size = f"{len(image.layers)}-layer image ({_size(image.size)})"
    result = ScenarioResult("image-pull", f"Warm pull of a {size}: {', '.join(clients)}")
    for line in left_out:
        result.note(line)
    servers: dict[str, Server] = {CACHE: lab.cache, PROXY: lab.proxy}
    result.note(f"the clients write the image to {'tmpfs' if tmpfs else 'the data disk'}")

    def pull(who: str, client: str) -> float:
        return pullers.pull(client, servers[who].url, repo, image.tag, work=work / who)

    for who, server in servers.items():
        pull(who, BUILTIN)  # fills the proxy
        for blob in (image.config, *image.layers):
            await_stored(server, blob)

    pairs = 1 if plan.quick else PULL_PAIRS

    def one(rep: int, out: ScenarioResult) -> None:
        for client in clients:
            took: dict[str, list[float]] = {who: [] for who in servers}
            for pair in range(pairs):
                for who in rotated(list(servers), rep + pair):
                    with RssMonitor(servers[who].pid) as monitor:
                        took[who].append(pull(who, client))
                    if who == CACHE:
                        out.add(RSS, "MB", monitor.peak_mb)
                    # What the server spent of the pull's time: when both are a small part
                    # of it, the client (hashing, unpacking) decides the pull, not the proxy.
                    out.add(f"{who} CPU, {client}", "s", monitor.cpu_seconds)
            median = {who: statistics.median(seconds) for who, seconds in took.items()}
            for who, seconds in median.items():
                out.add(f"{who} pull, {client}", "s", seconds)
            out.add(f"speed-up vs {PROXY}, {client}", "x", median[PROXY] / median[CACHE])

    repeat(plan, result, one)
    return result


# ---------------------------------------------------------------- WAN

WAN_TIMEOUT = 40 * 60.0  # seconds for one profile's child process, all repetitions


def wan_far(lab: Lab, plan: Plan) -> ScenarioResult:
    return _wan(lab, plan, "far")


def wan_near(lab: Lab, plan: Plan) -> ScenarioResult:
    return _wan(lab, plan, "near")


def _wan(lab: Lab, plan: Plan, profile: str) -> ScenarioResult:
    """Run ``benchmarks.wan`` for ``profile`` in a private network namespace (its own
    child process: the namespace dies with it) and take its figures."""
    from . import wan
    from .netns import netns_id

    name = f"wan-{profile}"
    why = wan.unavailable(lab.workdir)
    if why is not None:
        raise ScenarioError(why)
    where = lab.scratch(None) / name
    where.mkdir(parents=True, exist_ok=True)
    out = where / "result.json"
    job = wan.Job(
        profile=profile,
        reps=plan.wan_reps,
        quick=plan.quick,
        max_noise=plan.max_noise,
        retries=0 if plan.quick else min(plan.retries, 1),
        workdir=str(where / "work"),
        out=str(out),
        outer_netns=netns_id(),
    )
    plan.progress(f"{name}: {plan.wan_reps} repetition(s) in a private network namespace")
    done = subprocess.run(
        wan.command(job.save(where / "job.json")),
        env=wan.child_env(),
        stdin=subprocess.DEVNULL,
        timeout=WAN_TIMEOUT,
        check=False,
    )
    if done.returncode != 0 or not out.is_file():
        raise ScenarioError(f"{name}: the namespace's run exited with {done.returncode}")
    result = ScenarioResult.from_json(name, json.loads(out.read_text()))
    if result.error:
        raise ScenarioError(result.error)
    return result


# ---------------------------------------------------------------- cluster, dashboard


def cluster(lab: Lab, plan: Plan) -> ScenarioResult:
    """Replicas on one PostgreSQL index vs one node vs distribution's replicas (cluster.py)."""
    from .cluster import cluster as run

    return run(lab, plan)


def dashboard(lab: Lab, plan: Plan) -> ScenarioResult:
    """Manifest load with the dashboard's counting on vs off (dashboard.py)."""
    from .dashboard import dashboard as run

    return run(lab, plan)


# ---------------------------------------------------------------- CLI start-up

CLI_COMMANDS = {
    "registry-cache --help": ["--help"],
    "registry-cache registries": ["registries", "--domain", "cache.internal"],
}
CLI_RUNS = 5  # per command and repetition; the median counts


def cli_startup(lab: Lab, plan: Plan) -> ScenarioResult:
    """Wall time of CLI commands a person types first (issue 13 item 17: lazy imports)."""
    result = ScenarioResult("cli-startup", "CLI start-up: wall time of one command")
    argv0 = cli_command()
    result.note(f"run as {' '.join(argv0)}, from an empty directory, no REGISTRY_* variables")
    cwd = lab.scratch(None) / "cli-cwd"
    cwd.mkdir(parents=True, exist_ok=True)

    def one(rep: int, out: ScenarioResult) -> None:
        for label, args in rotated(list(CLI_COMMANDS.items()), rep):
            times = [_timed([*argv0, *args], cwd) for _ in range(CLI_RUNS)]
            out.add(label, "s", statistics.median(times))

    repeat(plan, result, one)
    return result


def cli_command() -> list[str]:
    """The console script beside this interpreter (what ``pip install`` made), else
    ``python -m registry_cache``."""
    script = Path(sys.executable).parent / "registry-cache"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "registry_cache"]


def _timed(argv: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        argv, capture_output=True, cwd=cwd, env=clean_env(), timeout=60, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise ScenarioError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr[-300:]!r}")
    return seconds


def _size(size: int) -> str:
    mib = size / (1 << 20)
    return f"{mib / 1024:.0f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


ScenarioFn = Callable[[Lab, Plan], ScenarioResult]
SCENARIOS: dict[str, ScenarioFn] = {
    "warm-blob": warm_blob,
    "cold-blob": cold_blob,
    "herd": herd,
    "manifest-tag": manifest_tag,
    "manifest-digest": manifest_digest,
    "image-pull": image_pull,
    "workers": workers,
    "cli-startup": cli_startup,
    "wan-far": wan_far,
    "wan-near": wan_near,
    "cluster": cluster,
    "dashboard": dashboard,
}
