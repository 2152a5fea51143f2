"""Clients that could fall back to a public registry run with a private /etc/hosts.

skopeo, containerd and ctr are pointed at 127.0.0.1 only, but a mistake in their
configuration could make them try a public registry. Each therefore runs as
``unshare -m sh -c 'mount --bind HOSTS /etc/hosts && exec "$@"'``: inside that
mount namespace every public registry name resolves to 127.0.0.1, so such a
fallback fails on this machine instead of leaving it. The machine's own
/etc/hosts is never touched; ``exec`` keeps the client's PID the one started.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .servers import LOOPBACK, clean_env, find_binary

PUBLIC_REGISTRY_NAMES = (
    "registry-1.docker.io",
    "docker.io",
    "index.docker.io",
    "auth.docker.io",
    "production.cloudflare.docker.com",
    "registry.docker.io",
    "ghcr.io",
    "pkg-containers.githubusercontent.com",
    "quay.io",
    "cdn.quay.io",
    "registry.k8s.io",
    "gcr.io",
    "mcr.microsoft.com",
    "public.ecr.aws",
)
_SHIM = 'mount --bind "$1" /etc/hosts || exit 125; shift; exec "$@"'


class HermeticError(RuntimeError):
    pass


def write_hosts(path: Path) -> Path:
    """A hosts(5) file mapping localhost and every public registry name to 127.0.0.1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = " ".join(("localhost", *PUBLIC_REGISTRY_NAMES))
    path.write_text(f"# benchmarks/hermetic.py\n{LOOPBACK} {names}\n::1 ip6-localhost\n")
    return path


def command(argv: Sequence[str], hosts: Path) -> list[str]:
    """``argv`` run under ``hosts`` bind-mounted on /etc/hosts in a new mount namespace."""
    unshare = find_binary("unshare") or "unshare"
    return [unshare, "-m", "sh", "-c", _SHIM, "sh", str(hosts), *argv]


@functools.cache
def unavailable(workdir: Path) -> str | None:
    """None when private mount namespaces work here (root), else why not."""
    if os.geteuid() != 0:
        return "needs root (a private /etc/hosts in a mount namespace)"
    if find_binary("unshare") is None:
        return "unshare (util-linux) is not installed"
    hosts = write_hosts(workdir / "hosts-probe")
    probe = command(["grep", "-q", "registry-1.docker.io", "/etc/hosts"], hosts)
    done = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        return f"mount namespaces do not work here: {done.stderr.strip()[-200:]}"
    return None


def run(
    argv: Sequence[str], hosts: Path, *, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion under ``hosts``; output captured as text."""
    return subprocess.run(
        command(argv, hosts),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env if env is not None else clean_env(),
        stdin=subprocess.DEVNULL,
    )
