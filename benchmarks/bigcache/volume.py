"""Bounded disk for a million files: a private ext4 image with inline data.

A million tiny files on the machine's file system cost a 4 KiB block each (4 GB).
On an ext4 made with ``inline_data`` a file of up to ~60 bytes lives in its inode,
so the 1M-object data set takes about 1 GB (the inode table, plus a block per
manifest). The image is sparse, mounted with ``-o loop`` inside a private mount
namespace that the benchmark re-executes itself in (``unshare -m``): nothing
outside sees the mount, and it goes away with the benchmark's last process, even
after a ``kill -9``. Needs root; without it the data sets go on the plain disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

IN_NAMESPACE = "BIGCACHE_MOUNT_NAMESPACE"  # set in the re-executed benchmark
IMAGE_BYTES = 64 << 30  # apparent size; sparse, so only what is written counts


def can_mount() -> bool:
    return (
        os.geteuid() == 0
        and shutil.which("unshare") is not None
        and shutil.which("mkfs.ext4") is not None
    )


def in_namespace() -> bool:
    return os.environ.get(IN_NAMESPACE) == "1"


def reexec(argv: Sequence[str]) -> int:
    """Run ``python -m benchmarks.bigcache ARGV`` again in a private mount namespace."""
    env = {**os.environ, IN_NAMESPACE: "1"}
    command = ["unshare", "-m", "--propagation", "private"]
    command += [sys.executable, "-m", "benchmarks.bigcache", *argv]
    # unshare execs the benchmark: the child is the run itself. A SIGTERM or SIGINT
    # to this process is passed on to it (it stops its servers), and waited for.
    proc = subprocess.Popen(command, env=env)

    def forward(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return proc.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Volume:
    """An ext4 image mounted at ``mountpoint`` (call inside the private namespace)."""

    def __init__(self, image: Path, mountpoint: Path, *, inodes: int) -> None:
        self.image = image
        self.mountpoint = mountpoint
        self.inodes = inodes
        self.mounted = False

    def mount(self) -> Path:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        with open(self.image, "wb") as handle:
            handle.truncate(IMAGE_BYTES)
        subprocess.run(
            [
                "mkfs.ext4", "-q", "-F", "-m", "0", "-O", "inline_data", "-I", "256",
                "-N", str(self.inodes), "-J", "size=64", "-E", "lazy_itable_init=1,nodiscard",
                str(self.image),
            ],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        subprocess.run(
            ["mount", "-o", "loop,noatime", str(self.image), str(self.mountpoint)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.mounted = True
        return self.mountpoint

    def disk_bytes(self) -> int:
        """What the image really takes on the machine's disk."""
        return os.stat(self.image).st_blocks * 512

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.mountpoint)], check=False, timeout=120)
            self.mounted = False
        self.image.unlink(missing_ok=True)
