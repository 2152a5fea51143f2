"""Run a command against a data directory that is read-only or full, for real, without
touching the machine: the mount lives in a private mount namespace (``unshare -m``)
that ends with the command. Root ignores permission bits, so "read-only" is a
read-only bind mount (EROFS for everyone), and "full" is a tiny tmpfs filled up.

- ``readonly_argv(dir, cmd)``: ``cmd`` sees ``dir`` bind-mounted read-only on itself.
- ``full_argv(dir, cmd)``: ``cmd`` sees a 256 KiB tmpfs on ``dir`` with no space left.
- ``available(tmp)``: mounts are possible here (root, util-linux unshare).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tests.harness import tmpfs

# sh -c SCRIPT sh DIR CMD...: mount, then become CMD (same pid).
_READONLY = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
_FULL = (
    'mount -t tmpfs -o size=256k tmpfs "$1" || exit 125; '
    'head -c 1M /dev/zero > "$1/.filler" 2>/dev/null; '
    'shift; exec "$@"'
)


def available(tmp: Path) -> bool:
    return tmpfs.available(tmp)


def readonly_argv(directory: Path, cmd: Sequence[str]) -> list[str]:
    return ["unshare", "-m", "sh", "-c", _READONLY, "sh", str(directory), *cmd]


def full_argv(directory: Path, cmd: Sequence[str]) -> list[str]:
    return ["unshare", "-m", "sh", "-c", _FULL, "sh", str(directory), *cmd]
