"""The ``cluster`` scenario: three replicas on one PostgreSQL index behind nginx.

Contenders, each started fresh in every repetition (in rotated order), each behind
its own ``Balancer`` (nginx round robin, no buffering):

- ``registry-cache, 3 replicas``: a new database on the suite's own PostgreSQL 15,
  three caches with their own data directories, the same ``--index``, their own
  ``--advertise`` and one ``--cluster-secret-file``;
- ``registry-cache, 1 node``: one cache with its SQLite index (the single-node
  figure), behind the same kind of balancer with one backend;
- ``registry-cache, 3 replicas + bucket``: the same three replicas with a shared tier
  (``--storage``) on one SeaweedFS started for the scenario (a key prefix of its own
  in every repetition); only where its answers come from is measured (below);
- ``distribution-proxy, 3 replicas``: distribution's proxy run three times on ONE
  storage directory (its documentation's way to scale out is one shared bucket;
  each replica keeps its own cache state: whatever they race on shows here as
  failed GETs, error lines and bad stored copies).

The herd: ``herd_clients`` cold GETs of the herd blob released at once through the
balancer: wall time, upstream bytes (the upstream's access log), failed GETs, the
CPU of the contender's servers and its balancer; then one GET from every replica,
hashed: are the copies they stored correct?

Where a replica's answer comes from (the big blob, GET directly from a replica):
``cold fill`` from upstream on replica 0 first, then each of ``HIT_SOURCES`` in
order, measured against the single node's cold fill and local hit of the same
blob. A source is a name and a function that puts the blob where that source
serves it from and returns the replica to GET it from. With the bucket, a replica
that holds nothing reads a finished blob from the bucket (not from a peer): its
cold fill, ``hit from the bucket`` (replica 1, checked by its fill-source metric)
and its local hit are ``BUCKET_SOURCES``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .actions import ScenarioError, await_stored, blob_url, fetch, herd_gets
from .content import Blob
from .httpio import Transfer, body_digest
from .lab import Lab
from .measure import CpuMeter, UpstreamLog
from .postgres import Postgres, postgres_missing
from .results import GB, ScenarioResult
from .scenarios import CACHE, PROXY, WARM_GETS, Plan, _size, repeat, rotated
from .seaweed import BucketTier, SeaweedFS, weed_missing
from .servers import Balancer, Cache, ClusterMember, Registry, Server, find_binary

REPLICAS = 3
CLUSTER = f"{CACHE}, {REPLICAS} replicas"
SINGLE = f"{CACHE}, 1 node"
SHARED = f"{PROXY}, {REPLICAS} replicas"
BUCKETED = f"{CLUSTER} + bucket"
COLD = "cold fill"
PEER = "hit from a peer"
LOCAL = "local hit"
BUCKET_HIT = "hit from the bucket"
INDEXED_WAIT = 15.0  # seconds for a replica's holding to reach the index after its commit
UPLOAD_FLOOR = 16 << 20  # bytes/s: a bucket upload slower than this counts as stuck


@dataclass(slots=True)
class Replicas:
    """The three caches of one repetition, their index and the run's upstream log."""

    caches: list[Cache]
    postgres: Postgres
    database: str
    log: UpstreamLog
    storage: str | None = None  # the shared tier's name in the index (its --storage)
    uploaded_after: float | None = None  # seconds from the cold fill to the bucket's copy

    def holds(self, replica: Cache, blob: Blob) -> bool:
        """Whether the shared index lists ``blob`` as held by ``replica`` (its peers only
        copy from a replica the index names)."""
        sql = (
            "SELECT count(*) FROM registry_cache.holdings"
            f" WHERE digest = '{blob.digest}' AND replica = '{replica.url}'"
        )
        return self.postgres.psql(sql, self.database) == "1"

    def await_in_bucket(self, blob: Blob) -> None:
        """The shared tier holds ``blob`` (uploaded and verified; listed in the index);
        ``uploaded_after`` says how long that took from the call (the cold fill's end)."""
        sql = (
            "SELECT count(*) FROM registry_cache.holdings"
            f" WHERE digest = '{blob.digest}' AND replica = '{self.storage}'"
        )
        began = time.monotonic()
        # The upload reads, hashes and PUTs every byte after the fill: 17 s for 1 GiB on
        # a slow day of this host, so the wait grows with the blob.
        deadline = began + INDEXED_WAIT + blob.size / UPLOAD_FLOOR
        while self.postgres.psql(sql, self.database) != "1":
            if time.monotonic() > deadline:
                raise ScenarioError(f"the bucket never held {blob.digest}")
            time.sleep(0.05)
        self.uploaded_after = time.monotonic() - began

    def await_joined(self) -> None:
        """Every replica has announced itself in the index (else a fill is unshared)."""
        urls = ", ".join(f"'{cache.url}'" for cache in self.caches)
        sql = f"SELECT count(*) FROM registry_cache.replicas WHERE url IN ({urls})"
        deadline = time.monotonic() + INDEXED_WAIT
        while True:
            with contextlib.suppress(RuntimeError):  # the schema is made by the first one up
                if self.postgres.psql(sql, self.database) == str(len(self.caches)):
                    return
            if time.monotonic() > deadline:
                tail = self.caches[0].log_tail(5)
                raise ScenarioError(f"the replicas did not all join the cluster:\n{tail}")
            time.sleep(0.05)

    def await_indexed(self, replica: Cache, blob: Blob) -> None:
        await_stored(replica, blob)
        deadline = time.monotonic() + INDEXED_WAIT
        while not self.holds(replica, blob):
            if time.monotonic() > deadline:
                raise ScenarioError(f"the index never listed {blob.digest} on {replica.url}")
            time.sleep(0.05)


