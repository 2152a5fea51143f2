"""A real Docker daemon (20.10) for client tests, plus the ``docker`` CLI to drive it.

Contract:
- ``Dockerd(daemon_json, hosts_file).start()`` makes a short state dir
  ``/tmp/rc-dkd-XXXXXXXX`` (dockerd puts its managed containerd's sockets under the
  exec root; unix socket paths must stay under 108 bytes) and runs
  ``dockerd --config-file DAEMON_JSON --iptables=false --ip6tables=false
  --bridge=none --storage-driver=vfs --data-root D/data --exec-root D/exec
  --pidfile D/docker.pid -H unix://D/docker.sock`` under a private /etc/hosts
  (the daemon is what resolves and pulls, so a fallback to Docker Hub resolves
  to 127.0.0.1 and fails locally). It returns once ``GET /_ping`` answers OK.
  Output goes to ``D/dockerd.log``.
- ``docker(*args, env=None)`` runs the CLI against that socket with a private, empty
  ``DOCKER_CONFIG`` (no credential helpers, no stored logins); ``env`` adds variables
  (the caller's own ``DOCKER_*`` never leak in). The 20.10 CLI that
  matches the daemon is preferred when installed as ``/usr/bin/docker``.
- ``stop()`` SIGTERMs the daemon's process group (dockerd and its managed
  containerd), SIGKILLs after a grace period, and removes the state dir.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import proc as procs
from .clients import ClientError, failure_message
from .service import HostsDaemon

DOCKERD = "dockerd"
MATCHING_CLI = Path("/usr/bin/docker")  # the docker.io package's CLI, same version as dockerd


def docker_cli() -> str | None:
    if MATCHING_CLI.exists():
        return str(MATCHING_CLI)
    return shutil.which("docker")


def dockerd_available() -> bool:
    return shutil.which(DOCKERD) is not None and docker_cli() is not None


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def _ping(path: Path) -> bool:
    if not path.exists():
        return False
    conn = _UnixHTTPConnection(path, timeout=2.0)
    try:
        conn.request("GET", "/_ping")
        resp = conn.getresponse()
        return resp.status == 200 and resp.read() == b"OK"
    except OSError:
        return False
    finally:
        conn.close()


class Dockerd(HostsDaemon):
    """One dockerd in its own state dir; see the module docstring (start and stop:
    ``service.HostsDaemon``)."""

    name = "dockerd"
    dir_prefix = "rc-dkd-"
    start_timeout = 30.0
    stop_grace = 15.0
    poll_interval = 0.1

    def __init__(
        self,
        daemon_json: Path,
        hosts_file: Path,
        docker_etc: Path | None = None,
        storage_driver: str = "vfs",
    ) -> None:
        super().__init__(hosts_file)
        self.daemon_json = daemon_json
        # vfs works everywhere but copies a whole image per layer and per container;
        # overlay2 (where the kernel and file system allow it) makes builds cheap.
        self.storage_driver = storage_driver
        # Bind-mounted over /etc/docker inside the daemon's own mount namespace, e.g. to
        # hold certs.d/<host:port>/ca.crt (dockerd reads registry CAs only from there).
        self.docker_etc = docker_etc

    @property
    def socket_path(self) -> Path:
        return self._path("docker.sock")

    # -- lifecycle (HostsDaemon) -------------------------------------------------
    def prepare(self) -> None:
        self._path("cli").mkdir()

    def argv(self) -> list[str]:
        if self.docker_etc is not None:
            bind = 'mount --bind "$1" /etc/docker || exit 125; shift; exec "$@"'
            return ["sh", "-c", bind, "sh", str(self.docker_etc), *self._dockerd_argv()]
        return self._dockerd_argv()

    def _dockerd_argv(self) -> list[str]:
        return [
            DOCKERD,
            "--config-file",
            str(self.daemon_json),
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            f"--storage-driver={self.storage_driver}",
            "--data-root",
            str(self._path("data")),
            "--exec-root",
            str(self._path("exec")),
            "--pidfile",
            str(self._path("docker.pid")),
            "-H",
            f"unix://{self.socket_path}",
        ]

    def ready(self) -> bool:
        return _ping(self.socket_path)

    def docker(
        self,
        *args: str,
        timeout: float = 120.0,
        check_rc: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``docker -H unix://SOCK *args`` with a private, empty DOCKER_CONFIG (and
        ``env`` on top, e.g. ``DOCKER_BUILDKIT=0``)."""
        cli = docker_cli()
        if cli is None:
            raise RuntimeError("no docker CLI installed")
        cmd = [cli, "-H", f"unix://{self.socket_path}", *args]
        run_env = procs.clean_env(env, drop_prefixes=("DOCKER_",))
        run_env["DOCKER_CONFIG"] = str(self._path("cli"))
        result = subprocess.run(
            cmd,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check_rc and result.returncode != 0:
            raise ClientError(
                f"{failure_message(result, ' '.join(cmd))}\n"
                f"dockerd log (tail):\n{self.log_text()[-3000:]}"
            )
        return result

    def image_inspect(self, ref: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.docker("image", "inspect", ref).stdout)
        return data[0]
