"""A real upstream: CNCF distribution 2.8 (``docker-registry``) on 127.0.0.1.

Contract:
- ``UpstreamRegistry(workdir, ...).start()`` writes ``workdir/config.yml`` (filesystem
  storage in ``workdir/storage``, deletes enabled, access log on) and runs
  ``docker-registry serve`` on 127.0.0.1 and a free port until ``GET /v2/`` answers.
  stdout (the access log, one Apache "combined" line per request) goes to
  ``workdir/access.log``, stderr (logrus text) to ``workdir/registry.log``.
- Auth: none (default); ``htpasswd={"alice": "pw"}`` for Basic (bcrypt file from
  ``htpasswd -Bbn``); ``token_issuer=TokenIssuer`` for Bearer (the issuer must be
  started first: its realm goes into the config).
- ``stop()`` stops it by PID (SIGTERM, then SIGKILL); ``restart()`` keeps port and
  storage. ``request_log()``/``count()`` read the access log; ``clear_request_log()``
  forgets it. ``blob_path(digest)`` is the blob's data file in storage.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import yaml

from . import proc as procs
from .images import Image, ImageIndex, push
from .ports import PROBE_USER_AGENT, free_port, wait_http
from .service import LoopbackService
from .token_issuer import TokenIssuer

REGISTRY_BINARY = "docker-registry"
HTTP_SECRET = "registry-cache-test-secret"

# 127.0.0.1 - - [27/Nov/2026:23:28:37 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
ACCESS_LOG_RE = re.compile(
    r"^(?P<remote>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "
    r'"(?P<method>[A-Z]+) (?P<path>\S+) (?P<proto>[^"]+)" '
    r"(?P<status>\d{3}) (?P<size>\d+|-)"
    r'(?: "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)")?\s*$'
)


def registry_available() -> bool:
    """True when the ``docker-registry`` binary is on PATH."""
    return shutil.which(REGISTRY_BINARY) is not None


@dataclass(frozen=True)
class AccessLogEntry:
    """One request the registry served, from its access log."""

    method: str
    path: str  # the request URI, query string included
    status: int
    size: int  # response body bytes written
    user: str  # always "-" in 2.8 (it does not log the Basic/Bearer user)
    user_agent: str

    @classmethod
    def parse(cls, line: str) -> AccessLogEntry | None:
        match = ACCESS_LOG_RE.match(line)
        if match is None:
            return None
        size = match["size"]
        return cls(
            method=match["method"],
            path=match["path"],
            status=int(match["status"]),
            size=0 if size == "-" else int(size),
            user=match["user"],
            user_agent=match["agent"] or "",
        )


def blob_data_path(storage_dir: Path, digest: str) -> Path:
    """Where distribution's filesystem driver keeps ``digest``'s bytes."""
    algo, _, hexdigest = digest.partition(":")
    if algo != "sha256" or len(hexdigest) != 64:
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return storage_dir / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


class UpstreamRegistry(LoopbackService):
    """One ``docker-registry serve`` process; see the module docstring for the contract."""

    def __init__(
        self,
        workdir: Path,
        *,
        htpasswd: dict[str, str] | None = None,
        token_issuer: TokenIssuer | None = None,
        proxy_remote: str | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        if htpasswd and token_issuer:
            raise ValueError("choose htpasswd or token auth, not both")
        self.workdir = workdir
        self.htpasswd = dict(htpasswd or {})
        self.token_issuer = token_issuer
        self.proxy_remote = proxy_remote
        self.extra_config = extra_config or {}
        self.storage_dir = workdir / "storage"
        self.config_path = workdir / "config.yml"
        self.access_log_path = workdir / "access.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    # -- configuration -----------------------------------------------------
    @property
    def log_path(self) -> Path:
        """The registry's own (stderr) log; ``log_text()`` reads it."""
        return self.workdir / "registry.log"

    @property
    def credentials(self) -> tuple[str, str] | None:
        """The first htpasswd user, or None."""
        return next(iter(self.htpasswd.items()), None)

    def _write_htpasswd(self) -> Path:
        path = self.workdir / "htpasswd"
        lines = []
        for user, password in self.htpasswd.items():
            out = subprocess.run(
                ["htpasswd", "-Bbn", user, password],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            lines.append(out)
        path.write_text("\n".join(lines) + "\n")
        return path

    def config(self) -> dict[str, Any]:
        """The YAML config (as a dict) for the current port."""
        cfg: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host_port, "secret": HTTP_SECRET},
            "health": {"storagedriver": {"enabled": False}},
        }
        if self.htpasswd:
            cfg["auth"] = {"htpasswd": {"realm": "test", "path": str(self._write_htpasswd())}}
        elif self.token_issuer is not None:
            issuer = self.token_issuer
            cfg["auth"] = {
                "token": {
                    "realm": issuer.realm,
                    "service": issuer.service,
                    "issuer": issuer.issuer,
                    "rootcertbundle": str(issuer.cert_path),
                }
            }
        if self.proxy_remote is not None:
            cfg["proxy"] = {"remoteurl": self.proxy_remote}
        _deep_merge(cfg, self.extra_config)
        return cfg

    # -- lifecycle ---------------------------------------------------------
    def start(self, timeout: float = 15.0) -> Self:
        """Start on a free port (retrying if another process takes it first)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage_dir.mkdir(exist_ok=True)
        last_error: Exception | None = None
        for _ in range(3):
            if self.port == 0 or last_error is not None:
                self.port = free_port()
            try:
                self._launch(timeout)
                return self
            except RuntimeError as exc:
                if "address already in use" not in self.log_text():
                    raise
                last_error = exc
        raise RuntimeError(f"could not bind docker-registry: {last_error}")

    def _launch(self, timeout: float) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        env = procs.clean_env(drop_prefixes=("REGISTRY_",))
        self._proc = procs.spawn(
            [REGISTRY_BINARY, "serve", str(self.config_path)],
            stdout=self.access_log_path,
            stderr=self.log_path,
            cwd=self.workdir,
            env=env,
        )
        try:
            wait_http(f"{self.url}/v2/", timeout, proc=self._proc)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"docker-registry did not start: {exc}\n{self.log_text()}") from exc

    def stop(self) -> None:
        """Stop the process (by PID) if it runs; idempotent."""
        if self._proc is not None:
            procs.terminate(self._proc, grace=5.0)
            self._proc = None

    def restart(self, timeout: float = 15.0) -> None:
        """Stop and start again on the same port with the same storage."""
        self.stop()
        self._launch(timeout)

    # -- observation -------------------------------------------------------
    def request_log(self, include_probes: bool = False) -> list[AccessLogEntry]:
        """Every request in the access log so far (oldest first).

        The harness's own readiness probes (``wait_http``) are left out unless
        ``include_probes``.

        distribution writes a line as its handler returns, which is before the last
        bytes of a large body reach the client; use ``wait_count`` when a test must
        wait for a request it has not yet seen complete.
        """
        try:
            text = self.access_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        entries = (AccessLogEntry.parse(line) for line in text.splitlines())
        return [
            e
            for e in entries
            if e is not None and (include_probes or e.user_agent != PROBE_USER_AGENT)
        ]

    def count(
        self, method: str | None = None, path_substring: str = "", status: int | None = None
    ) -> int:
        """Requests with this method (None: any) whose URI contains ``path_substring``."""
        return sum(
            1
            for e in self.request_log()
            if (method is None or e.method == method.upper())
            and path_substring in e.path
            and (status is None or e.status == status)
        )

    def blob_gets(self, digest: str = "") -> int:
        """Successful (200/206) blob GETs, optionally only for ``digest``."""
        return sum(
            1
            for e in self.request_log()
            if e.method == "GET" and f"/blobs/{digest}" in e.path and e.status in (200, 206)
        )

    def wait_count(
        self,
        method: str | None,
        path_substring: str,
        at_least: int,
        timeout: float = 5.0,
    ) -> int:
        """Poll ``count`` until it reaches ``at_least``; return the count (may be lower)."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.count(method, path_substring)
            if n >= at_least or time.monotonic() >= deadline:
                return n
            time.sleep(0.05)

    def clear_request_log(self) -> None:
        """Forget requests so far (the registry appends, so truncating is safe)."""
        if self.access_log_path.exists():
            with self.access_log_path.open("r+b") as f:
                f.truncate(0)

    def blob_path(self, digest: str) -> Path:
        """The data file of ``digest`` in this registry's storage (tests tamper with it)."""
        return blob_data_path(self.storage_dir, digest)


def hub_and_ghcr(
    make_upstream: Callable[[], UpstreamRegistry],
    hub_content: Image | ImageIndex,
    ghcr_content: Image | ImageIndex,
) -> tuple[UpstreamRegistry, UpstreamRegistry]:
    """Two new upstreams playing docker.io (``library/test:1.0`` = ``hub_content``) and
    ghcr.io (``org/app:2.0`` = ``ghcr_content``), their request logs cleared of the pushes.
    """
    hub, ghcr = make_upstream(), make_upstream()
    push(hub.url, "library/test", "1.0", hub_content)
    push(ghcr.url, "org/app", "2.0", ghcr_content)
    hub.clear_request_log()
    ghcr.clear_request_log()
    return hub, ghcr


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