@dataclass(frozen=True, slots=True)
class HitSource:
    """Where a replica's answer comes from: ``place`` makes it so for ``blob`` (which
    replica 0 holds after its cold fill) and returns the replica to GET it from."""

    name: str
    place: Callable[[Replicas, Blob], Cache]


def from_peer(replicas: Replicas, blob: Blob) -> Cache:
    """Replica 1 holds nothing: it copies the blob from replica 0 (and verifies it)."""
    replicas.await_indexed(replicas.caches[0], blob)
    if replicas.caches[1].has_blob(blob.digest):
        raise ScenarioError("replica 1 already holds the blob: not a hit from a peer")
    return replicas.caches[1]


def from_local(replicas: Replicas, blob: Blob) -> Cache:
    """Replica 0 filled the blob: it sends it from its own data directory."""
    await_stored(replicas.caches[0], blob)
    return replicas.caches[0]


def from_bucket(replicas: Replicas, blob: Blob) -> Cache:
    """Replica 1 holds nothing and the bucket holds the blob: it reads it from there."""
    replicas.await_in_bucket(blob)
    if replicas.caches[1].has_blob(blob.digest):
        raise ScenarioError("replica 1 already holds the blob: not a hit from the bucket")
    return replicas.caches[1]


HIT_SOURCES: tuple[HitSource, ...] = (HitSource(PEER, from_peer), HitSource(LOCAL, from_local))
BUCKET_SOURCES: tuple[HitSource, ...] = (
    HitSource(BUCKET_HIT, from_bucket),
    HitSource(LOCAL, from_local),
)


