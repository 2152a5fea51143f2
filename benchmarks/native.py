"""The suite's small C helpers (``benchmarks/native/*.c``), built at run time with gcc.

Python cannot read a socket 32 KiB at a time at a few GB/s without becoming the
figure it measures, and cannot forward packets at 400 Mbit/s; a page of C can.
Sources are committed; binaries are built once per process into a directory the
caller owns (the run's workdir) and never installed anywhere.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from .servers import find_binary

SOURCES = Path(__file__).resolve().parent / "native"
_lock = threading.Lock()
_built: dict[tuple[str, Path], Path] = {}


class NativeError(RuntimeError):
    pass


def compiler() -> str | None:
    return find_binary("gcc") or find_binary("cc")


def build(name: str, into: Path) -> Path:
    """``into/NAME`` compiled from ``native/NAME.c`` (once per process and directory)."""
    source = SOURCES / f"{name}.c"
    if not source.is_file():
        raise NativeError(f"no source {source}")
    with _lock:
        key = (name, into)
        if key in _built:
            return _built[key]
        cc = compiler()
        if cc is None:
            raise NativeError("gcc is not installed (scripts/install-test-deps.sh)")
        into.mkdir(parents=True, exist_ok=True)
        binary = into / name
        argv = [cc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(binary), str(source)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise NativeError(f"building {source.name}: {done.stderr.strip()[-800:]}")
        _built[key] = binary
        return binary
