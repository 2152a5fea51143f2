"""What the real S3 engines (SeaweedFS, Ceph RGW) offer a test, and an S3 client for them.

Contract:
- ``S3Engine``: a started engine answers S3 (path-style, SigV4, region ``region``)
  on ``endpoint_url`` (``http://127.0.0.1:PORT``) for ``access_key``/``secret_key``,
  and ``bucket`` exists. ``stop()`` stops every process of the engine by PID (the S3
  endpoint goes away; objects stay); ``start()`` again brings it back on the same
  port with the same objects; ``kill()`` SIGKILLs them all; ``close()`` stops and
  removes the state dir (so does leaving a ``with`` block). ``pids`` are the
  engine's live processes; ``listen_ports`` the ports the harness gave it;
  ``start_seconds``/``stop_seconds`` record each run.
- ``client()``: a boto3 S3 client for the test's own checks (path-style, no
  retries, short timeouts, proxies ignored): independent of the product's S3 code.
- ``wait_s3(engine, timeout)``: poll until a probe object can be written to the
  bucket, read back and deleted (or, before the bucket exists, ``ListBuckets``).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import boto3  # type: ignore[import-untyped]  # the tests' own client; no stubs pinned
import botocore.config
import botocore.exceptions

from . import proc as procs
from .service import LoopbackService

if TYPE_CHECKING:
    from collections.abc import Sequence

DEFAULT_REGION = "us-east-1"
DEFAULT_BUCKET = "registry-cache"
PROBE_KEY = ".harness-ready"  # written, read and deleted by every start()


class S3Engine(LoopbackService):
    """A real S3 engine on 127.0.0.1; see the module docstring for the contract."""

    name: ClassVar[str]
    dir: Path | None

    def __init__(
        self,
        *,
        bucket: str = DEFAULT_BUCKET,
        access_key: str,
        secret_key: str,
        region: str = DEFAULT_REGION,
    ) -> None:
        self.bucket = bucket
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.port = 0
        self.dir = None
        self._proc = None
        self.start_seconds: list[float] = []
        self.stop_seconds: list[float] = []

    @property
    def endpoint_url(self) -> str:
        return self.url

    @property
    def processes(self) -> Sequence[subprocess.Popen[bytes]]:
        """The engine's child processes that are still held (running or not yet reaped)."""
        raise NotImplementedError

    @property
    def listen_ports(self) -> set[int]:
        """Every port the harness chose for the engine (each must be bound on 127.0.0.1)."""
        raise NotImplementedError

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.poll() is None]

    @property
    def running(self) -> bool:
        procs_ = self.processes
        return bool(procs_) and all(p.poll() is None for p in procs_)

    @property
    def pid(self) -> int | None:
        pids = self.pids
        return pids[0] if pids else None

    def kill(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop and remove the state dir; idempotent."""
        self.stop()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __exit__(self, *exc: object) -> None:
        self.close()

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this engine (the test's own, not the product's)."""
        return s3_client(self.endpoint_url, self.access_key, self.secret_key, self.region, **config)

    def restart(self) -> Self:
        self.stop()
        return self.start()


def s3_client(
    endpoint_url: str, access_key: str, secret_key: str, region: str, **config: Any
) -> Any:
    """A boto3 S3 client: path-style, SigV4, no retries, 10 s timeouts, no proxies."""
    options: dict[str, Any] = {
        "s3": {"addressing_style": "path"},
        "signature_version": "s3v4",
        "retries": {"max_attempts": 1, "mode": "standard"},
        "connect_timeout": 5,
        "read_timeout": 30,
        "proxies": {},
    }
    options.update(config)
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=botocore.config.Config(**options),
    )


def wait_s3(engine: S3Engine, timeout: float, *, bucket: bool = True) -> None:
    """Poll until the engine serves S3: the data path (``bucket``) or ListBuckets.

    With ``bucket``, ready means a probe object (``PROBE_KEY``) was written to the
    bucket, read back and deleted: SeaweedFS answers HeadBucket from its filer
    before its volume server is back, and then fails reads of existing objects
    with 500s for a moment. Raises ``RuntimeError`` at once when a process of the
    engine exits, and ``TimeoutError`` (with the last error) when ``timeout`` runs out.
    """
    client = engine.client(connect_timeout=1, read_timeout=5)
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        for proc in engine.processes:
            if proc.poll() is not None:
                raise RuntimeError(f"{engine.name}: process {proc.pid} exited ({proc.returncode})")
        try:
            if bucket:
                client.put_object(Bucket=engine.bucket, Key=PROBE_KEY, Body=b"ready")
                body = client.get_object(Bucket=engine.bucket, Key=PROBE_KEY)["Body"].read()
                client.delete_object(Bucket=engine.bucket, Key=PROBE_KEY)
                if body == b"ready":
                    return
                last = f"probe object read back as {body!r}"
            else:
                client.list_buckets()
                return
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{engine.name} gave no S3 answer within {timeout}s (last: {last})")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes], grace: float) -> None:
    """One SIGTERM to ``proc`` (by PID), then SIGKILL of its group after ``grace`` s.

    Exactly one: Ceph's daemons take SIGTERM with a one-shot handler, so a second
    one (``proc.terminate`` signals the group and the process) can land on the
    default action and kill the OSD before memstore has saved its objects.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    procs.kill9(proc)  # reaps; a no-op for a process that has exited


def stop_all(processes: Sequence[subprocess.Popen[bytes]], grace: float) -> None:
    """``stop_process`` each in order, waiting for each."""
    for proc in processes:
        stop_process(proc, grace)