def cluster(lab: Lab, plan: Plan) -> ScenarioResult:
    missing = postgres_missing()
    if missing is None and find_binary("nginx") is None:
        missing = "nginx is not installed"
    missing = missing or weed_missing()
    if missing is not None:
        raise ScenarioError(missing)
    herd, big, n = lab.content.herd, lab.content.big, plan.herd_clients
    title = (
        f"Cluster: {n} concurrent cold GETs of one {_size(herd.size)} blob through nginx over "
        f"{REPLICAS} replicas; where a {_size(big.size)} hit comes from"
    )
    result = ScenarioResult("cluster", title)
    result.note(
        f"{SHARED}: distribution's proxy, {REPLICAS} processes on one storage directory; "
        "every contender behind its own nginx (round robin, no buffering)"
    )
    result.note(
        f"{COLD}, {PEER}, {LOCAL}: GETs of the big blob straight from a replica "
        f"(the {LOCAL}: median of {WARM_GETS}); the 1-node figures from one fresh cache"
    )
    result.note(
        f"{BUCKETED}: the shared tier on SeaweedFS (weed mini, 127.0.0.1), a new key prefix "
        f"per repetition; {BUCKET_HIT}: replica 1 with an empty data directory"
    )
    log = UpstreamLog(lab.upstream.access_log)
    databases = itertools.count()
    with Postgres() as postgres, SeaweedFS() as weed:

        def one(rep: int, out: ScenarioResult) -> None:
            walls: dict[str, float] = {}
            seen: list[str] = []  # failures worth a note (a sample's notes are not kept)
            single: dict[str, float] = {}
            for who in rotated([CLUSTER, SINGLE, SHARED, BUCKETED], rep):
                if who == BUCKETED:
                    database = f"bench_{next(databases)}"
                    postgres.create_database(database)
                    bucket = (weed.tier, database)  # a fresh key prefix: every rep is cold
                    with _replicas(lab, postgres, database, log, bucket) as replicas:
                        replicas.await_joined()
                        _hit_sources(out, replicas, big, lab.content.repo, BUCKETED)
                elif who == CLUSTER:
                    database = f"bench_{next(databases)}"
                    postgres.create_database(database)
                    with _replicas(lab, postgres, database, log) as replicas:
                        replicas.await_joined()
                        walls[who] = _herd(lab, plan, out, who, replicas.caches, seen=seen)
                        _hit_sources(out, replicas, big, lab.content.repo, CLUSTER)
                elif who == SINGLE:
                    with lab.running(Cache(_dir(lab, "single"), lab.upstream.url)) as cache:
                        walls[who] = _herd(lab, plan, out, who, [cache], seen=seen)
                        _single_hits(out, cache, big, lab.content.repo, single)
                else:
                    with _distribution_replicas(lab) as proxies:
                        walls[who] = _herd(lab, plan, out, who, proxies, seen=seen)
            for line in seen:
                result.note(line)
            out.add(f"herd wall, {CLUSTER} vs 1 node", "x", walls[CLUSTER] / walls[SINGLE])
            out.add(f"herd wall, {CLUSTER} vs {SHARED}", "x", walls[CLUSTER] / walls[SHARED])
            rates = {
                name: out.figures[f"{CLUSTER} {name}"].values[-1]
                for name in (COLD, *(source.name for source in HIT_SOURCES))
            }
            for name, rate in rates.items():
                if name not in (COLD, LOCAL):  # a copy from elsewhere, against the two ends
                    out.add(f"{name} vs {LOCAL}", "x", rate / rates[LOCAL])
                    out.add(f"{name} vs {COLD}", "x", rate / rates[COLD])
            for name, rate in rates.items():
                out.add(f"{name} vs 1-node {LOCAL}", "x", rate / single[LOCAL])
                out.add(f"{name} vs 1-node {COLD}", "x", rate / single[COLD])
            bucketed = {
                name: out.figures[f"{BUCKETED} {name}"].values[-1]
                for name in (COLD, BUCKET_HIT, LOCAL)
            }
            out.add(f"{BUCKET_HIT} vs {LOCAL}", "x", bucketed[BUCKET_HIT] / bucketed[LOCAL])
            out.add(f"{BUCKET_HIT} vs {COLD}", "x", bucketed[BUCKET_HIT] / bucketed[COLD])
            for name in (LOCAL, COLD):
                out.add(f"{BUCKET_HIT} vs 1-node {name}", "x", bucketed[BUCKET_HIT] / single[name])

        repeat(plan, result, one)
    return result


