"""A real S3 engine: Ceph's RADOS Gateway 16.2 (Debian ``radosgw``) on a throwaway cluster.

Contract (``S3Engine``, see ``s3engine``), plus:
- ``CephRGW().start()`` makes a short state dir ``/tmp/rc-rgw-XXXXXXXX`` and in it a
  single-node cluster as ``../shared/docs/test-harness.md`` describes: one monitor,
  one ``memstore`` OSD (RAM, no disk), no manager, no systemd, then ``radosgw`` with
  its beast frontend on 127.0.0.1 and a free port. Every daemon runs in the
  foreground as a child process (``-f``) of the test, as the test's own user. All
  their files (config, keyring, mon store, OSD store, admin sockets, logs, the
  cluster log, crash reports) stay in the state dir. Then ``radosgw-admin user
  create`` with ``access_key``/``secret_key`` and ``CreateBucket``. Ready in 2-6 s.
- Loopback only: ``public addr``/``cluster addr`` 127.0.0.1, ``ms bind ipv6 =
  false``, msgr2 only (one monitor port); the OSD picks its ports in Ceph's own
  6800-7300 range (outside the harness's free-port range) on 127.0.0.1.
- ``stop()``: SIGTERM by PID, RGW first, then the OSD (a clean shutdown: the
  memstore OSD writes its objects into the state dir, so ``start()`` again finds
  them), then the monitor; SIGKILL after ``grace``. ``kill()`` SIGKILLs all three
  (objects written since the last clean stop are then lost: memstore is RAM).
- Deleted objects stay in the OSD's RAM until RGW's garbage collection, which runs
  every few seconds here. An OSD holding a 256 MiB object peaks near 2 GB RSS:
  keep objects in tests at 64 MiB or less.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import ClassVar, Self

from . import proc as procs
from .ports import LOOPBACK, free_port, http_status
from .s3engine import DEFAULT_BUCKET, DEFAULT_REGION, S3Engine, stop_all, wait_s3

ACCESS_KEY = "RCRGWTESTACCESSKEY00"
SECRET_KEY = "rc-rgw-test-secret-key-00000000000000000"
RGW_NAME = "client.rgw.rc"
BINARIES = (
    "ceph-mon",
    "ceph-osd",
    "radosgw",
    "radosgw-admin",
    "ceph",
    "ceph-authtool",
    "monmaptool",
)
MEMSTORE_BYTES = 3 << 30  # the OSD's capacity (RAM is used only for what is stored)


def rgw_available() -> bool:
    """True when Ceph's mon, OSD, RGW and tools are installed."""
    return all(shutil.which(name) is not None for name in BINARIES)


def ceph_conf(d: Path, fsid: str, mon_port: int, rgw_port: int) -> str:
    """The cluster's ceph.conf: loopback only, fast to start, everything inside ``d``."""
    return f"""\
[global]
fsid = {fsid}
mon host = v2:{LOOPBACK}:{mon_port}
mon initial members = a
public addr = {LOOPBACK}
cluster addr = {LOOPBACK}
ms bind ipv6 = false
ms bind msgr1 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = {d}/keyring
run dir = {d}/run
admin socket = {d}/run/$name.asok
crash dir = {d}/crash
log file = {d}/log/$name.log
log to stderr = false
err to stderr = true
mon cluster log file = default={d}/log/cluster.$channel.log cluster={d}/log/cluster.log
mon data = {d}/mon/$cluster-$id
osd data = {d}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = {MEMSTORE_BYTES}
# A clean OSD shutdown, so memstore saves its objects and a restart finds them.
osd fast shutdown = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
# The default (1 s per map change) makes start-up take 15 s.
paxos propose interval = 0.1
paxos min wait = 0.01

[{RGW_NAME}]
rgw frontends = beast endpoint={LOOPBACK}:{rgw_port}
rgw data = {d}/rgw
rgw gc obj min wait = 5
rgw gc processor period = 5
rgw gc processor max time = 5
rgw enable usage log = false
# RGW may start before the OSD is up: retry its first RADOS ops soon (default 5 s).
objecter tick interval = 0.5
"""


