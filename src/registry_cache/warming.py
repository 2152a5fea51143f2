"""Pre-pull images into the cache: through a running cache, or straight into its data directory.

One walk for both (``warm``): resolve the reference, pick platforms from an index
(one, or all), then fetch every config and layer, deduplicated, a few at a time.
The source decides where the bytes come from:

- ``CacheSource``: a running cache over HTTP, path-prefix form
  ``/v2/<upstream>/<repo>/...``, with the product's one registry client
  (upstream/client.py: origin rule, single-flight tokens, capped bodies), run in
  threads; every manifest and blob digest (and size) is verified here as it arrives.
  The cache fills itself as a side effect.
- ``DirectSource``: the proxy's own ``ManifestService`` / ``BlobService`` in this
  process, built from the same Settings as ``serve`` (``proxy.build.build``),
  so the data directory fills exactly as a server would fill it, limits included.
  Safe next to a running server: fills are single-flight across processes.

Failures are per image (``WarmResult.error``); one image failing never stops the others.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

import urllib3
from pydantic import SecretStr, ValidationError
from urllib3.exceptions import HTTPError as Urllib3Error

from .bench.pullclient import Descriptor, image_blobs, select_platform
from .bench.refs import ImageRef
from .bench.registry import PullError
from .clientconfig import Login
from .config import (
    UPSTREAM_NAME_RE,
    Settings,
    UpstreamConfig,
    describe_validation_error,
    has_userinfo,
)
from .digest import Digest
from .errors import DigestInvalid, RegistryError, Unavailable
from .mediatypes import INDEX_TYPES, manifest_media_type, valid_digest
from .routing import route
from .store.body import GrowingBody
from .store.fill import Fill, FillFailed
from .upstream.client import Manifest, UpstreamClient

if TYPE_CHECKING:
    from .web.services import Services

BLOB_CONCURRENCY = 8
BLOB_CHUNK = 1 << 20
# A cache answers headers once it has them from its upstream (up to its own
# header_timeout, plus a token fetch): give it more than an upstream gets.
CACHE_HEADER_TIMEOUT = 60.0
OnBytes = Callable[[int], None]
T = TypeVar("T")


class WarmError(Exception):
    """An image cannot be warmed (message fit for one line)."""


@dataclass(frozen=True, slots=True)
class Fetched:
    body: bytes
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.body)
        except ValueError:
            raise WarmError(f"manifest {self.digest} is not JSON") from None
        if not isinstance(doc, dict):
            raise WarmError(f"manifest {self.digest} is not a JSON object")
        return doc


class Source(Protocol):
    async def manifest(self, reference: str) -> Fetched: ...

    async def blob(self, desc: Descriptor, on_bytes: OnBytes) -> None:
        """Make sure the blob is in the cache; report bytes as they arrive (or are found)."""


class Reporter(Protocol):
    def expect(self, image: ImageRef, nbytes: int) -> None: ...

    def advance(self, image: ImageRef, nbytes: int) -> None: ...


@dataclass
class WarmResult:
    image: ImageRef
    digest: str | None = None
    platforms: list[str] = field(default_factory=list)
    blobs: int = 0
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def read_image_list(lines: Iterable[str]) -> list[str]:
    """One image per line; blank lines and ``#`` comments ignored."""
    return [s for line in lines if (s := line.split("#", 1)[0].strip())]


def upstream_for(settings: Settings, registry: str, *, strict: bool) -> str:
    """The configured upstream a registry host names: by name, else by its URL's host."""
    if registry in settings.upstreams:
        return registry
    for name, upstream in settings.upstreams.items():
        if urlsplit(upstream.url).netloc.lower() == registry:
            return name
    if strict:
        raise WarmError(f"no upstream is configured for registry {registry}")
    return registry  # a running cache may know it


async def warm(
    source: Source, image: ImageRef, *, platform: str | None, reporter: Reporter
) -> WarmResult:
    """Warm one image; ``platform`` None means every manifest of an index."""
    started = time.perf_counter()
    result = WarmResult(image)
    try:
        top = await source.manifest(image.reference)
        result.digest = top.digest
        manifests = [top]
        if top.media_type in INDEX_TYPES:
            doc = top.json()
            if platform is None:
                chosen = [(_descriptor(item), _platform_name(item)) for item in _items(doc)]
            else:
                chosen = [select_platform(doc, platform)]
            manifests = [await source.manifest(desc.digest) for desc, _ in chosen]
            result.platforms = [name for _, name in chosen]
        wanted: dict[str, Descriptor] = {}
        for manifest in manifests:
            config, layers = image_blobs(manifest.json(), manifest.digest)
            for desc in (config, *layers):
                wanted.setdefault(desc.digest, desc)
        reporter.expect(image, sum(d.size for d in wanted.values()))
        limit = asyncio.Semaphore(BLOB_CONCURRENCY)

        async def one(desc: Descriptor) -> None:
            async with limit:
                await source.blob(desc, lambda n: reporter.advance(image, n))

        async with asyncio.TaskGroup() as group:
            for desc in wanted.values():
                group.create_task(one(desc))
        result.blobs = len(wanted)
        result.bytes = sum(d.size for d in wanted.values())
    except BaseExceptionGroup as failed:
        result.error = _message(_first(failed))
    except Exception as exc:
        result.error = _message(exc)
    result.seconds = time.perf_counter() - started
    return result