def _dir(lab: Lab, stem: str) -> Path:
    return lab.workdir / f"{stem}-{secrets.token_hex(4)}"


@contextlib.contextmanager
def _replicas(
    lab: Lab,
    postgres: Postgres,
    database: str,
    log: UpstreamLog,
    bucket: tuple[BucketTier, str] | None = None,
) -> Iterator[Replicas]:
    """Three replicas on ``database``; with ``bucket`` (a tier and a key prefix), its
    shared tier too."""
    with lab.directory("replicas") as where, contextlib.ExitStack() as stack:
        secret = where / "cluster-secret"
        secret.write_text(secrets.token_hex(24) + "\n")
        member = ClusterMember(postgres.url(database), secret)
        storage = None
        if bucket is not None:
            tier, prefix = bucket
            storage = tier.storage(prefix)
            member = ClusterMember(member.index, secret, tuple(tier.flags(prefix)), tier.env())
        caches = [
            stack.enter_context(
                lab.running(Cache(where / f"replica-{i}", lab.upstream.url, cluster=member))
            )
            for i in range(REPLICAS)
        ]
        yield Replicas(caches, postgres, database, log, storage)


@contextlib.contextmanager
def _distribution_replicas(lab: Lab) -> Iterator[list[Registry]]:
    with lab.directory("distribution-shared") as where, contextlib.ExitStack() as stack:
        storage = where / "storage"
        yield [
            stack.enter_context(
                lab.running(
                    Registry(where / f"replica-{i}", proxy_remote=lab.upstream.url, storage=storage)
                )
            )
            for i in range(REPLICAS)
        ]


def _herd(
    lab: Lab,
    plan: Plan,
    out: ScenarioResult,
    who: str,
    servers: list[Cache] | list[Registry],
    *,
    seen: list[str],
) -> float:
    """The herd through a balancer over ``servers``; its figures into ``out``, the first of
    each kind of failure into ``seen``; its wall."""
    blob, n = lab.content.herd, plan.herd_clients
    log = UpstreamLog(lab.upstream.access_log)
    backends = [f"{server.host}:{server.port}" for server in servers]
    with lab.running(Balancer(_dir(lab, "balancer"), backends)) as balancer:
        marks = [_log_size(server.log_path) for server in servers]
        mark = log.mark()
        with CpuMeter([balancer.pid, *(server.pid for server in servers)]) as cpu:
            outcome = herd_gets(blob_url(balancer, lab.content.repo, blob.digest), blob.size, n)
            for server in servers:
                await_stored(server, blob)
        traffic = log.settled_traffic(mark, blob.digest)
        proxy_errors = balancer.errors()
    out.add(f"{who}, {n} clients", "s", outcome.wall)
    out.add(f"{who} upstream bytes", "x blob", traffic.bytes / blob.size)
    out.add(f"{who} upstream GETs", "GETs", traffic.requests)
    out.add(f"{who} failed GETs", "GETs", len(outcome.failures))
    out.add(f"{who} delivered", "GB/s", (n - len(outcome.failures)) * blob.size / outcome.wall / GB)
    out.add(f"{who} CPU, {n} clients (servers + nginx)", "s", cpu.seconds)
    errors = [
        line for server, at in zip(servers, marks, strict=True) for line in _errors(server, at)
    ]
    out.add(f"{who} error lines in its logs", "lines", len(errors) + len(proxy_errors))
    bad = [f"{server.url}: {got}" for server in servers if (got := body_digest(
        blob_url(server, lab.content.repo, blob.digest))) != blob.digest]  # fmt: skip
    out.add(f"{who} bad stored copies", "replicas", len(bad))
    for line in [*outcome.failures[:1], *errors[:1], *proxy_errors[:1], *bad[:1]]:
        seen.append(f"{who}: {line.strip()[:240]}")
    return outcome.wall


