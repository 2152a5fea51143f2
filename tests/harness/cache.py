"""Run the cache under test (``python -m registry_cache serve``) as a subprocess.

Contract:
- ``CacheServer(workdir, args).start()`` runs ``[sys.executable, "-m", "registry_cache",
  "serve", "--listen", "127.0.0.1:PORT", "--data-dir", workdir/"data", "--log-level",
  "debug", *args]`` with ``cwd`` = ``workdir/cwd`` (an empty dir, so no stray ``.env``
  or ``./data`` is used), ``PYTHONPATH`` = the repo's ``src``, and an environment
  without REGISTRY_*, DOCKERHUB_*, GHCR_*, QUAY_* or proxy variables.
- ``start`` returns once ``GET /healthz`` answers 200 (default 20 s; open even when
  clients must log in); if the process exits or the time runs out it raises
  ``CacheStartError`` carrying the log.
- stdout+stderr go to ``workdir/cache.log`` (appended across restarts): ``log_text``.
- ``stop()`` SIGTERMs and SIGKILLs after ``grace`` s; ``kill9()`` SIGKILLs at once;
  ``restart()`` starts again with the same port, data dir and args.
- ``send_signal(sig)`` signals the main process only (as ``kill <pid>`` would);
  ``wait(timeout)`` returns its exit code once it exited (None on timeout), then
  SIGKILLs anything left in its process group (a worker that outlived its parent),
  noting that in ``left_behind``.
- ``blob_path(digest)`` is where the cache stores a blob; ``wait_for_blob(digest, s)``
  polls up to ``s`` seconds for it to appear and returns that path.
- ``run_cli(*args, cwd=..., timeout=...)`` runs ``python -m registry_cache *args`` to
  completion in ``cli_env()`` (the cache's environment, without PYTHONUNBUFFERED).
- ``safe_upstream_args(args)`` adds ``--upstream NAME=none`` for each of docker.io,
  ghcr.io and quay.io the args do not configure (plus ``--default-upstream none``
  when docker.io was removed that way), so no default points at the internet.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from . import proc as procs
from .ports import free_port, http_status
from .service import LoopbackService

REPO_ROOT = Path(__file__).resolve().parents[2]
SRC_DIR = REPO_ROOT / "src"
DROP_ENV_PREFIXES = ("REGISTRY_", "DOCKERHUB_", "GHCR_", "QUAY_", "PYTHONPATH")
PUBLIC_UPSTREAMS = ("docker.io", "ghcr.io", "quay.io")


def cli_env() -> dict[str, str]:
    """This environment without registry settings or proxies, importing the repo's ``src``."""
    env = procs.clean_env(drop_prefixes=DROP_ENV_PREFIXES)
    env["PYTHONPATH"] = str(SRC_DIR)
    return env


