"""WAN scenarios: the upstream behind a shaped link, clients next to the cache.

Run by the suite as ``unshare -n python -m benchmarks.wan JOB.json`` (scenarios
``wan-far`` and ``wan-near``): everything below happens inside that private network
namespace (netns.py), which disappears with the process. The upstream
(docker-registry) listens on 127.0.0.2, behind the ``wanlink`` forwarder; the cache,
distribution's proxy and every client on 127.0.0.1. Per repetition:

- **cold pull**: ``skopeo copy … oci:`` (parallel layers) of a multi-layer image,
  straight from the upstream ("direct") and through a fresh registry-cache, nine of
  each interleaved (the goal: the median of every kept repetition's pulls), then
  through a fresh distribution proxy; then the same pull warm. Upstream bytes from
  its access log; beside each pull, the cores the machine kept busy, the link
  forwarder's and the cache's CPU time, the packets the link's queue dropped, and,
  from the upstream's own log for both alike (responses.py), the layers' span on the
  link, the last layer's time alone on it and the pull's time outside that span.
- **rollout**: K clients (8) pulling the image at once: direct, through a fresh
  distribution proxy, and through a fresh cache cold and then warm; beside the cache's
  two, the machine's busy cores and the CPU of the clients, the cache, the forwarder and
  the rest (on two cores, cold against warm is a question of core-seconds).
- **cold blob**: one GET of a big blob (32 KiB reads): time to first byte and total,
  direct, through a fresh cache and through a fresh proxy.
- **1% loss**: a smaller blob with 1% of the packets dropped each way, direct and
  through a fresh cache, against the same GET without loss.
- **stall**: the link drops everything for 3 s half-way through the big blob.
- **dead connection**: half-way through the big blob the cache's upstream connection
  is cut for good (its packets dropped, new connections pass): the cache, with a 5 s
  upstream read timeout, resumes with a Range request on a new connection. A client
  with no read timeout of its own (containerd has none) would wait forever: no direct
  figure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import registry_cache

from . import content as contentmod
from . import hermetic, pullers
from .actions import ScenarioError, await_stored, tmpfs_with_room
from .content import Blob, Image
from .measure import CpuMeter, RssMonitor, UpstreamLog
from .native import build, compiler
from .netns import FAR, PROFILES, Link, Profile, in_private_netns, route_far
from .readers import GO_READS, Readers
from .responses import ResponseLog, split
from .results import ScenarioResult
from .scenarios import CACHE, PROXY, Plan, repeat, rotated
from .servers import Cache, Registry, Server, clean_env, find_binary, stop_all

DIRECT = "direct"
ROLLOUT_CLIENTS = 8
STALL_SECONDS = 3.0
LOSS = 0.01
# Cold pulls direct and through the cache per repetition, interleaved. At 10 ms RTT
# one pull is bimodal, direct and through the cache alike: ~1.0 s, or 1.2-1.3 s when a
# loss late in the biggest layer leaves its connection alone on the link, recovering
# (about a third of the pulls here). A median of three landed in either mode; of nine,
# and pooled over the repetitions for the goal, it stays put.
COLD_PAIRS = 9
DEAD_READ_TIMEOUT = 5.0  # the cache's upstream read timeout in the dead-connection test
MIB = 1 << 20
S = TypeVar("S", bound=Server)


@dataclass(frozen=True, slots=True)
class WanSizes:
    image_layers: tuple[int, ...]
    blob: int  # cold blob, stall, dead connection
    loss_blob: int
    stall: float = STALL_SECONDS
    read_timeout: float = DEAD_READ_TIMEOUT
    cold_pairs: int = COLD_PAIRS


FULL = WanSizes(tuple(s * MIB for s in (40, 24, 16, 8, 4, 2)), 48 * MIB, 16 * MIB)
QUICK = WanSizes(tuple(s * MIB for s in (4, 2, 1)), 8 * MIB, 2 * MIB, 1.0, 2.0, 1)


@dataclass(frozen=True, slots=True)
class Job:
    profile: str
    reps: int
    quick: bool
    max_noise: float
    retries: int
    workdir: str
    out: str
    outer_netns: int  # the suite's network namespace: the child must be elsewhere
    clients: int = ROLLOUT_CLIENTS

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self)))
        return path

    @classmethod
    def load(cls, path: Path) -> Job:
        return cls(**json.loads(path.read_text()))


@dataclass(frozen=True, slots=True)
class WanContent:
    repo: str
    image: Image
    blob: Blob
    loss_blob: Blob


class WanLab:
    """The upstream on the far side of ``link``; fresh caches and proxies on demand."""

    def __init__(self, workdir: Path, link: Link, progress: Callable[[str], None]) -> None:
        self.workdir = workdir
        self.link = link
        self.progress = progress
        self.upstream = Registry(workdir / "upstream", host=FAR)
        self.readers = Readers(workdir / "native")
        self._serial = 0
        self._content: WanContent | None = None
        tmpfs = tmpfs_with_room(2 << 30)
        # What the clients write: on tmpfs when there is room, removed by close().
        self._scratch = tmpfs / f"registry-cache-wan-{os.getpid()}" if tmpfs else None
        self.pulls = (self._scratch or workdir) / "pulls"

    @property
    def content(self) -> WanContent:
        if self._content is None:
            raise RuntimeError("WAN lab not started")
        return self._content

    def start(self, sizes: WanSizes) -> WanLab:
        # Content goes up over an unshaped link: pushing is setup, not a measurement.
        self.link.start(shaped=False)
        self.upstream.start()
        where = self.workdir / "content"
        image = contentmod.build_image(where, "wan-image", sizes.image_layers)
        blob = contentmod.write_layer(where, "wan-blob", sizes.blob)
        loss_blob = contentmod.write_layer(where, "wan-loss-blob", sizes.loss_blob)
        repo = contentmod.REPO
        for item in (image.config, *image.layers, blob, loss_blob):
            contentmod.push_blob(self.upstream.url, repo, item)
        media = contentmod.MANIFEST_TYPE
        contentmod.push_manifest(self.upstream.url, repo, image.tag, image.manifest, media)
        self._content = WanContent(repo, image, blob, loss_blob)
        self.link.start(shaped=True)
        return self

    @contextlib.contextmanager
    def fresh(self, who: str, upstream_settings: dict[str, Any] | None = None) -> Iterator[Server]:
        """A new registry-cache or distribution proxy over the far upstream, removed after."""
        self._serial += 1
        where = self.workdir / f"{who}-{self._serial}"
        server: Server
        if who == CACHE:
            server = Cache(where, self.upstream.url, upstream_settings=upstream_settings)
        else:
            server = Registry(where, proxy_remote=self.upstream.url)
        server.start()
        try:
            yield server
        finally:
            server.stop()
            shutil.rmtree(where, ignore_errors=True)

    def url_of(self, who: str, server: Server | None) -> str:
        return self.upstream.url if who == DIRECT or server is None else server.url

    def pull(self, who: str, server: Server | None, name: str) -> float:
        url = self.url_of(who, server)
        image, repo = self.content.image, self.content.repo
        return pullers.pull(pullers.SKOPEO_OCI, url, repo, image.tag, work=self.pulls / name)

    def rollout(self, who: str, server: Server | None, clients: int) -> float:
        """``clients`` pulls released together; seconds from the first start to the last end."""
        gate = threading.Barrier(clients)
        spans: list[tuple[float, float]] = []
        failures: list[str] = []

        def client(i: int) -> None:
            gate.wait()
            started = time.perf_counter()
            try:
                self.pull(who, server, f"rollout-{who}-{i}")
            except Exception as exc:
                failures.append(str(exc))
            spans.append((started, time.perf_counter()))

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=900)
        if failures or len(spans) != clients:
            raise ScenarioError(f"rollout through {who}: {failures[:1] or 'did not finish'}")
        return max(end for _, end in spans) - min(start for start, _ in spans)

    def get(self, who: str, server: Server | None, blob: Blob) -> tuple[float, float]:
        """One GET of ``blob`` (32 KiB reads) on a new connection: (seconds, seconds to the
        first byte), both counted from the client's connect (direct: one round trip)."""
        base = self.url_of(who, server)
        got = self.readers.get(GO_READS, blob_url_at(base, self.content.repo, blob.digest))
        if not got.complete or got.bytes != blob.size:
            raise ScenarioError(f"GET {blob.digest} via {who}: HTTP {got.status}, {got.bytes} B")
        return got.connect + got.seconds, got.connect + got.ttfb

    def image_bytes(self, mark: int) -> int:
        log = UpstreamLog(self.upstream.access_log)
        image = self.content.image
        return sum(log.settled_traffic(mark, b.digest).bytes for b in (image.config, *image.layers))

    def stored(self, server: Server, blobs: Sequence[Blob]) -> None:
        for blob in blobs:
            await_stored(server, blob)

    def close(self) -> None:
        self.upstream.stop()
        self.link.stop()
        shutil.rmtree(self._scratch or self.pulls, ignore_errors=True)


