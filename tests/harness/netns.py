"""Run clients with a private /etc/hosts (mount namespace), never touching the real one.

Contract:
- ``hosts_entries(hosts)`` turns ``{"name": "ip"}`` or ``["name", ...]`` (→ 127.0.0.1)
  into a hosts table that ALWAYS also maps ``localhost`` and every public registry
  name in ``PUBLIC_REGISTRY_NAMES`` to 127.0.0.1, so a client falling back to a public
  registry fails locally instead of leaving the machine. A caller cannot map a
  public name elsewhere (``ValueError``).
- ``write_hosts_file(path, hosts)`` writes that table.
- ``run_in_hosts_namespace`` / ``start_in_hosts_namespace`` run ``cmd`` as
  ``unshare -m sh -c 'mount --bind HOSTS /etc/hosts && exec "$@"'``: the bind mount
  lives only in the new mount namespace (util-linux unshare makes it private), and
  ``exec`` keeps the Popen PID equal to the client's PID, so stopping it by PID works.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from .ports import LOOPBACK
from .proc import clean_env, track

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
    "cdn01.quay.io",
    "cdn02.quay.io",
    "cdn03.quay.io",
    "registry.k8s.io",
    "gcr.io",
    "mcr.microsoft.com",
    "public.ecr.aws",
)
_SHIM = 'mount --bind "$1" /etc/hosts || exit 125; shift; exec "$@"'

Hosts = Mapping[str, str] | Sequence[str]


def hosts_entries(hosts: Hosts) -> dict[str, str]:
    """Name → address, with localhost and the public registry names forced to 127.0.0.1."""
    table: dict[str, str] = {"localhost": LOOPBACK}
    if isinstance(hosts, Mapping):
        table.update(hosts)
    else:
        table.update(dict.fromkeys(hosts, LOOPBACK))
    for name in PUBLIC_REGISTRY_NAMES:
        if table.get(name, LOOPBACK) != LOOPBACK:
            raise ValueError(f"{name} must map to {LOOPBACK} in tests, not {table[name]}")
        table[name] = LOOPBACK
    return table


def hosts_text(hosts: Hosts) -> str:
    """The hosts(5) file for ``hosts`` (one line per address)."""
    by_addr: dict[str, list[str]] = {}
    for name, addr in hosts_entries(hosts).items():
        by_addr.setdefault(addr, []).append(name)
    lines = [f"{addr} {' '.join(names)}" for addr, names in by_addr.items()]
    return "\n".join(["# written by tests/harness/netns.py", *lines, "::1 ip6-localhost"]) + "\n"


def write_hosts_file(path: Path, hosts: Hosts) -> Path:
    """Write the hosts file for ``hosts`` to ``path`` and return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(hosts_text(hosts))
    return path


def namespace_command(cmd: Sequence[str], hosts_file: Path) -> list[str]:
    """The argv that runs ``cmd`` with ``hosts_file`` bind-mounted on /etc/hosts."""
    return ["unshare", "-m", "sh", "-c", _SHIM, "sh", str(hosts_file), *cmd]


def run_in_hosts_namespace(
    cmd: Sequence[str],
    hosts: Hosts | Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    *,
    cwd: Path | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` to completion under a private /etc/hosts; capture text output.

    ``hosts`` is a name table (written to a temporary file) or an existing hosts file.
    ``env`` replaces the environment (default: this process's, without proxy vars).
    """
    with tempfile.TemporaryDirectory(prefix="hosts-") as tmp:
        hosts_file = (
            hosts if isinstance(hosts, Path) else write_hosts_file(Path(tmp) / "hosts", hosts)
        )
        return subprocess.run(
            namespace_command(cmd, hosts_file),
            env=dict(env) if env is not None else clean_env(),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            stdin=subprocess.DEVNULL,
        )


def start_in_hosts_namespace(
    cmd: Sequence[str],
    hosts: Hosts | Path,
    *,
    workdir: Path,
    env: Mapping[str, str] | None = None,
    stdout: IO[bytes] | int | None = None,
    stderr: IO[bytes] | int | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-running ``cmd`` (containerd, dockerd) under a private /etc/hosts.

    A name table is written to ``workdir/hosts``. The process leads its own session;
    stop it with ``proc.terminate(popen)`` (by PID and process group).
    """
    hosts_file = hosts if isinstance(hosts, Path) else write_hosts_file(workdir / "hosts", hosts)
    return track(
        subprocess.Popen(
            namespace_command(cmd, hosts_file),
            env=dict(env) if env is not None else clean_env(),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    )
