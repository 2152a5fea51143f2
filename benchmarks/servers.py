"""The servers the suite measures, each a child process on 127.0.0.1 stopped by PID.

- ``Registry``: CNCF distribution (``docker-registry serve``). As the upstream it
  keeps its Apache-style access log on stdout (``access.log``), which is how the
  suite counts the bytes the proxies fetched; with ``proxy_remote`` it is
  distribution's own pull-through cache, the peer most users would pick.
- ``Nginx``: one process (``daemon off; master_process off;``, so it stays root
  and can read any file) serving a directory with ``sendfile on``: what this
  machine can do for one file over loopback.
- ``Cache``: ``python -m registry_cache serve`` with docker.io pointed at the
  local upstream and every other public default removed, so nothing can leave
  the machine.

Every process starts in its own session; ``stop()`` signals that process group
only (SIGTERM, then SIGKILL). ``stop_all()`` is the last resort of the runner
(errors, Ctrl-C) and of ``atexit``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import registry_cache
from registry_cache.digest import Digest
from registry_cache.store.layout import Layout

from .tlscerts import Certificate, client_context

LOOPBACK = "127.0.0.1"
_PORT_RANGE = (20000, 32000)  # below the ephemeral range: no outgoing socket takes them
_handed_out: set[int] = set()
_live: list[subprocess.Popen[bytes]] = []
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# Variables that would reroute a child's traffic or its configuration.
_DROP_ENV = ("REGISTRY_", "DOCKERHUB_", "GHCR_", "QUAY_", "PYTHONPATH")
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


class StartError(RuntimeError):
    """A server did not come up; the message ends with the tail of its log."""


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago and is new to this process."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(*_PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise StartError("no free port on 127.0.0.1")


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status ``GET url`` answers, or None when nothing answers."""
    try:
        with _opener_for(url).open(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _opener_for(url: str) -> urllib.request.OpenerDirector:
    context = client_context() if url.startswith("https:") else None
    if context is None:
        return _opener
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )


def clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in _PROXY_VARS and not k.startswith(_DROP_ENV)
    }


def find_binary(name: str) -> str | None:
    """``which`` that also looks in the sbin directories (nginx lives in /usr/sbin)."""
    return shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")


def stop_all() -> None:
    """Stop every server this process started that still runs."""
    for proc in list(_live):
        _terminate(proc, grace=3.0)
    _live.clear()


atexit.register(stop_all)