class CephRGW(S3Engine):
    """One mon, one memstore OSD and one radosgw; see the module docstring."""

    name: ClassVar[str] = "rgw"
    start_timeout: ClassVar[float] = 90.0

    def __init__(
        self,
        *,
        bucket: str = DEFAULT_BUCKET,
        access_key: str = ACCESS_KEY,
        secret_key: str = SECRET_KEY,
        region: str = DEFAULT_REGION,
    ) -> None:
        super().__init__(bucket=bucket, access_key=access_key, secret_key=secret_key, region=region)
        self.mon_port = 0
        self._mon: subprocess.Popen[bytes] | None = None
        self._osd: subprocess.Popen[bytes] | None = None
        self._rgw: subprocess.Popen[bytes] | None = None

    # -- paths and processes -----------------------------------------------
    def _path(self, name: str) -> Path:
        if self.dir is None:
            raise RuntimeError("rgw was never started")
        return self.dir / name

    @property
    def conf_path(self) -> Path:
        return self._path("ceph.conf")

    @property
    def log_path(self) -> Path:
        """The RGW log (its access lines included); the others are in ``log/``."""
        return self._path(f"log/{RGW_NAME}.log")

    @property
    def listen_ports(self) -> set[int]:
        return {self.mon_port, self.port}

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in (self._mon, self._osd, self._rgw) if p is not None]

    def _env(self) -> dict[str, str]:
        return procs.clean_env(drop_prefixes=("CEPH_", "AWS_"))

    def _tool(self, *argv: str, timeout: float = 60.0) -> str:
        """Run a Ceph command-line tool against this cluster; return its stdout."""
        result = subprocess.run(
            [argv[0], "-c", str(self.conf_path), *argv[1:]],
            capture_output=True,
            text=True,
            env=self._env(),
            cwd=self.dir,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv[:3])} failed ({result.returncode}): {result.stderr[-2000:]}"
            )
        return result.stdout

    def _daemon(self, label: str, *argv: str) -> subprocess.Popen[bytes]:
        return procs.spawn(
            [argv[0], "-c", str(self.conf_path), *argv[1:], "-f"],
            stdout=self._path(f"log/{label}.out"),
            cwd=self.dir,
            env=self._env(),
        )

    # -- lifecycle ---------------------------------------------------------
    def start(self, timeout: float | None = None) -> Self:
        """First call: a new cluster, user and bucket. Later calls: the same cluster."""
        if self.processes:
            raise RuntimeError("rgw is already running")
        began = time.monotonic()
        timeout = self.start_timeout if timeout is None else timeout
        try:
            if self.dir is None:
                self._create(timeout)
            else:
                self._run_daemons()
                wait_s3(self, timeout)
        except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as exc:
            tail = self._log_tails()
            self.kill()
            raise RuntimeError(f"rgw did not start: {exc}\n{tail}") from exc
        self.start_seconds.append(time.monotonic() - began)
        return self

    def _create(self, timeout: float) -> None:
        self.dir = d = Path(tempfile.mkdtemp(prefix="rc-rgw-", dir="/tmp"))
        for sub in ("mon", "osd/ceph-0", "run", "log", "rgw", "crash"):
            (d / sub).mkdir(parents=True)
        fsid, osd_uuid = str(uuid.uuid4()), str(uuid.uuid4())
        self.mon_port, self.port = free_port(), free_port()
        self.conf_path.write_text(ceph_conf(d, fsid, self.mon_port, self.port))
        keyring = str(d / "keyring")
        # One keyring holds every entity; the monitor imports it at mkfs.
        entities = {
            "mon.": ["mon", "allow *"],
            "client.admin": ["mon", "allow *", "osd", "allow *", "mgr", "allow *"],
            "osd.0": ["mon", "allow profile osd", "osd", "allow *"],
            RGW_NAME: ["mon", "allow rw", "osd", "allow rwx"],
        }
        for i, (entity, caps) in enumerate(entities.items()):
            pairs = zip(caps[::2], caps[1::2], strict=True)
            cap_args = [arg for pair in pairs for arg in ("--cap", *pair)]
            create = ["--create-keyring"] if i == 0 else []
            self._tool("ceph-authtool", keyring, *create, "--gen-key", "-n", entity, *cap_args)
        monmap = str(d / "monmap")
        mon_addr = f"[v2:{LOOPBACK}:{self.mon_port}]"
        self._tool("monmaptool", "--create", "--fsid", fsid, "--addv", "a", mon_addr, monmap)
        self._tool("ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap, "--keyring", keyring)
        self._mon = self._daemon("mon", "ceph-mon", "-i", "a")
        self._tool("ceph", "--connect-timeout", "30", "osd", "new", osd_uuid, "0")
        self._tool("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
        self._osd = self._daemon("osd", "ceph-osd", "-i", "0")
        self._rgw = self._daemon("rgw", "radosgw", "-n", RGW_NAME)
        self._wait_http(timeout)
        self._tool(
            "radosgw-admin",
            "user",
            "create",
            "--uid",
            "registry-cache-test",
            "--display-name",
            "registry-cache test",
            "--access-key",
            self.access_key,
            "--secret-key",
            self.secret_key,
        )
        wait_s3(self, timeout, bucket=False)
        self.client().create_bucket(Bucket=self.bucket)
        wait_s3(self, timeout)

    def _run_daemons(self) -> None:
        self._mon = self._daemon("mon", "ceph-mon", "-i", "a")
        self._osd = self._daemon("osd", "ceph-osd", "-i", "0")
        self._rgw = self._daemon("rgw", "radosgw", "-n", RGW_NAME)

    def _wait_http(self, timeout: float) -> None:
        """Until the beast frontend answers at all (anonymous ListBuckets)."""
        deadline = time.monotonic() + timeout
        while http_status(f"{self.url}/", timeout=1.0) is None:
            for proc in self.processes:
                if proc.poll() is not None:
                    raise RuntimeError(f"process {proc.pid} exited ({proc.returncode})")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"radosgw did not answer within {timeout}s")
            time.sleep(0.05)

    def _log_tails(self) -> str:
        if self.dir is None:
            return ""
        parts = []
        for path in sorted((self.dir / "log").glob("*")):
            text = path.read_text(errors="replace")[-1500:]
            parts.append(f"--- {path.name}\n{text}")
        return "\n".join(parts)

    def stop(self, grace: float = 15.0) -> None:
        """RGW, then the OSD (it saves its objects), then the monitor; by PID."""
        if not self.processes:
            return
        began = time.monotonic()
        stop_all([p for p in (self._rgw, self._osd, self._mon) if p is not None], grace)
        self._mon = self._osd = self._rgw = None
        self.stop_seconds.append(time.monotonic() - began)

    def kill(self) -> None:
        for proc in self.processes:
            procs.kill9(proc)
        self._mon = self._osd = self._rgw = None
