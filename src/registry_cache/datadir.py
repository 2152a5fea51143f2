"""Is the data directory usable? Checked once by every command that opens it.

``serve``, ``warm`` (filling the directory itself) and ``cache …`` call ``check``
before anything opens SQLite, so a directory that is read-only, full, missing or a
file is one line naming the path (absolute) and where it was configured, instead
of a traceback from deep inside the index. Commands that only read (``cache ls``,
``cache du``) accept a read-only directory and open the index read-only.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

# Below this much free space the server could not even write its index: "full".
MIN_FREE_BYTES = 1 << 20
_PROBE = b"\0" * 4096


class DataDirError(Exception):
    """The data directory cannot be used as asked; the message is one line."""


@dataclass(frozen=True, slots=True)
class DataDir:
    path: Path  # absolute
    writable: bool


def check(
    path: Path,
    *,
    origin: str,
    write: bool,
    create: bool = False,
    need_space: bool = False,
) -> DataDir:
    """Check ``path`` (configured by ``origin``, e.g. ``--data-dir d``).

    ``create``: make it when missing (``serve``, ``warm``); ``write``: it must be
    writable; ``need_space``: and not full (what frees space, like ``cache gc``,
    must still run on a full disk).
    """
    root = path.absolute()
    where = f"data directory {root} ({origin})"
    if root.exists() and not root.is_dir():
        raise DataDirError(f"{where}: not a directory")
    if not root.exists():
        if not create:
            raise DataDirError(f"{where}: does not exist")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataDirError(f"{where}: cannot create it: {_reason(exc)}") from None
    problem = _write_problem(root)
    if write and problem is not None:
        raise DataDirError(f"{where}: {problem}")
    if need_space:
        free = _free_bytes(root)
        if free < MIN_FREE_BYTES:
            raise DataDirError(f"{where}: the file system is full ({free // 1024} KiB free)")
    return DataDir(root, writable=problem is None)


def _write_problem(root: Path) -> str | None:
    """None if a file can be created and written in ``root``, else why not.

    A real write, not ``os.access``: root passes every permission check, but not a
    read-only mount or a full file system.
    """
    import tempfile  # lazily: datadir is imported by every configured command

    try:
        fd, name = tempfile.mkstemp(prefix=".write-probe-", dir=root)
    except OSError as exc:
        return _reason(exc)
    try:
        os.write(fd, _PROBE)
        os.fsync(fd)
    except OSError as exc:
        return _reason(exc)
    finally:
        os.close(fd)
        os.unlink(name)
    return None


def _free_bytes(root: Path) -> int:
    st = os.statvfs(root)
    return st.f_bavail * st.f_frsize


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "not writable (permission denied)"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the file system is full"
    return exc.strerror or str(exc)