def blob_url_at(base: str, repo: str, digest: str) -> str:
    return f"{base}/v2/{repo}/blobs/{digest}"


def measure(
    lab: WanLab, profile: Profile, plan: Plan, clients: int, sizes: WanSizes
) -> ScenarioResult:
    wan = lab.content
    image_blobs = (wan.image.config, *wan.image.layers)
    result = ScenarioResult(
        f"wan-{profile.name}",
        f"WAN: upstream behind a shaped link ({profile.describe()}, MTU 9000), "
        f"clients next to the cache; {len(wan.image.layers)}-layer image "
        f"({wan.image.size / MIB:.0f} MiB), skopeo oci:",
    )
    result.note(f"link queue {profile.queue_bytes >> 10} KiB (one bandwidth-delay product)")
    result.note(
        f"dead connection: the cache's upstream read timeout is {sizes.read_timeout:g} s; no "
        "direct figure: a client without a read timeout of its own (containerd has none) "
        "waits forever"
    )
    size = wan.image.size
    wire = size * 8 / (profile.rate_mbit * 1e6)  # the image's bytes at the link's rate
    result.note(f"the image takes {wire:.2f} s on the link at its rate (no slow start, no RTT)")

    def one(rep: int, out: ScenarioResult) -> None:
        lab.progress(f"cold pulls, repetition {rep + 1}")
        took = cold_pulls(lab, out, rep, sizes.cold_pairs)
        with lab.fresh(PROXY) as server:
            mark = UpstreamLog(lab.upstream.access_log).mark()
            took[PROXY] = [lab.pull(PROXY, server, f"cold-{PROXY}")]
            lab.stored(server, image_blobs)  # its second fetch of each blob
            out.add(f"{PROXY} cold pull upstream bytes", "x image", lab.image_bytes(mark) / size)
            out.add(f"{PROXY} warm pull", "s", lab.pull(PROXY, server, f"warm-{PROXY}"))
        median = {who: statistics.median(seconds) for who, seconds in took.items()}
        for who, seconds in median.items():
            out.add(f"{who} cold pull", "s", seconds)
        out.add(f"{CACHE} cold pull vs direct", "x", median[CACHE] / median[DIRECT])
        out.add(f"{PROXY} cold pull vs direct", "x", median[PROXY] / median[DIRECT])

        lab.progress(f"rollout of {clients} clients, repetition {rep + 1}")
        for who in rotated([DIRECT, CACHE, PROXY], rep):
            mark = UpstreamLog(lab.upstream.access_log).mark()
            if who == DIRECT:
                wall = lab.rollout(who, None, clients)
                out.add(f"rollout: {DIRECT}", "s", wall)
                out.add(
                    f"rollout: {DIRECT} upstream bytes", "x image", lab.image_bytes(mark) / size
                )
                continue
            with lab.fresh(who) as server:
                spent_cold = metered_rollout(lab, who, server, clients)
                cold = spent_cold.wall
                lab.stored(server, image_blobs)
                out.add(f"rollout: {who} cold", "s", cold)
                out.add(f"rollout: {who} upstream bytes", "x image", lab.image_bytes(mark) / size)
                if who == CACHE:
                    spent_warm = metered_rollout(lab, who, server, clients)
                    warm = spent_warm.wall
                    out.add(f"rollout: {CACHE} warm", "s", warm)
                    spent_cold.report(out, "cold")
                    spent_warm.report(out, "warm")
                    out.add(f"rollout: {CACHE} cold vs warm", "x", cold / warm)
                    # What K clients cost over one: single flight streams one fetch to all.
                    out.add(f"rollout: {CACHE} cold vs one cold pull", "x", cold / median[CACHE])
                    out.add(f"rollout: {CACHE} cold vs the link's time", "x", cold / wire)

        lab.progress(f"cold blob, loss, stall, dead connection; repetition {rep + 1}")
        clean: dict[str, float] = {}
        first_byte: dict[str, float] = {}
        for who in rotated([DIRECT, CACHE, PROXY], rep):
            with _maybe_fresh(lab, who) as server:
                clean[who], first_byte[who] = lab.get(who, server, wan.blob)
        for who in (DIRECT, CACHE, PROXY):
            out.add(f"cold blob: {who}", "s", clean[who])
            out.add(f"cold blob time to first byte: {who}", "ms", first_byte[who] * 1e3)
        for who in (CACHE, PROXY):
            ratio = first_byte[who] / first_byte[DIRECT]
            out.add(f"cold blob time to first byte: {who} vs direct", "x", ratio)
        out.add(f"cold blob: {CACHE} vs direct", "x", clean[CACHE] / clean[DIRECT])

        lossy: dict[str, float] = {}
        for who in rotated([DIRECT, CACHE], rep):
            with _maybe_fresh(lab, who) as server:
                base, _ = lab.get(who, server, wan.loss_blob)
            with _maybe_fresh(lab, who) as server:
                lab.link.loss(LOSS)
                try:
                    lossy[who], _ = lab.get(who, server, wan.loss_blob)
                finally:
                    lab.link.loss(0.0)
            out.add(f"1% loss: {who}", "s", lossy[who])
            out.add(f"1% loss: {who}, extra vs no loss", "s", lossy[who] - base)
        out.add(f"1% loss: {CACHE} vs direct", "x", lossy[CACHE] / lossy[DIRECT])

        half, stall = wan.blob.size // 2, sizes.stall
        for who in rotated([DIRECT, CACHE], rep):
            with _maybe_fresh(lab, who) as server:
                lab.link.stall(stall, half)
                try:
                    stalled, _ = lab.get(who, server, wan.blob)
                finally:
                    lab.link.reset()
            out.add(f"stall {stall:g} s: {who}", "s", stalled)
            out.add(
                f"stall {stall:g} s: {who}, extra beyond the stall",
                "s",
                stalled - clean[who] - stall,
            )

        timeout = {"read_timeout": f"{sizes.read_timeout:g}s"}
        with lab.fresh(CACHE, upstream_settings=timeout) as server:
            lab.link.kill(half)
            try:
                cut, _ = lab.get(CACHE, server, wan.blob)
                killed = lab.link.stats().killed
            finally:
                lab.link.reset()
            resumes = server.log_path.read_text(errors="replace").count("resuming with Range")
        if killed < 1 or resumes < 1:
            raise ScenarioError(f"dead connection: {killed} cut, {resumes} resumes in the log")
        out.add(f"dead connection: {CACHE}", "s", cut)
        extra = cut - clean[CACHE] - sizes.read_timeout
        out.add(f"dead connection: {CACHE}, extra beyond the read timeout", "s", extra)
        out.add(f"dead connection: {CACHE} resumes", "count", resumes)

    repeat(plan, result, one)
    # The goal's figure: every kept repetition's pulls together. One pull is bimodal
    # at 10 ms RTT (a loss late in the biggest layer leaves it alone on the link for
    # 0.2-0.4 s), direct and through the cache alike; a median of three per
    # repetition lands in either mode.
    each = {who: result.figures[f"{who} cold pull, each pull"].values for who in (DIRECT, CACHE)}
    pooled = statistics.median(each[CACHE]) / statistics.median(each[DIRECT])
    result.add(f"{CACHE} cold pull vs direct, every pull", "x", pooled)
    return result