def _hit_sources(out: ScenarioResult, replicas: Replicas, blob: Blob, repo: str, who: str) -> None:
    """The cold fill on replica 0, then every hit source of ``who`` (the replicas with or
    without the bucket), each GET straight from a replica; upstream bytes for all of them
    together (the cold fill's, and nothing more)."""
    mark = replicas.log.mark()
    os.sync()  # the herd's write-back would slow this fill, not the 1-node one: both wait
    url = blob_url(replicas.caches[0], repo, blob.digest)
    _add_get(out, f"{who} {COLD}", fetch(url, blob.size))
    for source in BUCKET_SOURCES if who == BUCKETED else HIT_SOURCES:
        replica = source.place(replicas, blob)
        if source.name == BUCKET_HIT and replicas.uploaded_after is not None:
            out.add(f"{who} upload to the bucket, after the {COLD}", "s", replicas.uploaded_after)
        os.sync()
        url = blob_url(replica, repo, blob.digest)
        _add_get(out, f"{who} {source.name}", _hit(url, blob.size, source.name))
        await_stored(replica, blob)
        if source.name == BUCKET_HIT and _fill_sources(replica).get("bucket", 0) < 1:
            raise ScenarioError(f"{replica.url} did not read the blob from the bucket")
    fetched = replicas.log.settled_traffic(mark, blob.digest).bytes
    out.add(f"{who} upstream bytes, {COLD} and every hit", "x blob", fetched / blob.size)


def _fill_sources(cache: Cache) -> dict[str, float]:
    """``registry_cache_fill_sources_total`` by source, from the cache's /metrics."""
    with urllib.request.urlopen(f"{cache.url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith('registry_cache_fill_sources_total{source="'):
            labels, value = line.rsplit(" ", 1)
            found[labels.split('"')[1]] = float(value)
    return found


def _single_hits(
    out: ScenarioResult, cache: Cache, blob: Blob, repo: str, single: dict[str, float]
) -> None:
    """The single node's cold fill and local hit of the big blob (its herd came first)."""
    url = blob_url(cache, repo, blob.digest)
    os.sync()  # as before every GET of the replicas' (the herd's write-back)
    cold = fetch(url, blob.size)
    await_stored(cache, blob)
    os.sync()
    warm = _hit(url, blob.size, LOCAL)
    for name, got in ((COLD, cold), (LOCAL, warm)):
        _add_get(out, f"{SINGLE} {name}", got)
        single[name] = got.rate / GB


def _hit(url: str, size: int, source: str) -> Transfer:
    """One GET, or the median of ``WARM_GETS`` for a local hit (a 0.2 s GET is at the mercy
    of one scheduling hiccup); only the first GET of a copy from a peer is a copy."""
    if source != LOCAL:
        return fetch(url, size)
    gets = [fetch(url, size) for _ in range(WARM_GETS)]
    return sorted(gets, key=lambda t: t.seconds)[len(gets) // 2]


def _add_get(out: ScenarioResult, key: str, got: Transfer) -> None:
    out.add(key, "GB/s", got.rate / GB)
    out.add(f"{key}, time", "s", got.seconds)


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _errors(server: Server, since: int) -> list[str]:
    """Error lines a server logged since ``since``: the cache's ``ERROR``/``CRITICAL``
    records, distribution's ``level=error``/``panic`` ones."""
    try:
        with server.log_path.open("rb") as handle:
            handle.seek(since)
            text = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return []
    marks = (" ERROR ", " CRITICAL ", "level=error", "level=fatal", "level=panic", "Traceback")
    return [line for line in text.splitlines() if any(m in line for m in marks)]


__all__ = [
    "BUCKETED",
    "BUCKET_HIT",
    "BUCKET_SOURCES",
    "CLUSTER",
    "HIT_SOURCES",
    "SHARED",
    "SINGLE",
    "HitSource",
    "cluster",
]
