"""podman 4.3 for client tests: pulls into private storage under a private /etc/hosts.

Contract:
- ``Podman(registries_conf, hosts_file)`` owns a short state dir ``/tmp/rc-pod-XXXXXXXX``
  (created on first use, removed by ``cleanup()`` / the context manager) holding
  graph root, run root, tmp dir and a ``storage.conf`` (vfs) so the machine's
  storage is never touched.
- ``podman(*args)`` runs ``podman --root ... --runroot ... --storage-driver vfs
  --cgroup-manager cgroupfs --events-backend file --tmpdir ...`` with
  ``CONTAINERS_REGISTRIES_CONF`` = the given file and ``CONTAINERS_STORAGE_CONF`` =
  the private one, under a private /etc/hosts (so a fallback to the real registry
  fails locally). ``pull(ref)`` and ``image_inspect(ref)`` build on it.
- podman leaves no process behind after ``pull``; a run that hangs is killed by
  the subprocess timeout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .clients import require_ok
from .netns import run_in_hosts_namespace
from .proc import clean_env

PODMAN = "podman"


def podman_available() -> bool:
    return shutil.which(PODMAN) is not None


class Podman:
    """podman with private storage; see the module docstring."""

    def __init__(self, registries_conf: Path, hosts_file: Path) -> None:
        self.registries_conf = registries_conf
        self.hosts_file = hosts_file
        self._dir: Path | None = None

    @property
    def dir(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="rc-pod-", dir="/tmp"))
            for name in ("root", "run", "tmp"):
                (self._dir / name).mkdir()
            (self._dir / "storage.conf").write_text(
                "[storage]\n"
                'driver = "vfs"\n'
                f'graphroot = "{self._dir}/root"\n'
                f'runroot = "{self._dir}/run"\n'
            )
        return self._dir

    def cleanup(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Podman:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def podman(
        self, *args: str, timeout: float = 120.0, check_rc: bool = True
    ) -> subprocess.CompletedProcess[str]:
        d = self.dir
        cmd = [
            PODMAN,
            "--root",
            str(d / "root"),
            "--runroot",
            str(d / "run"),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--tmpdir",
            str(d / "tmp"),
            *args,
        ]
        env = clean_env(drop_prefixes=("CONTAINERS_", "REGISTRY_AUTH_FILE"))
        env["CONTAINERS_REGISTRIES_CONF"] = str(self.registries_conf)
        env["CONTAINERS_STORAGE_CONF"] = str(d / "storage.conf")
        result = run_in_hosts_namespace(cmd, self.hosts_file, env=env, timeout=timeout)
        return require_ok(result, " ".join(cmd)) if check_rc else result

    def pull(self, ref: str, *, check_rc: bool = True) -> subprocess.CompletedProcess[str]:
        return self.podman("pull", ref, check_rc=check_rc)

    def image_inspect(self, ref: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.podman("image", "inspect", ref).stdout)
        return data[0]