def cold_pulls(lab: WanLab, out: ScenarioResult, rep: int, pairs: int) -> dict[str, list[float]]:
    """``pairs`` cold pulls direct and through a fresh cache, interleaved (one pair moves
    ±15 % at 10 ms RTT): seconds of each, and per pull the cores the whole machine kept
    busy, the link's queue drops, and the cache's own CPU time."""
    image = lab.content.image
    size = image.size
    layers = [layer.digest for layer in image.layers]
    took: dict[str, list[float]] = {DIRECT: [], CACHE: []}
    for pair in range(pairs):
        for who in rotated([DIRECT, CACHE], rep + pair):
            with _maybe_fresh(lab, who) as server:
                mark = UpstreamLog(lab.upstream.access_log).mark()
                responses = ResponseLog(lab.upstream.log_path)
                since = responses.mark()
                drops = lab.link.stats().dropped_queue
                with RssMonitor(lab.link.pid) as machine, CpuMeter(_pids(server)) as cpu:
                    seconds = lab.pull(who, server, f"cold-{who}")
                took[who].append(seconds)
                out.add(f"{who} cold pull, each pull", "s", seconds)
                # Where the pull's time went, from the upstream's side, alike for both.
                link = split(responses.blob_gets(since, layers))
                out.add(f"{who} cold pull: layers on the link", "s", link.layers)
                out.add(f"{who} cold pull: last layer alone on the link", "s", link.last_alone)
                outside = seconds - link.layers
                out.add(f"{who} cold pull: outside the layers' transfer", "s", outside)
                out.add(f"{who} cold pull: machine cores busy", "cores", machine.machine_cores)
                out.add(f"{who} cold pull: link forwarder CPU", "s", machine.cpu_seconds)
                dropped = lab.link.stats().dropped_queue - drops
                out.add(f"{who} cold pull: packets dropped at the link's queue", "count", dropped)
                if server is None:
                    continue
                out.add(f"{CACHE} cold pull: server CPU", "s", cpu.seconds)
                lab.stored(server, (image.config, *image.layers))
                bytes_up = lab.image_bytes(mark) / size
                out.add(f"{CACHE} cold pull upstream bytes", "x image", bytes_up)
                if pair == 0:
                    out.add(f"{CACHE} warm pull", "s", lab.pull(CACHE, server, f"warm-{CACHE}"))
    return took


