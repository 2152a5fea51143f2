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
- ``docker(*args)`` runs the CLI against that socket with a private, empty
  ``DOCKER_CONFIG`` (no credential helpers, no stored logins). The 20.10 CLI that
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
import tempfile
import time
from pathlib import Path
from typing import Any

from . import proc as procs
from .clients import ClientError
from .netns import start_in_hosts_namespace

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


class Dockerd:
    """One dockerd in its own state dir; see the module docstring."""

    def __init__(self, daemon_json: Path, hosts_file: Path) -> None:
        self.daemon_json = daemon_json
        self.hosts_file = hosts_file
        self.dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def _path(self, name: str) -> Path:
        if self.dir is None:
            raise RuntimeError("dockerd is not started")
        return self.dir / name

    @property
    def socket_path(self) -> Path:
        return self._path("docker.sock")

    @property
    def log_path(self) -> Path:
        return self._path("dockerd.log")

    def argv(self) -> list[str]:
        return [
            DOCKERD,
            "--config-file",
            str(self.daemon_json),
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--storage-driver=vfs",
            "--data-root",
            str(self._path("data")),
            "--exec-root",
            str(self._path("exec")),
            "--pidfile",
            str(self._path("docker.pid")),
            "-H",
            f"unix://{self.socket_path}",
        ]

    def start(self, timeout: float = 30.0) -> Dockerd:
        if self._proc is not None:
            raise RuntimeError("dockerd already running")
        self.dir = Path(tempfile.mkdtemp(prefix="rc-dkd-", dir="/tmp"))
        self._path("cli").mkdir()
        with self.log_path.open("ab") as log:
            self._proc = start_in_hosts_namespace(
                self.argv(),
                self.hosts_file,
                workdir=self.dir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not _ping(self.socket_path):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log_text = self.log_text()
                self.stop()
                raise RuntimeError(f"dockerd did not come up\n{log_text[-4000:]}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            procs.terminate(self._proc, grace=15.0)
            self._proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> Dockerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (FileNotFoundError, RuntimeError):
            return ""

    def docker(
        self, *args: str, timeout: float = 120.0, check_rc: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``docker -H unix://SOCK *args`` with a private, empty DOCKER_CONFIG."""
        cli = docker_cli()
        if cli is None:
            raise RuntimeError("no docker CLI installed")
        cmd = [cli, "-H", f"unix://{self.socket_path}", *args]
        env = procs.clean_env(drop_prefixes=("DOCKER_",))
        env["DOCKER_CONFIG"] = str(self._path("cli"))
        result = subprocess.run(
            cmd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check_rc and result.returncode != 0:
            raise ClientError(
                f"{' '.join(cmd)} exited {result.returncode}\nstdout:\n{result.stdout}\n"
                f"stderr:\n{result.stderr}\ndockerd log (tail):\n{self.log_text()[-3000:]}"
            )
        return result

    def image_inspect(self, ref: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.docker("image", "inspect", ref).stdout)
        return data[0]
