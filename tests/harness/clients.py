"""Drive skopeo (a real Go client) against the upstreams or the cache.

Contract:
- ``skopeo_copy`` always runs skopeo inside a private mount namespace whose hosts
  file maps the public registry names (and any ``hosts`` given) to 127.0.0.1, with
  ``--insecure-policy``, ``--src-tls-verify=false`` and a hermetic, empty
  ``registries.conf`` unless one is given; so even a fallback cannot leave the
  machine. It returns the CompletedProcess (``check=True`` raises with the output).
- ``pulled_blobs(dir)`` reads a ``dir:`` destination, checks that every blob file's
  sha256 matches its name (so a corrupted pull fails) and returns their digests.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .netns import Hosts, run_in_hosts_namespace
from .proc import clean_env

SKOPEO = "skopeo"


def skopeo_available() -> bool:
    return shutil.which(SKOPEO) is not None


class ClientError(AssertionError):
    """A client command failed; the message carries its output."""


def failure_message(
    result: subprocess.CompletedProcess[str], what: str, *, tail: int | None = None
) -> str:
    """``WHAT exited N`` and the output (only the last ``tail`` characters of each stream)."""
    out, err = result.stdout, result.stderr
    if tail is not None:
        out, err = out[-tail:], err[-tail:]
    return f"{what} exited {result.returncode}\nstdout:\n{out}\nstderr:\n{err}"


def require_ok(
    result: subprocess.CompletedProcess[str], what: str, *, tail: int | None = None
) -> subprocess.CompletedProcess[str]:
    """``result``; ``ClientError`` with ``failure_message`` unless it exited 0."""
    if result.returncode != 0:
        raise ClientError(failure_message(result, what, tail=tail))
    return result


def skopeo_copy(
    src: str,
    dest: Path,
    *,
    creds: tuple[str, str] | None = None,
    all_platforms: bool = False,
    hosts: Hosts | Path = (),
    registries_conf: Path | None = None,
    extra: Sequence[str] = (),
    timeout: float = 120.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``skopeo copy SRC dir:DEST`` (``src`` like ``docker://127.0.0.1:P/library/test:1.0``)."""
    dest.mkdir(parents=True, exist_ok=True)
    env = clean_env()
    conf = registries_conf
    if conf is None:
        conf = dest.parent / f".{dest.name}-registries.conf"
        conf.write_text("# hermetic: no search registries, no mirrors\n")
    env["CONTAINERS_REGISTRIES_CONF"] = str(conf)
    # skopeo 1.9 ignores CONTAINERS_REGISTRIES_CONF (podman reads it): pass the flag too.
    cmd = [SKOPEO, "--registries-conf", str(conf), "--insecure-policy", "copy"]
    cmd += ["--src-tls-verify=false", "--retry-times", "0"]
    if creds is not None:
        cmd.append(f"--src-creds={creds[0]}:{creds[1]}")
    if all_platforms:
        cmd.append("--all")
    cmd += [*extra, src, f"dir:{dest}"]
    result = run_in_hosts_namespace(cmd, hosts, env=env, timeout=timeout)
    return require_ok(result, " ".join(cmd)) if check else result


def pulled_blobs(dest: Path) -> set[str]:
    """``sha256:<hex>`` of every blob in a skopeo ``dir:`` copy, each verified by content."""
    digests: set[str] = set()
    for path in dest.iterdir():
        name = path.name
        if len(name) != 64 or not all(c in "0123456789abcdef" for c in name):
            continue
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != name:
            raise ClientError(f"{path} has sha256 {h.hexdigest()}")
        digests.add(f"sha256:{name}")
    return digests


def pulled_manifest(dest: Path, instance: str | None = None) -> bytes:
    """The top ``manifest.json`` of a ``dir:`` copy, or a child's (``--all``) by digest."""
    if instance is None:
        return (dest / "manifest.json").read_bytes()
    return (dest / f"{instance.split(':', 1)[1]}.manifest.json").read_bytes()


def pulled_manifest_json(dest: Path, instance: str | None = None) -> dict[str, object]:
    data: dict[str, object] = json.loads(pulled_manifest(dest, instance))
    return data