def track(proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """Have ``stop_all`` stop ``proc`` too (one started elsewhere in its own session)."""
    _live.append(proc)
    return proc


def spawn(
    argv: list[str],
    *,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin: int = subprocess.DEVNULL,
    stdout: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, stderr (and stdout, unless ``stdout`` says
    otherwise, e.g. PIPE) appended to ``log``; stopped by ``terminate`` (or
    ``stop_all``) by its PID's process group."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=out if stdout is None else stdout,
            stderr=out,
            cwd=cwd,
            env=env if env is not None else clean_env(),
            start_new_session=True,
        )
    _live.append(proc)
    return proc


def terminate(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM ``proc``'s process group, SIGKILL after ``grace`` s; reaped either way."""
    _terminate(proc, grace)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # Only while unreaped, so the pid (= its process group: own session) is still ours.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=10)
    if proc in _live:
        _live.remove(proc)


class Server:
    """One process on ``127.0.0.1:port``; subclasses give the command and config."""

    name = "server"
    probe = "/"

    def __init__(self, workdir: Path, *, host: str = LOOPBACK) -> None:
        self.workdir = workdir
        self.host = host  # 127.0.0.1, or another loopback address inside a namespace
        self.port = 0
        self.log_path = workdir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._proc.pid

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write configuration for ``self.port`` (called before every launch)."""

    def stdout_path(self) -> Path:
        return self.log_path

    def env(self) -> dict[str, str]:
        return clean_env()  # e.g. REGISTRY_* would override distribution's config file

    def cwd(self) -> Path:
        return self.workdir

    def start(self, timeout: float = 30.0) -> Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            self.port = free_port()
            self.prepare()
            try:
                self._launch(timeout)
                return self
            except StartError as exc:
                if attempt == 2 or "address already in use" not in str(exc).lower():
                    raise
        raise AssertionError("unreachable")

    def _launch(self, timeout: float) -> None:
        out = self.stdout_path().open("ab")
        err = self.log_path.open("ab") if self.stdout_path() != self.log_path else None
        try:
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err if err is not None else subprocess.STDOUT,
                cwd=self.cwd(),
                env=self.env(),
                start_new_session=True,
            )
        finally:
            out.close()
            if err is not None:
                err.close()
        _live.append(self._proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise StartError(f"{self.name} exited with {code}:\n{self.log_tail()}")
            if http_status(self.url + self.probe, timeout=1.0) is not None:
                return
            time.sleep(0.05)
        self.stop()
        raise StartError(f"{self.name} did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self._proc is not None:
            _terminate(self._proc, grace=10.0)
            self._proc = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Registry(Server):
    """``docker-registry serve``: the upstream, or distribution's proxy over ``proxy_remote``."""

    probe = "/v2/"

    def __init__(
        self,
        workdir: Path,
        *,
        proxy_remote: str | None = None,
        host: str = LOOPBACK,
        storage: Path | None = None,
    ) -> None:
        self.name = "distribution-proxy" if proxy_remote else "upstream"
        super().__init__(workdir, host=host)
        self.proxy_remote = proxy_remote
        # Its own by default; replicas on one shared directory are given the same one.
        self.storage = storage if storage is not None else workdir / "storage"
        self.access_log = workdir / "access.log"
        self.config_path = workdir / "config.yml"

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "version": 0.1,
            # Defaults otherwise: info level, access log on (stdout).
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": f"{self.host}:{self.port}", "secret": "registry-cache-bench"},
            "health": {"storagedriver": {"enabled": False}},
        }
        if self.proxy_remote:
            cfg["proxy"] = {"remoteurl": self.proxy_remote}
        return cfg

    def has_blob(self, digest: str) -> bool:
        """Whether ``digest`` is in this registry's storage (the filesystem driver's layout)."""
        algorithm, _, hex_ = digest.partition(":")
        blobs = self.storage / "docker/registry/v2/blobs" / algorithm
        return (blobs / hex_[:2] / hex_ / "data").is_file()

    def prepare(self) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))

    def command(self) -> list[str]:
        return [find_binary("docker-registry") or "docker-registry", "serve", str(self.config_path)]

    def stdout_path(self) -> Path:
        return self.access_log


class Nginx(Server):
    """nginx serving ``root`` with sendfile, as root, in one process."""

    name = "nginx"

    def __init__(self, workdir: Path, root: Path) -> None:
        super().__init__(workdir)
        self.root = root
        self.config_path = workdir / "nginx.conf"

    def prepare(self) -> None:
        tmp = self.workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        temp_paths = "\n".join(
            f"  {kind}_temp_path {tmp / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        self.config_path.write_text(
            f"""daemon off;
master_process off;
worker_processes 1;
pid {self.workdir / "nginx.pid"};
error_log {self.log_path} warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  default_type application/octet-stream;
{temp_paths}
  server {{
    listen {LOOPBACK}:{self.port};
    root {self.root};
    location / {{ }}
  }}
}}
"""
        )

    def command(self) -> list[str]:
        binary = find_binary("nginx") or "nginx"
        # -e: the error log before the config is read (the default path may not be writable).
        return [
            binary,
            "-e",
            str(self.log_path),
            "-p",
            str(self.workdir),
            "-c",
            str(self.config_path),
        ]


@dataclass(frozen=True, slots=True)
class ClusterMember:
    """What makes a cache a replica: the shared ``--index`` and secret file; each one
    advertises its own URL. With a shared tier: its ``--storage`` flags and the AWS
    environment that reaches it."""

    index: str
    secret_file: Path
    storage_flags: tuple[str, ...] = ()
    storage_env: dict[str, str] = field(default_factory=dict)