async def warm_all(
    sources: Callable[[ImageRef], Source],
    images: Sequence[ImageRef],
    *,
    platform: str | None,
    reporter: Reporter,
    concurrency: int = 3,
) -> list[WarmResult]:
    limit = asyncio.Semaphore(max(1, concurrency))

    async def one(image: ImageRef) -> WarmResult:
        async with limit:
            try:
                source = sources(image)
            except (WarmError, RegistryError) as exc:
                return WarmResult(image, error=_message(exc))
            return await warm(source, image, platform=platform, reporter=reporter)

    return list(await asyncio.gather(*(one(i) for i in images)))


async def warm_through_cache(
    cache_url: str,
    settings: Settings,
    images: Sequence[ImageRef],
    *,
    platform: str | None,
    reporter: Reporter,
    concurrency: int = 3,
    ca_file: Path | None = None,
    login: Login | None = None,
) -> list[WarmResult]:
    """Pull every image through the cache at ``cache_url`` (it fills itself).

    ``ca_file``: trust this CA for an https cache (a private or self-signed certificate);
    ``login``: the user to answer the cache's Basic challenge with (``htpasswd``).
    """
    connections = max(1, concurrency) * BLOB_CONCURRENCY
    try:
        client = cache_client(cache_url, ca_file=ca_file, login=login, connections=connections)
    except WarmError as exc:
        return [WarmResult(image, error=str(exc)) for image in images]
    # Blob streams hold a thread each while they run: one per connection, plus the
    # manifests of the images in progress.
    executor = ThreadPoolExecutor(connections + concurrency, thread_name_prefix="warm")
    try:

        def source(image: ImageRef) -> Source:
            upstream = upstream_for(settings, image.registry, strict=False)
            return CacheSource(client, executor, upstream, image.repository)

        return await warm_all(
            source, images, platform=platform, reporter=reporter, concurrency=concurrency
        )
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def cache_client(
    cache_url: str, *, ca_file: Path | None, login: Login | None, connections: int
) -> UpstreamClient:
    """The product's registry client, pointed at a running cache instead of an upstream."""
    if has_userinfo(cache_url):
        raise WarmError(
            "--cache: credentials in the URL are not allowed; use --login and --password-file"
        )
    host = urlsplit(cache_url).hostname or ""
    try:
        config = UpstreamConfig(
            name=host if UPSTREAM_NAME_RE.fullmatch(host) else "cache",
            url=cache_url,
            username=login.username if login is not None else None,
            password=SecretStr(login.password) if login is not None else None,
            connect_timeout=10.0,
            header_timeout=CACHE_HEADER_TIMEOUT,
        )
    except ValidationError as exc:
        problem = describe_validation_error(exc).split(": ", 2)[-1]
        raise WarmError(f"--cache: {problem}") from None
    trust: dict[str, Any] = {}
    if ca_file is not None:
        trust["ssl_context"] = ssl.create_default_context(cafile=str(ca_file))
    pool = urllib3.PoolManager(maxsize=connections, block=False, **trust)
    netloc = urlsplit(cache_url).netloc
    return UpstreamClient(config, pool, label=f"cache {netloc}")


async def warm_directly(
    settings: Settings,
    images: Sequence[ImageRef],
    *,
    platform: str | None,
    reporter: Reporter,
    concurrency: int = 3,
) -> list[WarmResult]:
    """Fill ``settings.data_dir`` in this process, as the server would (limits included)."""
    from .proxy.build import build
    from .web.services import Services

    components = await build(settings)
    services = Services.build(components.ctx, components.flight)
    components.start()

    def source(image: ImageRef) -> Source:
        upstream = upstream_for(settings, image.registry, strict=True)
        return DirectSource(services, settings, upstream, image.repository)

    try:
        return await warm_all(
            source, images, platform=platform, reporter=reporter, concurrency=concurrency
        )
    finally:
        if components.eviction is not None:
            await components.eviction.run_once()
        await components.close()  # flushes access times


# ----------------------------------------------------------------- sources


class CacheSource:
    """A running cache, addressed as ``/v2/<upstream>/<repository>/...``.

    The client is blocking (urllib3, as for the fills): each call runs in ``executor``.
    """

    def __init__(
        self, client: UpstreamClient, executor: ThreadPoolExecutor, upstream: str, repository: str
    ) -> None:
        self.client = client
        self.executor = executor
        self.path = f"{upstream}/{repository}"

    async def _run(self, call: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(call, *args))

    async def manifest(self, reference: str) -> Fetched:
        got = await self._run(self.client.get_manifest, self.path, reference)
        digest = verified_manifest_digest(got, reference, f"manifest {self.path}")
        return Fetched(got.body, manifest_media_type(got.body, got.media_type), digest)

    async def blob(self, desc: Descriptor, on_bytes: OnBytes) -> None:
        loop = asyncio.get_running_loop()

        def report(count: int) -> None:  # from the executor's thread
            loop.call_soon_threadsafe(on_bytes, count)

        await self._run(fetch_verified_blob, self.client, self.path, desc, report)


