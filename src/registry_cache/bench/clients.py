"""External pull clients the benchmark can time: docker, skopeo and ctr.

Each runs as a subprocess; a failure becomes a ``ClientFailed`` carrying the
client's last line of stderr. ``prune`` removes what a pull left behind so the
next pull fetches everything again (docker and containerd share layers between
references, so the upstream and cache references are all removed).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from .pullclient import parse_platform
from .registry import PullError

EXTERNAL_CLIENTS = ("docker", "skopeo", "ctr")


class ClientFailed(PullError):
    pass


class ExternalClient(Protocol):
    name: str

    async def pull(self, reference: str, *, plain_http: bool, verify_tls: bool) -> None: ...

    async def prune(self, references: Sequence[str]) -> None: ...

    def close(self) -> None: ...


async def run(argv: Sequence[str], *, what: str, check: bool = True) -> str:
    """Run a command; return its stdout. ``ClientFailed`` (one line) when it fails."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise ClientFailed(f"{argv[0]} not found on PATH") from None
    out, err = await proc.communicate()
    if check and proc.returncode != 0:
        lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
        last = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        raise ClientFailed(f"{what} failed: {last[:300]}")
    return out.decode(errors="replace")


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise ClientFailed(f"{binary} not found on PATH (install it or use --client builtin)")
    return path


class Docker:
    name = "docker"

    def __init__(self, platform: str) -> None:
        self.binary = require("docker")
        self.platform = platform

    async def pull(self, reference: str, *, plain_http: bool, verify_tls: bool) -> None:
        # plain http needs the registry in the daemon's insecure-registries
        # (127.0.0.0/8 is insecure by default); nothing can be set per pull.
        argv = [self.binary, "pull", "--quiet", "--platform", self.platform, reference]
        await run(argv, what=f"docker pull {reference}")

    async def prune(self, references: Sequence[str]) -> None:
        await run([self.binary, "rmi", "--force", *references], what="docker rmi", check=False)

    def close(self) -> None:
        pass


class Skopeo:
    """``skopeo copy`` into a ``dir:`` destination; ``prune`` empties it (skopeo
    reuses blobs already present in the destination directory)."""

    name = "skopeo"

    def __init__(self, platform: str, output: Path | None) -> None:
        self.binary = require("skopeo")
        self.os, self.arch, self.variant = parse_platform(platform)
        self._own = output is None
        self.dest = Path(tempfile.mkdtemp(prefix="rc-bench-skopeo-")) if output is None else output

    async def pull(self, reference: str, *, plain_http: bool, verify_tls: bool) -> None:
        self.dest.mkdir(parents=True, exist_ok=True)
        verify = "true" if verify_tls and not plain_http else "false"  # false also allows http
        argv = [
            self.binary,
            "copy",
            "--quiet",
            f"--src-tls-verify={verify}",
            "--override-os",
            self.os,
            "--override-arch",
            self.arch,
        ]
        if self.variant:
            argv += ["--override-variant", self.variant]
        argv += [f"docker://{reference}", f"dir:{self.dest}"]
        await run(argv, what=f"skopeo copy {reference}")

    async def prune(self, references: Sequence[str]) -> None:
        shutil.rmtree(self.dest, ignore_errors=True)

    def close(self) -> None:
        if self._own:
            shutil.rmtree(self.dest, ignore_errors=True)


class Ctr:
    """containerd's ``ctr images pull`` (set ``CONTAINERD_ADDRESS`` for a non-default socket)."""

    name = "ctr"

    def __init__(self, platform: str) -> None:
        self.binary = require("ctr")
        self.platform = platform

    async def pull(self, reference: str, *, plain_http: bool, verify_tls: bool) -> None:
        argv = [self.binary, "images", "pull", "--platform", self.platform]
        if plain_http:
            argv.append("--plain-http")
        elif not verify_tls:
            argv.append("--skip-verify")
        await run([*argv, reference], what=f"ctr images pull {reference}")

    async def prune(self, references: Sequence[str]) -> None:
        await run(
            [self.binary, "images", "rm", "--sync", *references], what="ctr images rm", check=False
        )

    def close(self) -> None:
        pass


def make_client(name: str, *, platform: str, output: Path | None) -> ExternalClient:
    if name == "docker":
        return Docker(platform)
    if name == "skopeo":
        return Skopeo(platform, output)
    if name == "ctr":
        return Ctr(platform)
    raise ValueError(f"unknown client {name!r}")