@dataclass(frozen=True, slots=True)
class RolloutCpu:
    """A rollout's wall time and where the machine's CPU went meanwhile: on two cores,
    whether cold can come near warm is a question of core-seconds."""

    wall: float
    machine_cores: float  # average busy cores, the whole machine
    clients: float  # CPU seconds of the pulling processes (skopeo, waited for)
    server: float
    link: float  # the WAN forwarder, which a real deployment does not run

    @property
    def total(self) -> float:
        return self.machine_cores * self.wall

    def report(self, out: ScenarioResult, phase: str) -> None:
        name = f"rollout: {CACHE} {phase}"
        out.add(f"{name}: machine cores busy", "cores", self.machine_cores)
        out.add(f"{name}: clients' CPU", "s", self.clients)
        out.add(f"{name}: server CPU", "s", self.server)
        out.add(f"{name}: link forwarder CPU", "s", self.link)
        # The upstream registry, this process, the kernel's own threads.
        rest = max(0.0, self.total - self.clients - self.server - self.link)
        out.add(f"{name}: everything else's CPU", "s", rest)


def metered_rollout(lab: WanLab, who: str, server: Server | None, clients: int) -> RolloutCpu:
    before = os.times()
    with RssMonitor(lab.link.pid) as machine, CpuMeter(_pids(server)) as cpu:
        wall = lab.rollout(who, server, clients)
    after = os.times()
    waited = after.children_user + after.children_system
    waited -= before.children_user + before.children_system
    return RolloutCpu(wall, machine.machine_cores, waited, cpu.seconds, machine.cpu_seconds)