def verified_manifest_digest(got: Manifest, reference: str, what: str) -> str:
    """The manifest's digest, checked against the one asked for or the one announced."""
    expected = reference if ":" in reference else got.digest
    if not expected:
        return str(Digest.of(got.body))
    try:
        check = Digest.parse(expected.strip())
    except DigestInvalid:
        raise WarmError(f"{what}: invalid Docker-Content-Digest") from None
    if not check.matches(got.body):
        actual = Digest.of(got.body, check.algorithm)
        raise WarmError(f"{what}: digest mismatch (expected {check}, got {actual})")
    return str(check)


def fetch_verified_blob(
    client: UpstreamClient, repository: str, desc: Descriptor, on_bytes: OnBytes
) -> None:
    """Stream a blob, hashing it and counting its bytes; raise unless both match ``desc``.

    The bytes are discarded: the cache behind the client keeps them.
    """
    what = f"blob {desc.digest} of {repository}"
    expected = Digest.parse(desc.digest)
    hasher = expected.hasher()
    received = 0
    buffer = memoryview(bytearray(BLOB_CHUNK))
    stream = client.open_blob(repository, desc.digest)
    try:
        if stream.size is not None and stream.size != desc.size:
            raise WarmError(f"{what}: {stream.size} bytes announced, the manifest says {desc.size}")
        while count := stream.readinto(buffer):
            received += count
            if received > desc.size:
                raise WarmError(f"{what}: more than the {desc.size} bytes the manifest says")
            hasher.update(buffer[:count])
            on_bytes(count)
    except Urllib3Error as exc:
        raise Unavailable(f"{client.label}: {what} interrupted ({type(exc).__name__})") from None
    finally:
        stream.close()
    if received != desc.size:
        raise WarmError(f"{what}: size mismatch (expected {desc.size}, got {received} bytes)")
    if hasher.hexdigest() != expected.hex:
        raise WarmError(f"{what}: digest mismatch (got {expected.algorithm}:{hasher.hexdigest()})")


class DirectSource:
    """The proxy services of this process (see module doc)."""

    def __init__(
        self, services: Services, settings: Settings, upstream: str, repository: str
    ) -> None:
        self.services = services
        self.route = route(settings, f"{upstream}/{repository}")

    async def manifest(self, reference: str) -> Fetched:
        got = await self.services.manifests.get(self.route, reference, [])
        return Fetched(got.body, got.media_type, got.digest)

    async def blob(self, desc: Descriptor, on_bytes: OnBytes) -> None:
        digest = Digest.parse(desc.digest)
        answer = await self.services.blobs.get(self.route, digest)
        body = answer.body
        assert body is not None
        try:
            if answer.size is not None and answer.size != desc.size:
                raise WarmError(f"blob {digest}: size {answer.size}, manifest says {desc.size}")
            if not isinstance(body, GrowingBody):
                on_bytes(body.size)
                return
            reader = body.source
            pos, size = 0, body.size
            while pos < size:  # a local fill releases the last byte once verified,
                end = await reader.readable(pos)  # a remote one once committed
                on_bytes(end - pos)
                pos = end
            if isinstance(reader, Fill):
                await asyncio.shield(reader.finished)  # committed
                if reader.error is not None:
                    raise reader.error
        except FillFailed as failed:
            raise failed.error from None
        finally:
            await body.close()
        if await self.services.ctx.store.stat(digest) is None:
            raise Unavailable(f"blob {digest} was not stored")


def _items(doc: dict[str, Any]) -> list[dict[str, Any]]:
    items = doc.get("manifests") or []
    return [item for item in items if isinstance(item, dict)]


def _descriptor(item: dict[str, Any]) -> Descriptor:
    digest, size = item.get("digest"), item.get("size")
    if not isinstance(digest, str) or not isinstance(size, int):
        raise WarmError("index entry without digest or size")
    valid = valid_digest(digest)  # it becomes a path and a URL next
    if valid is None:
        raise WarmError(f"index entry with an invalid digest {digest[:80]!r}")
    return Descriptor(str(item.get("mediaType") or ""), valid, size)


def _platform_name(item: dict[str, Any]) -> str:
    plat = item.get("platform") or {}
    parts = (plat.get("os"), plat.get("architecture"), plat.get("variant"))
    return "/".join(str(p) for p in parts if p) or "unknown"


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


def _message(exc: BaseException) -> str:
    if isinstance(exc, RegistryError):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, (PullError, WarmError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".splitlines()[0]