def run_cli(
    *args: str, cwd: Path, timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m registry_cache *args`` to completion (env: ``cli_env()`` unless given),
    output captured as text; the caller checks the exit status."""
    return subprocess.run(
        [sys.executable, "-m", "registry_cache", *args],
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else cli_env(),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


class CacheStartError(RuntimeError):
    """The cache did not come up; the message ends with its log."""


def safe_upstream_args(args: Sequence[str]) -> list[str]:
    """``args`` plus ``--upstream NAME=none`` for every public default left unset."""
    out = list(args)
    configured: set[str] = set()
    has_default = False
    for i, arg in enumerate(out):
        value: str | None = None
        if arg == "--upstream" and i + 1 < len(out):
            value = out[i + 1]
        elif arg.startswith("--upstream="):
            value = arg.split("=", 1)[1]
        if value is not None:
            configured.add(value.split("=", 1)[0])
        if arg == "--default-upstream" or arg.startswith("--default-upstream="):
            has_default = True
    for name in PUBLIC_UPSTREAMS:
        if name not in configured:
            out += ["--upstream", f"{name}=none"]
    if "docker.io" not in configured and not has_default:
        out += ["--default-upstream", "none"]
    return out


class CacheServer(LoopbackService):
    """The cache as a subprocess on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        workdir: Path,
        args: Sequence[str] = (),
        *,
        port: int | None = None,
        command: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
        startup_timeout: float = 20.0,
        ca_file: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.ca_file = ca_file  # set: the cache serves TLS (its args carry --tls-cert/-key)
        self.args = list(args)
        self.port = port or free_port()
        self.data_dir = workdir / "data"
        self.cwd = workdir / "cwd"
        self.command = (
            list(command) if command is not None else [sys.executable, "-m", "registry_cache"]
        )
        self.extra_env = dict(env or {})
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = False
        self.left_behind = False

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, or ``https://`` when started with a ``ca_file``."""
        return f"{'https' if self.ca_file else 'http'}://{self.host_port}"

    @property
    def log_path(self) -> Path:
        """stdout and stderr of every run (appended)."""
        return self.workdir / "cache.log"

    @property
    def argv(self) -> list[str]:
        return [
            *self.command,
            "serve",
            "--listen",
            self.host_port,
            "--data-dir",
            str(self.data_dir),
            "--log-level",
            "debug",
            *self.args,
        ]

    def env(self) -> dict[str, str]:
        env = cli_env()
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    def start(self) -> Self:
        """Start and wait for ``GET /healthz`` → 200; raise ``CacheStartError`` otherwise.

        On the first start only, a lost race for the port ("address already in use")
        is retried on a new port; a restart keeps its port.
        """
        if self.running:
            raise RuntimeError("cache already running")
        for attempt in range(3):
            try:
                return self._start_once()
            except CacheStartError as exc:
                if self._started or attempt == 2 or "already in use" not in str(exc):
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def _start_once(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.cwd.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"=== harness: starting {' '.join(self.argv)}\n".encode())
        self._proc = procs.spawn(self.argv, stdout=self.log_path, cwd=self.cwd, env=self.env())
        deadline = time.monotonic() + self.startup_timeout
        last: int | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise CacheStartError(
                    f"cache exited with {code} during start-up\n{self.log_text()}"
                )
            last = http_status(f"{self.url}/healthz", timeout=2.0, ca_file=self.ca_file)
            if last == 200:
                self._started = True
                return self
            time.sleep(0.05)
        self.stop()
        raise CacheStartError(
            f"cache gave no 200 on /healthz within {self.startup_timeout}s (last: {last})\n"
            f"{self.log_text()}"
        )

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, SIGKILL after ``grace`` s; return the exit code (None if not running)."""
        if self._proc is None:
            return None
        code = procs.terminate(self._proc, grace=grace)
        self._proc = None
        return code

    def kill9(self) -> int | None:
        """SIGKILL now (a crash); return the exit code (None if not running)."""
        if self._proc is None:
            return None
        code = procs.kill9(self._proc)
        self._proc = None
        return code

    def send_signal(self, sig: int) -> None:
        """Signal the main process only (a prefork parent forwards it to its workers)."""
        if self._proc is None:
            raise RuntimeError("cache not running")
        self._proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        """The exit code once the process ended within ``timeout`` s, else None."""
        if self._proc is None:
            return None
        try:
            code = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        pgid, self._proc = self._proc.pid, None
        try:  # the group outlives its leader only while a member still runs
            os.killpg(pgid, signal.SIGKILL)
            self.left_behind = True
        except (ProcessLookupError, PermissionError):
            self.left_behind = False
        return code

    def blob_path(self, digest: str) -> Path:
        """Where the cache keeps ``digest``'s bytes: ``DATA/blobs/sha256/<hex[:2]>/<hex>``."""
        hex_ = digest.split(":", 1)[1]
        return self.data_dir / "blobs" / "sha256" / hex_[:2] / hex_

    def wait_for_blob(self, digest: str, wait: float) -> Path:
        """``blob_path(digest)`` once it exists, polling for up to ``wait`` s: a client gets
        the last byte (released once the digest verified) a moment before the fill's fsync
        and rename publish the file."""
        path = self.blob_path(digest)
        deadline = time.monotonic() + wait
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return path

    def restart(self) -> Self:
        """Stop (gracefully) and start again with the same port, data dir and args."""
        self.stop()
        return self.start()
