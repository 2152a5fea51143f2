"""The servers of one suite run, and fresh proxies on demand for cold measurements.

Long-lived: the upstream (with the content pushed), nginx serving the content
directory, one warm registry-cache and one warm distribution proxy. Cold
measurements take a ``fresh_cache()`` / ``fresh_proxy()`` each: a new process with
an empty data directory, deleted (and ``sync``'d, so its write-back does not
slow the next contender) when the block ends.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from . import content as contentmod
from .content import Content
from .readers import Readers
from .servers import Cache, Nginx, Registry, Server
from .tlscerts import self_signed, trust

S = TypeVar("S", bound=Server)


@dataclass(frozen=True, slots=True)
class Sizes:
    big: int
    herd: int
    image_layers: tuple[int, ...]


class Lab:
    def __init__(self, workdir: Path, sizes: Sizes, *, keep: bool = False) -> None:
        self.workdir = workdir
        self.sizes = sizes
        self.keep = keep
        self._serial = itertools.count()
        self._servers: list[Server] = []
        self._elsewhere: set[Path] = set()  # directories outside workdir (tmpfs)
        self.upstream = Registry(workdir / "upstream")
        self._content: Content | None = None
        self._nginx: Nginx | None = None
        self._cache: Cache | None = None
        self._tls_cache: Cache | None = None
        self._proxy: Registry | None = None
        self.readers = Readers(workdir / "native")

    def start(self, progress: Callable[[str], None]) -> Lab:
        self._started(self.upstream)
        progress(
            f"writing and pushing content ({_mib(self.sizes.big)} + {_mib(self.sizes.herd)} "
            f"+ an image of {len(self.sizes.image_layers)} layers)"
        )
        self._content = contentmod.prepare(
            self.workdir / "content",
            self.upstream.url,
            self.sizes.big,
            self.sizes.herd,
            self.sizes.image_layers,
        )
        return self

    @property
    def content(self) -> Content:
        if self._content is None:
            raise RuntimeError("lab not started")
        return self._content

    @property
    def nginx(self) -> Nginx:
        if self._nginx is None:
            self._nginx = self._started(Nginx(self.workdir / "nginx", self.workdir / "content"))
        return self._nginx

    @property
    def cache(self) -> Cache:
        """The warm registry-cache (one worker)."""
        if self._cache is None:
            self._cache = self._started(Cache(self.workdir / "cache", self.upstream.url))
        return self._cache

    def tls_cache(self) -> Cache | None:
        """A warm registry-cache serving HTTPS (self-signed); None without ``openssl``."""
        if self._tls_cache is None:
            certificate = self_signed(self.workdir / "tls")
            if certificate is None:
                return None
            trust(certificate.cert)
            self._tls_cache = self._started(
                Cache(self.workdir / "cache-tls", self.upstream.url, tls=certificate)
            )
        return self._tls_cache

    @property
    def proxy(self) -> Registry:
        """The warm distribution proxy."""
        if self._proxy is None:
            self._proxy = self._started(
                Registry(self.workdir / "proxy", proxy_remote=self.upstream.url)
            )
        return self._proxy

    def scratch(self, under: Path | None) -> Path:
        """This run's directory under ``under`` (e.g. a tmpfs; removed by ``close``),
        or the workdir when ``under`` is None."""
        if under is None:
            return self.workdir
        base = under / self.workdir.name
        base.mkdir(parents=True, exist_ok=True)
        self._elsewhere.add(base)
        return base

    @contextlib.contextmanager
    def fresh_cache(
        self, workers: int = 1, under: Path | None = None, extra: Sequence[str] = ()
    ) -> Iterator[Cache]:
        """A new cache; its directory under ``under`` (e.g. a tmpfs) instead of the workdir;
        ``extra``: more ``serve`` flags."""
        where = self.scratch(under) / f"cache-{next(self._serial)}"
        server = Cache(where, self.upstream.url, workers=workers, extra=extra)
        with self._fresh(server) as cache:
            yield cache

    @contextlib.contextmanager
    def fresh_proxy(self) -> Iterator[Registry]:
        where = self.workdir / f"proxy-{next(self._serial)}"
        with self._fresh(Registry(where, proxy_remote=self.upstream.url)) as proxy:
            yield proxy

    @contextlib.contextmanager
    def running(self, server: S) -> Iterator[S]:
        """``server`` (e.g. one of several replicas, a balancer) started now, stopped and
        its directory removed when the block ends."""
        with self._fresh(server) as started:
            yield started

    @contextlib.contextmanager
    def directory(self, stem: str) -> Iterator[Path]:
        """A new directory in the workdir for one contender's servers (shared storage,
        a secret), removed when the block ends (unless ``keep``)."""
        where = self.workdir / f"{stem}-{next(self._serial)}"
        where.mkdir(parents=True)
        try:
            yield where
        finally:
            if not self.keep:
                shutil.rmtree(where, ignore_errors=True)

    @contextlib.contextmanager
    def _fresh(self, server: S) -> Iterator[S]:
        self._started(server)
        try:
            yield server
        finally:
            server.stop()
            self._servers.remove(server)
            if not self.keep:
                shutil.rmtree(server.workdir, ignore_errors=True)
            os.sync()

    def _started(self, server: S) -> S:
        server.start()
        self._servers.append(server)
        return server

    def close(self) -> None:
        for server in reversed(self._servers):
            server.stop()
        self._servers.clear()
        if not self.keep:
            for path in self._elsewhere:
                shutil.rmtree(path, ignore_errors=True)


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.0f} MiB"
