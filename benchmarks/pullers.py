"""Whole-image pulls with real clients, each run hermetically (hermetic.py).

- ``skopeo dir:``: ``skopeo copy docker://… dir:`` — skopeo 1.9 fetches layers one at a time.
- ``skopeo oci:``: ``skopeo copy docker://… oci:DIR:TAG`` — layers fetched in parallel, as
  containerd does (what a pull's wall time is about).
- ``ctr fetch``: ``ctr content fetch`` into a fresh containerd: every blob, in parallel
  (``ctr --debug``, for both: no progress display, whose 100 ms tick a fetch waits for).
- ``ctr pull``: ``ctr images pull`` into a fresh containerd: fetch, then unpack each layer
  (``native`` snapshotter: plain directories, works everywhere).
- ``builtin``: the project's own pull client (``registry_cache.bench.pullclient``).

Every pull starts from nothing: skopeo writes to a new directory, and containerd is a new
daemon with an empty state directory for every pull (started before, stopped after, not
timed), so nothing is served from a client's own store. containerd's root lives under the
given work directory (tmpfs in the suite, so a disk's erratic write speed stays out).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

from registry_cache.bench.pullclient import pull as builtin_pull

from . import hermetic
from .servers import clean_env, find_binary, spawn, terminate

SKOPEO_DIR = "skopeo dir:"
SKOPEO_OCI = "skopeo oci:"
CTR_FETCH = "ctr fetch"
CTR_PULL = "ctr pull"
BUILTIN = "builtin"
PULLERS = (SKOPEO_DIR, SKOPEO_OCI, CTR_FETCH, CTR_PULL, BUILTIN)
TIMEOUT = 600.0


class PullError(RuntimeError):
    pass


def missing(puller: str, work: Path) -> str | None:
    """None when ``puller`` can run here, else why not."""
    if puller == BUILTIN:
        return None
    tools = ("skopeo",) if puller.startswith("skopeo") else ("containerd", "ctr")
    for tool in tools:
        if find_binary(tool) is None:
            return f"{tool} is not installed"
    return hermetic.unavailable(work)


def pull(puller: str, registry: str, repo: str, tag: str, *, work: Path) -> float:
    """Seconds ``puller`` takes to pull ``registry/repo:tag`` (``registry``: http://host:port).

    Everything it writes goes under ``work`` and is removed afterwards."""
    host = registry.removeprefix("http://")
    work.mkdir(parents=True, exist_ok=True)
    target = work / "image"
    try:
        if puller == BUILTIN:
            started = time.perf_counter()
            asyncio.run(builtin_pull(f"{repo}:{tag}", registry, output=target))
            return time.perf_counter() - started
        hosts = hermetic.write_hosts(work / "hosts")
        if puller in (SKOPEO_DIR, SKOPEO_OCI):
            dest = f"dir:{target}" if puller == SKOPEO_DIR else f"oci:{target}:{tag}"
            return _skopeo(work / "skopeo", hosts, f"docker://{host}/{repo}:{tag}", dest)
        if puller in (CTR_FETCH, CTR_PULL):
            with Containerd(work / "containerd", hosts) as daemon:
                ref = f"{host}/{repo}:{tag}"
                return daemon.fetch(ref, host) if puller == CTR_FETCH else daemon.pull(ref, host)
        raise ValueError(f"unknown puller {puller}")
    finally:
        shutil.rmtree(target, ignore_errors=True)


def _skopeo(home: Path, hosts: Path, source: str, dest: str) -> float:
    """``skopeo copy`` with its own empty registries.conf and an accept-all policy."""
    home.mkdir(parents=True, exist_ok=True)
    conf, policy = home / "registries.conf", home / "policy.json"
    conf.write_text("# empty: no mirrors, no search registries\n")
    policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
    env = {**clean_env(), "CONTAINERS_REGISTRIES_CONF": str(conf)}
    argv = [find_binary("skopeo") or "skopeo", "--policy", str(policy), "--tmpdir", str(home)]
    argv += ["copy", "--quiet", "--src-tls-verify=false", "--src-no-creds", source, dest]
    started = time.perf_counter()
    done = hermetic.run(argv, hosts, env=env, timeout=TIMEOUT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise PullError(f"skopeo copy {source} {dest}: {done.stderr.strip()[-400:]}")
    return seconds


class Containerd:
    """A containerd daemon of its own (state, root and sockets under ``directory``),
    under a private /etc/hosts; ``ctr`` runs under the same one (in containerd 1.6 the
    ``ctr`` process itself resolves and fetches)."""

    def __init__(self, directory: Path, hosts: Path) -> None:
        self.dir = directory
        self.hosts = hosts
        self.address = directory / "containerd.sock"  # well under the 108-byte socket limit
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Containerd:
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "config.toml"
        config.write_text(
            "\n".join(
                [
                    "version = 2",
                    f'root = "{self.dir}/root"',
                    f'state = "{self.dir}/state"',
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
                    "[grpc]",
                    f'  address = "{self.address}"',
                    "[ttrpc]",
                    f'  address = "{self.address}.ttrpc"',
                    "[debug]",
                    f'  address = "{self.dir}/debug.sock"',
                    "",
                ]
            )
        )
        daemon = [find_binary("containerd") or "containerd", "--config", str(config)]
        argv = hermetic.command(daemon, self.hosts)
        self._proc = spawn(argv, log=self.dir / "containerd.log")
        deadline = time.monotonic() + 30
        while not _accepts(self.address):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "containerd.log").read_text(errors="replace")[-1500:]
                self.__exit__()
                raise PullError(f"containerd did not start:\n{log}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            terminate(self._proc, grace=10.0)
            self._proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def _hosts_dir(self, host: str) -> Path:
        hosts_dir = self.dir / "hosts.d"
        (hosts_dir / host).mkdir(parents=True, exist_ok=True)
        (hosts_dir / host / "hosts.toml").write_text(
            f'server = "http://{host}"\n\n'
            f'[host."http://{host}"]\n  capabilities = ["pull", "resolve"]\n'
        )
        return hosts_dir

    def ctr(self, *args: str) -> float:
        # --debug drops ctr's progress display, and with it a wait: a fetch returns only
        # on the display's next 100 ms tick after its last blob (containerd 1.6,
        # cmd/ctr/commands/content/fetch.go), so two servers ending in the same tick
        # timed alike to the millisecond (1.613 s and 1.613 s, bench-s26).
        ctr = find_binary("ctr") or "ctr"
        argv = [ctr, "--debug", "--address", str(self.address), "-n", "bench", *args]
        started = time.perf_counter()
        done = hermetic.run(argv, self.hosts, timeout=TIMEOUT)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise PullError(f"ctr {' '.join(args)}: {done.stderr.strip()[-400:]}")
        return seconds

    def fetch(self, ref: str, host: str) -> float:
        hosts_dir = str(self._hosts_dir(host))
        return self.ctr("content", "fetch", "--plain-http", "--hosts-dir", hosts_dir, ref)

    def pull(self, ref: str, host: str) -> float:
        hosts_dir = str(self._hosts_dir(host))
        args = ["images", "pull", "--plain-http", "--hosts-dir", hosts_dir]
        return self.ctr(*args, "--snapshotter", "native", ref)


def _accepts(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, contextlib.suppress(OSError):
        sock.settimeout(0.5)
        sock.connect(str(path))
        return True
    return False