def _pids(server: Server | None) -> list[int]:
    return [] if server is None else [server.pid]


@contextlib.contextmanager
def _maybe_fresh(lab: WanLab, who: str) -> Iterator[Server | None]:
    if who == DIRECT:
        yield None
    else:
        with lab.fresh(who) as server:
            yield server


def run(job: Job) -> ScenarioResult:
    profile = PROFILES[job.profile]
    workdir = Path(job.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def progress(message: str) -> None:
        stamp = f"wan-{profile.name} {time.monotonic() - started:5.1f}s"
        print(f"  [{stamp}] {message}", file=sys.stderr, flush=True)

    route_far(job.outer_netns)
    link = Link(build("wanlink", workdir / "native"), workdir / "wanlink.log", profile)
    lab = WanLab(workdir, link, progress)
    try:
        progress("pushing content over an unshaped link")
        sizes = QUICK if job.quick else FULL
        lab.start(sizes)
        plan = Plan(reps=job.reps, max_noise=job.max_noise, retries=job.retries, progress=progress)
        return measure(lab, profile, plan, job.clients, sizes)
    finally:
        lab.close()
        stop_all()


def unavailable(workdir: Path) -> str | None:
    """None when the WAN scenarios can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (a private network namespace with a tun device)"
    for tool in ("unshare", "ip", "skopeo"):
        if find_binary(tool) is None:
            return f"{tool} is not installed"
    if compiler() is None:
        return "gcc is not installed (the link forwarder is C, built at run time)"
    if not Path("/dev/net/tun").exists():
        return "no /dev/net/tun"
    return hermetic.unavailable(workdir)


def command(job_file: Path) -> list[str]:
    """The child: this interpreter, in a new network namespace, running this module."""
    unshare = find_binary("unshare") or "unshare"
    return [unshare, "--net", "--", sys.executable, "-m", "benchmarks.wan", str(job_file)]


def child_env() -> dict[str, str]:
    """The suite's environment, importing this checkout's ``benchmarks`` and product."""
    env = clean_env()
    suite_root = Path(__file__).resolve().parents[1]
    product_src = Path(registry_cache.__file__).resolve().parents[1]
    env["PYTHONPATH"] = f"{suite_root}{os.pathsep}{product_src}"
    return env


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m benchmarks.wan JOB.json (the suite runs it)", file=sys.stderr)
        return 2
    job = Job.load(Path(argv[0]))
    if not in_private_netns(job.outer_netns):
        print("benchmarks.wan: only inside a new network namespace", file=sys.stderr)
        return 2
    try:
        result = run(job)
    except Exception as exc:  # reported to the suite as "not measured"
        result = ScenarioResult(f"wan-{job.profile}", f"wan-{job.profile}")
        result.error = f"{type(exc).__name__}: {exc}"
    Path(job.out).write_text(json.dumps(result.as_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
