"""The benchmark's scenarios: the same image pulled from upstream and through the cache.

Scenarios, in the order they run (``--pulls`` runs each):

=================  ==========================================================
tag-upstream       pull by tag straight from the upstream registry
tag-cache          pull by tag through the cache
digest-upstream    pull by digest straight from upstream
digest-cache       pull by digest through the cache
blob-upstream      download the largest layer from upstream (one GET)
blob-cache         download the largest layer through the cache
=================  ==========================================================

Pulls are timed end to end (token, manifests, every blob). Blob downloads are
timed from the request to the last byte, with the token already fetched.
Before any run, ``prepare`` checks the cache answers and resolves the image on
both sides, so a missing image or an unreachable cache fails fast, in one line.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .clients import ExternalClient, make_client
from .pullclient import DEFAULT_CONCURRENCY, image_blobs, pull, resolve
from .refs import (
    ImageRef,
    PathStyle,
    cache_repository,
    client_reference,
    default_upstream_url,
    host_port,
)
from .registry import Credentials, PullError, RegistryClient


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    kind: str  # "pull" (seconds) or "blob" (MB/s)
    side: str  # "upstream" or "cache"
    by_digest: bool = False

    @property
    def unit(self) -> str:
        return "s" if self.kind == "pull" else "MB/s"


SCENARIOS = (
    Scenario("tag-upstream", "pull by tag from upstream", "pull", "upstream"),
    Scenario("tag-cache", "pull by tag from the cache", "pull", "cache"),
    Scenario("digest-upstream", "pull by digest from upstream", "pull", "upstream", True),
    Scenario("digest-cache", "pull by digest from the cache", "pull", "cache", True),
    Scenario("blob-upstream", "largest layer from upstream", "blob", "upstream"),
    Scenario("blob-cache", "largest layer from the cache", "blob", "cache"),
)
# (speed-up key, upstream scenario, cache scenario)
PAIRS = (
    ("tag", "tag-upstream", "tag-cache"),
    ("digest", "digest-upstream", "digest-cache"),
    ("blob", "blob-upstream", "blob-cache"),
)


@dataclass(frozen=True, slots=True)
class BenchConfig:
    image: ImageRef
    upstream_url: str
    cache_url: str
    cache_style: PathStyle = "prefix"
    pulls: int = 5
    prune_between: bool = False
    client: str = "builtin"
    platform: str = "linux/amd64"
    output: Path | None = None
    credentials: Credentials | None = None
    concurrency: int = DEFAULT_CONCURRENCY


@dataclass(frozen=True, slots=True)
class RunResult:
    scenario: str
    run: int
    seconds: float
    bytes: int

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0

    def value(self, kind: str) -> float:
        return self.seconds if kind == "pull" else self.mb_per_s


@dataclass(slots=True)
class Target:
    """What ``prepare`` learned: the digest, the image size, the largest layer."""

    digest: str
    platform: str | None
    config_digest: str
    config_size: int
    image_bytes: int
    layers: int
    blob_digest: str | None
    blob_size: int | None
    notes: list[str] = field(default_factory=list)


class Benchmark:
    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        self.cache_repo = cache_repository(config.image, config.cache_style)
        self.target: Target | None = None
        self.external: ExternalClient | None = None

    def _client(self, side: str) -> RegistryClient:
        if side == "cache":  # the user's own cache: a self-signed certificate is fine
            return RegistryClient(self.config.cache_url, verify_tls=False)
        return RegistryClient(self.config.upstream_url, credentials=self.config.credentials)

    def _repo(self, side: str) -> str:
        return self.cache_repo if side == "cache" else self.config.image.repository

    async def prepare(self) -> Target:
        cfg = self.config
        async with self._client("cache") as cache, _labelled("cache"):
            await cache.ping()
        async with self._client("upstream") as upstream, _labelled("upstream"):
            top, image, chosen = await resolve(
                upstream, cfg.image.repository, cfg.image.tag, cfg.platform
            )
            config_blob, layers = image_blobs(image.json(), image.digest)
        async with self._client("cache") as cache, _labelled("cache"):
            via_cache = await resolve(cache, self.cache_repo, top.digest, cfg.platform)
        if via_cache[0].digest != top.digest:  # cannot happen for a verified by-digest fetch
            raise PullError(f"the cache served {via_cache[0].digest} for {top.digest}")
        largest = max(layers, key=lambda d: d.size, default=None)
        target = Target(
            digest=top.digest,
            platform=chosen,
            config_digest=config_blob.digest,
            config_size=config_blob.size,
            image_bytes=config_blob.size + sum(d.size for d in layers),
            layers=len(layers),
            blob_digest=largest.digest if largest else None,
            blob_size=largest.size if largest else None,
        )
        if cfg.client == "builtin" and cfg.prune_between:
            target.notes.append(
                "--prune-between has no effect with --client builtin "
                "(it keeps nothing between pulls)"
            )
        if largest is None:
            target.notes.append("the image has no layers: blob scenarios skipped")
        if cfg.client != "builtin":
            self.external = make_client(cfg.client, platform=cfg.platform, output=cfg.output)
        self.target = target
        return target

    def planned(self) -> list[Scenario]:
        assert self.target is not None, "prepare() first"
        has_blob = self.target.blob_digest is not None
        return [s for s in SCENARIOS if s.kind == "pull" or has_blob]

    async def run(
        self,
        on_result: Callable[[Scenario, RunResult], None],
        on_start: Callable[[Scenario, int], None] | None = None,
    ) -> list[RunResult]:
        results: list[RunResult] = []
        try:
            for scenario in self.planned():
                for index in range(1, self.config.pulls + 1):
                    if on_start is not None:
                        on_start(scenario, index)
                    result = await self.run_one(scenario, index)
                    results.append(result)
                    on_result(scenario, result)
        finally:
            if self.external is not None:
                self.external.close()
        return results

    async def run_one(self, scenario: Scenario, index: int) -> RunResult:
        if self.external is not None and scenario.kind == "pull":
            return await self._external_pull(scenario, index)
        async with _labelled(scenario.side):
            if scenario.kind == "blob":
                return await self._blob(scenario, index)
            return await self._builtin_pull(scenario, index)

    async def _builtin_pull(self, scenario: Scenario, index: int) -> RunResult:
        assert self.target is not None
        cfg = self.config
        ref_part = self.target.digest if scenario.by_digest else cfg.image.tag
        sep = "@" if scenario.by_digest else ":"
        async with self._client(scenario.side) as client:
            result = await pull(
                f"{self._repo(scenario.side)}{sep}{ref_part}",
                client.url,
                platform=cfg.platform,
                output=cfg.output,
                concurrency=cfg.concurrency,
                client=client,
            )
        return RunResult(scenario.name, index, result.seconds, result.bytes)

    def references(self) -> dict[tuple[str, bool], str]:
        """(side, by_digest) → the reference an external client pulls."""
        assert self.target is not None
        cfg = self.config
        image = ImageRef(
            cfg.image.registry, cfg.image.repository, cfg.image.tag, self.target.digest
        )
        # Without --upstream, name the registry itself so docker/ctr resolve it as usual.
        default = cfg.upstream_url == default_upstream_url(cfg.image.registry)
        up_host = cfg.image.registry if default else host_port(cfg.upstream_url)
        refs: dict[tuple[str, bool], str] = {}
        for by_digest in (False, True):
            refs[("upstream", by_digest)] = client_reference(
                up_host, cfg.image.repository, image, by_digest=by_digest
            )
            refs[("cache", by_digest)] = client_reference(
                host_port(cfg.cache_url), self.cache_repo, image, by_digest=by_digest
            )
        return refs

    async def _external_pull(self, scenario: Scenario, index: int) -> RunResult:
        assert self.target is not None and self.external is not None
        refs = self.references()
        if self.config.prune_between:
            await self.external.prune(sorted(set(refs.values())))
        side_url = self.config.cache_url if scenario.side == "cache" else self.config.upstream_url
        started = time.perf_counter()
        await self.external.pull(
            refs[(scenario.side, scenario.by_digest)],
            plain_http=side_url.startswith("http://"),
            verify_tls=scenario.side != "cache",
        )
        seconds = time.perf_counter() - started
        return RunResult(scenario.name, index, seconds, self.target.image_bytes)

    async def _blob(self, scenario: Scenario, index: int) -> RunResult:
        assert self.target is not None and self.target.blob_digest is not None
        repo = self._repo(scenario.side)
        async with self._client(scenario.side) as client:
            # Authenticate first, with the small config blob: a manifest GET would
            # count as a pull against Docker Hub's rate limit.
            await client.fetch_blob(repo, self.target.config_digest, self.target.config_size)
            started = time.perf_counter()
            size = await client.fetch_blob(repo, self.target.blob_digest, self.target.blob_size)
            seconds = time.perf_counter() - started
        return RunResult(scenario.name, index, seconds, size)


@asynccontextmanager
async def _labelled(side: str) -> AsyncIterator[None]:
    """Prefix errors with the side they came from: ``cache 127.0.0.1:5000 unreachable``."""
    try:
        yield
    except PullError as exc:
        raise type(exc)(f"{side} {exc}") from None
