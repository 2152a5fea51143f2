"""A cache whose data directory is a small tmpfs of its own (a private mount namespace).

The cache runs under ``unshare -m``; ``sh`` mounts the tmpfs and then execs the
cache, so the mount lives exactly as long as the cache's pid and nothing outside
the test sees it. The test reaches that file system through ``/proc/<pid>/root``
(``data_view``) and can change the mount from inside with ``in_mounts``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.harness.cache import CacheServer

SIZE = "32m"
# sh -c SCRIPT sh SIZE DIR CMD...: mount, then become the cache (same pid).
MOUNT_AND_EXEC = 'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@"'


def available(tmp: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp / "tmpfs-probe"
    probe.mkdir(exist_ok=True)
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", MOUNT_AND_EXEC, "sh", "1m", str(probe), "true"],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return result.returncode == 0


def wrap(cache: CacheServer, size: str = SIZE) -> CacheServer:
    """Make ``cache`` (not started yet) start on a fresh tmpfs of ``size``."""
    cache.command = [
        "unshare", "-m", "--propagation", "private",
        "sh", "-c", MOUNT_AND_EXEC, "sh", size, str(cache.data_dir),
        *cache.command,
    ]  # fmt: skip
    return cache


def data_view(cache: CacheServer) -> Path:
    """The cache's data directory as the cache sees it (its tmpfs)."""
    assert cache.pid is not None
    return Path(f"/proc/{cache.pid}/root") / cache.data_dir.relative_to("/")


def in_mounts(cache: CacheServer, *command: str) -> None:
    """Run ``command`` in the cache's mount namespace (e.g. a remount)."""
    assert cache.pid is not None
    subprocess.run(
        ["nsenter", "-t", str(cache.pid), "-m", *command],
        check=True, capture_output=True, timeout=10,
    )  # fmt: skip
