"""A Debian root filesystem from the machine's own apt mirror, for images no registry
can supply here (``docker import`` of the tarball makes a base image).

Contract:
- ``host_codename()``: this machine's Debian release (``VERSION_CODENAME``), so a
  base made from it has the same python3 as the test's venv (wheels built by that
  venv install in it).
- ``apt_mirror(codename)``: the first ``main`` archive URI apt is configured with
  for that suite (deb822 ``*.sources`` or one-line ``*.list`` under /etc/apt),
  never a security or updates suite; ``RuntimeError`` when there is none.
- ``debootstrap_tarball(dest, packages, workdir)``: ``debootstrap --variant=minbase
  --include=PACKAGES CODENAME ROOTFS MIRROR`` in ``workdir``, the package cache, apt
  lists and documentation removed, then ``tar -C ROOTFS -c .`` to ``dest`` (the rootfs is removed).
  Needs root. Raises ``RuntimeError`` with debootstrap's log tail on failure.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

DEBOOTSTRAP = "debootstrap"
APT = Path("/etc/apt")


def debootstrap_available() -> bool:
    return shutil.which(DEBOOTSTRAP, path="/usr/sbin:/sbin:/usr/bin:/bin") is not None


def host_codename(os_release: Path = Path("/etc/os-release")) -> str:
    for line in os_release.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME" and value.strip('"'):
            return value.strip('"')
    raise RuntimeError(f"{os_release} names no VERSION_CODENAME")


def _sources(apt: Path) -> list[tuple[str, list[str], list[str]]]:
    """(URI, suites, components) of every enabled ``deb`` source."""
    found: list[tuple[str, list[str], list[str]]] = []
    files = sorted(apt.glob("sources.list.d/*.sources"))
    for path in files:
        for stanza in path.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[0].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                found.append(
                    (uri, fields.get("suites", "").split(), fields.get("components", "").split())
                )
    lists = [apt / "sources.list", *sorted(apt.glob("sources.list.d/*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for raw in path.read_text().splitlines():
            words = raw.split("#", 1)[0].split()
            if len(words) >= 3 and words[0] == "deb":
                words = [w for w in words[1:] if not w.startswith("[")]
                found.append((words[0], [words[1]], words[2:]))
    return found


def apt_mirror(codename: str, apt: Path = APT) -> str:
    for uri, suites, components in _sources(apt):
        if codename in suites and "main" in components:
            return uri
    raise RuntimeError(f"no apt source under {apt} serves {codename} main")


def debootstrap_tarball(dest: Path, packages: Sequence[str], workdir: Path) -> Path:
    codename = host_codename()
    rootfs = workdir / "rootfs"
    log = workdir / "debootstrap.log"
    cmd = [
        DEBOOTSTRAP,
        "--variant=minbase",
        f"--include={','.join(packages)}",
        codename,
        str(rootfs),
        apt_mirror(codename),
    ]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    with log.open("wb") as out:
        result = subprocess.run(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=900, check=False
        )
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        shutil.rmtree(rootfs, ignore_errors=True)
        raise RuntimeError(f"{' '.join(cmd)} exited {result.returncode}\n{tail}")
    # What only apt needs (~95 MB), and what Debian's -slim images leave out (~50 MB:
    # documentation, manual pages, message translations).
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / leftover).glob("*"):
            if path.is_file():
                path.unlink()
    for docs in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
        shutil.rmtree(rootfs / docs, ignore_errors=True)
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(dest), "."], check=True, timeout=600)
    shutil.rmtree(rootfs, ignore_errors=True)
    return dest