class Balancer(Server):
    """nginx round robin over ``backends`` (``host:port``), one process, no buffering: bytes
    pass as they arrive, as a load balancer in front of replicas should be set up (the
    test harness's ``loadbalancer.py`` has the same ``location``, but nginx's default
    one-page reads)."""

    name = "balancer"
    probe = "/v2/"  # every backend answers it cheaply (a cache's "/" is its dashboard)

    def __init__(self, workdir: Path, backends: Sequence[str]) -> None:
        super().__init__(workdir)
        self.backends = list(backends)
        self.config_path = workdir / "nginx.conf"

    def prepare(self) -> None:
        tmp = self.workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        temp_paths = "\n".join(
            f"  {kind}_temp_path {tmp / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        servers = "\n".join(f"    server {backend} max_fails=0;" for backend in self.backends)
        self.config_path.write_text(
            f"""daemon off;
master_process off;
worker_processes 1;
pid {self.workdir / "nginx.pid"};
error_log {self.log_path} warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
{temp_paths}
  upstream replicas {{
{servers}
    keepalive 32;
  }}
  server {{
    listen {LOOPBACK}:{self.port};
    location / {{
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_buffering off;
      proxy_request_buffering off;
      # Unbuffered, nginx reads at most this much per read: its default (one page)
      # makes it the slowest part of a GiB download.
      proxy_buffer_size 1m;
      proxy_buffers 4 1m;  # unused unbuffered, but nginx checks these against the size
      proxy_busy_buffers_size 2m;
      proxy_read_timeout 300s;
      proxy_next_upstream error timeout;
    }}
  }}
}}
"""
        )

    def command(self) -> list[str]:
        binary = find_binary("nginx") or "nginx"
        return [
            binary,
            "-e",
            str(self.log_path),
            "-p",
            str(self.workdir),
            "-c",
            str(self.config_path),
        ]

    def errors(self) -> list[str]:
        """Its error log's ``[error]``/``[crit]`` lines (a backend that failed a request)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if "[error]" in line or "[crit]" in line]


class Cache(Server):
    """registry-cache over ``upstream_url`` (as docker.io), with its own data directory;
    serving HTTPS with ``tls`` (trusted by the suite's clients: ``tlscerts.trust``); a
    replica with ``cluster``; more ``serve`` flags in ``extra``."""

    name = "registry-cache"
    probe = "/v2/"

    def __init__(
        self,
        workdir: Path,
        upstream_url: str,
        *,
        workers: int = 1,
        tag_ttl: str = "1h",
        tls: Certificate | None = None,
        upstream_settings: dict[str, Any] | None = None,
        cluster: ClusterMember | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        super().__init__(workdir)
        self.upstream_url = upstream_url
        self.cluster = cluster
        self.extra = tuple(extra)
        # More settings of the upstream (e.g. read_timeout), through a config file.
        self.upstream_settings = upstream_settings
        self.workers = workers
        self.tag_ttl = tag_ttl
        self.tls = tls
        self.data_dir = workdir / "data"
        self.cwd_dir = workdir / "cwd"  # empty: no stray .env or ./data is picked up

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "registry_cache",
            "serve",
            "--listen",
            f"{LOOPBACK}:{self.port}",
            "--data-dir",
            str(self.data_dir),
            "--upstream",
            f"docker.io={self.upstream_url}",
            "--upstream",
            "ghcr.io=none",
            "--upstream",
            "quay.io=none",
            "--tag-ttl",
            self.tag_ttl,
            "--workers",
            str(self.workers),
            *(
                ["--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]
                if self.tls
                else []
            ),
            *(["--config", str(self.config_path)] if self.upstream_settings else []),
            *self._cluster_flags(),
            *self.extra,
        ]

    def _cluster_flags(self) -> list[str]:
        if self.cluster is None:
            return []
        secret = str(self.cluster.secret_file)
        return [
            "--index",
            self.cluster.index,
            "--advertise",
            self.url,
            "--cluster-secret-file",
            secret,
            *self.cluster.storage_flags,
        ]

    @property
    def config_path(self) -> Path:
        return self.workdir / "config.yml"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def has_blob(self, digest: str) -> bool:
        """Whether ``digest`` is committed in the data directory (store.layout)."""
        return Layout(self.data_dir).blob(Digest.parse(digest)).is_file()

    def prepare(self) -> None:
        self.cwd_dir.mkdir(parents=True, exist_ok=True)
        if self.upstream_settings:
            docker_io = {"url": self.upstream_url, **self.upstream_settings}
            config = {"upstreams": {"docker.io": docker_io}}
            self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def env(self) -> dict[str, str]:
        return product_env() | (self.cluster.storage_env if self.cluster else {})

    def cwd(self) -> Path:
        return self.cwd_dir


def product_env() -> dict[str, str]:
    """``clean_env()`` for a child that runs the measured ``registry_cache``: the directory
    it was imported from (a checkout's src) first on PYTHONPATH."""
    env = clean_env()
    env["PYTHONPATH"] = str(Path(registry_cache.__file__).resolve().parents[1])
    return env
