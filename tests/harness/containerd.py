"""A real containerd 1.6 daemon for client tests, plus ``ctr`` to drive it.

Contract:
- ``Containerd(hosts_file).start()`` makes a short state dir ``/tmp/rc-ctr-XXXXXXXX``
  (unix socket paths must stay under 108 bytes, which pytest's tmp paths do not),
  writes ``config.toml`` there (root, state, sockets inside it; the CRI plugin
  disabled) and runs ``containerd --config`` under a private /etc/hosts
  (``netns.start_in_hosts_namespace``) until its gRPC socket accepts connections.
  Output goes to ``DIR/containerd.log``.
- ``ctr(*args)`` runs ``ctr --address SOCK -n NAMESPACE ...`` under the same private
  /etc/hosts: in containerd 1.6 ``ctr images pull`` resolves and fetches in the
  ``ctr`` process itself, so the client needs the namespace as much as the daemon.
- ``pull(ref, hosts_dir=..., platform=...)`` = ``ctr images pull --hosts-dir``
  with the ``native`` snapshotter (plain directories: works everywhere, and tests
  can read the unpacked files).
- ``content_digests()`` lists the namespace's content and checks each blob's
  sha256 on disk; ``snapshot_keys()`` lists committed snapshots (their keys are
  the layers' chain IDs); ``snapshot_dirs()`` are the native snapshot directories.
- ``stop()`` stops the daemon by PID (SIGTERM, then SIGKILL) and removes the state
  dir; it is idempotent and also the context manager's exit.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .clients import ClientError, require_ok
from .netns import run_in_hosts_namespace
from .service import HostsDaemon

CONTAINERD = "containerd"
CTR = "ctr"
SNAPSHOTTER = "native"


def containerd_available() -> bool:
    return shutil.which(CONTAINERD) is not None and shutil.which(CTR) is not None


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The OCI chain IDs of layers with these diff IDs (containerd's snapshot keys)."""
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return out


def _socket_accepts(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


class Containerd(HostsDaemon):
    """One containerd daemon in its own state dir; see the module docstring (start and stop:
    ``service.HostsDaemon``)."""

    name = "containerd"
    dir_prefix = "rc-ctr-"
    start_timeout = 20.0
    stop_grace = 10.0
    poll_interval = 0.05

    def __init__(self, hosts_file: Path, *, namespace: str = "rc-test") -> None:
        super().__init__(hosts_file)
        self.namespace = namespace

    # -- paths -----------------------------------------------------------------
    @property
    def address(self) -> Path:
        return self._path("containerd.sock")

    @property
    def root(self) -> Path:
        return self._path("root")

    def config_text(self) -> str:
        d = self.dir
        return "\n".join(
            [
                "version = 2",
                f'root = "{d}/root"',
                f'state = "{d}/state"',
                'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
                "[grpc]",
                f'  address = "{d}/containerd.sock"',
                "[ttrpc]",
                f'  address = "{d}/containerd.sock.ttrpc"',
                "[debug]",
                f'  address = "{d}/debug.sock"',
                "",
            ]
        )

    # -- lifecycle (HostsDaemon) -------------------------------------------------
    def prepare(self) -> None:
        self._path("config.toml").write_text(self.config_text())

    def argv(self) -> list[str]:
        return [CONTAINERD, "--config", str(self._path("config.toml"))]

    def ready(self) -> bool:
        return _socket_accepts(self.address)

    # -- ctr -------------------------------------------------------------------
    def ctr(
        self, *args: str, timeout: float = 120.0, check_rc: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``ctr --address SOCK -n NAMESPACE *args`` under the private /etc/hosts."""
        cmd = [CTR, "--address", str(self.address), "-n", self.namespace, *args]
        result = run_in_hosts_namespace(cmd, self.hosts_file, timeout=timeout)
        return require_ok(result, " ".join(cmd), tail=4000) if check_rc else result

    def pull(
        self,
        ref: str,
        *,
        hosts_dir: Path,
        platform: str | None = None,
        user: str | None = None,
        check_rc: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """``ctr images pull --hosts-dir DIR --snapshotter native [--platform P] [--user U:P] REF``.

        ``ctr images pull`` fetches and unpacks (for ``platform``, default the host's).
        """
        args = ["images", "pull", "--hosts-dir", str(hosts_dir), "--snapshotter", SNAPSHOTTER]
        if platform:
            args += ["--platform", platform]
        if user:
            args += ["--user", user]
        return self.ctr(*args, ref, check_rc=check_rc)

    def image_target(self, ref: str) -> str:
        """The digest the image record ``ref`` points at (``ctr images ls``)."""
        out = self.ctr("images", "ls").stdout
        for line in out.splitlines()[1:]:
            cols = line.split()
            if cols and cols[0] == ref:
                return cols[2]
        raise ClientError(f"no image {ref} in:\n{out}")

    def content_digests(self) -> set[str]:
        """Every blob in this namespace, each checked against its sha256 on disk."""
        out = self.ctr("content", "ls", "-q").stdout
        digests = {line.strip() for line in out.splitlines() if line.strip()}
        blobs = self.root / "io.containerd.content.v1.content" / "blobs" / "sha256"
        for digest in digests:
            path = blobs / digest.removeprefix("sha256:")
            actual = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
            if actual != digest:
                raise ClientError(f"content {digest} has sha256 {actual}")
        return digests

    def snapshot_keys(self) -> set[str]:
        """Keys of the committed snapshots (the unpacked layers' chain IDs)."""
        out = self.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "ls").stdout
        return {
            cols[0]
            for cols in (line.split() for line in out.splitlines()[1:])
            if cols and cols[-1] == "Committed"
        }

    def snapshot_dirs(self) -> list[Path]:
        """The native snapshotter's directories (one per snapshot, each a full rootfs)."""
        base = self.root / f"io.containerd.snapshotter.v1.{SNAPSHOTTER}" / "snapshots"
        return sorted(p for p in base.iterdir() if p.is_dir()) if base.exists() else []
